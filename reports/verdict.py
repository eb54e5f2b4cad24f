"""The report's summary: the question the studies can answer, the options ranked by its
metric, the answer with its margin of error, and what the figures rest on.

The question is about one model at the SLO its studies searched at: which system, precision
and backend serve the most queries per second per device there (the SLO search maximum). With
no search, it asks for the highest Offline throughput per device instead.

A winner is named only when the margin is outside what the data can tell apart:
* SLO search maxima carry no run-to-run spread, but each search brackets its answer: the
  load it met and the lowest load it missed above that. The best option wins clearly when
  the load it met is above the lowest load the runner-up missed.
* Offline figures carry a standard deviation over runs: the best wins clearly when the ratio
  to the runner-up, less twice the ratio's spread, is still above 1. One run has no spread,
  so no margin can be judged.
Otherwise the answer is "no clear winner".
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from plumbing.errors import ConfigError
from reports.studies import PlanInfo, SloSearch, Stat, Study

MLPERF_SLO = (99.0, 15.0)
SUBMISSION_MIN_S = 600  # MLPerf's minimum run duration for a submission


@dataclass(frozen=True)
class Question:
    model: str
    slo: tuple[float, float] | None  # (percentile, bound ms); None: an Offline throughput question
    text: str

    @property
    def slo_label(self) -> str:
        return "" if self.slo is None else f"p{self.slo[0]:g} <= {self.slo[1]:g} ms"

    @property
    def metric(self) -> str:
        return (f"queries/s per device at {self.slo_label} (SLO search maximum)" if self.slo
                else "Offline samples/s per device (best batch size with every run VALID)")


@dataclass(frozen=True)
class Option:
    system: str
    precision: str
    backend: str
    unit: str  # "GPU" or "host"
    value: float | None  # per device
    spread: Stat | None = None  # Offline: per-device mean, std and n
    upper: float | None = None  # search: the lowest missed load above `value`, per device
    basis: str = ""
    excluded: str | None = None  # why it cannot be the answer

    @property
    def label(self) -> str:
        return f"{self.system} {self.precision} ({self.backend})"

    def figure(self) -> str:
        if self.value is None:
            return "n/a"
        if self.spread is not None:
            sd = "" if self.spread.n < 2 else f" ± {self.spread.std:,.0f}"
            return f"{self.value:,.0f}{sd} samples/s per {self.unit} (n={self.spread.n})"
        return f"{self.value:,.0f} queries/s per {self.unit}"


@dataclass(frozen=True)
class Verdict:
    answer: str
    highlights: list[str]  # the figures that carry it: the best, the runner-up, the margin
    clear: bool


def ask(studies: list[Study], model: str | None, text: str | None, preferred_model: str) -> Question:
    models = sorted({p.model for s in studies for p in s.points})
    if not models:
        raise ConfigError("the studies hold no measured point, so the report has nothing to answer")
    if model is not None and model not in models:
        raise ConfigError(f"no study measured {model!r}; they hold {', '.join(models)}")
    model = model or (preferred_model if preferred_model in models else models[0])
    slos = Counter((s.percentile, s.latency_ms) for st in studies for s in st.slo_searches if s.model == model)
    slo = None
    if slos:
        top = max(slos.values())
        common = sorted(k for k, n in slos.items() if n == top)
        slo = MLPERF_SLO if MLPERF_SLO in common else common[0]
    if text is None:
        text = (f"Which system and precision serve the most {model} queries per second per device at "
                f"p{slo[0]:g} <= {slo[1]:g} ms?" if slo else
                f"Which system and precision give the highest {model} Offline throughput per device?")
    return Question(model, slo, text)


def options(question: Question, studies: list[Study]) -> list[Option]:
    """Every option for the question's model, best first; excluded ones after the rest."""
    found = [o for study in studies for o in (_search_options(question, study) if question.slo
                                               else _offline_options(question.model, study))]
    return sorted(found, key=lambda o: (o.excluded is not None, -(o.value or -math.inf), o.label))


def _search_options(question: Question, study: Study) -> list[Option]:
    d, unit = study.system.devices, study.system.unit
    out, searched = [], set()
    for s in study.slo_searches:
        if s.model != question.model or (s.percentile, s.latency_ms) != question.slo:
            continue
        searched.add((s.precision, s.backend))
        upper = _lowest_miss(s)
        excluded = ("no load met the SLO" if s.max_qps is None
                    else None if s.confirmed else "its maximum failed the full-length confirmation run")
        out.append(Option(study.name, s.precision, s.backend, unit, None if s.max_qps is None else s.max_qps / d,
                          upper=None if upper is None else upper / d, basis=_search_basis(s, upper, d),
                          excluded=excluded))
    for precision, backend in sorted({(p.precision, p.backend) for p in study.points if p.model == question.model}):
        if (precision, backend) not in searched:
            out.append(Option(study.name, precision, backend, unit, None,
                              excluded=f"not searched at {question.slo_label}"))
    return out


def _lowest_miss(search: SloSearch) -> float | None:
    if search.max_qps is None:
        return None
    misses = [a.target_qps for a in search.attempts if not a.valid and a.target_qps > search.max_qps]
    return min(misses) if misses else None


def _search_basis(s: SloSearch, upper: float | None, devices: int) -> str:
    if s.max_qps is None:
        return f"SLO search: no load met it ({len(s.attempts)} attempt{'s' if len(s.attempts) != 1 else ''})"
    met = [a for a in s.attempts if a.valid and math.isclose(a.target_qps, s.max_qps)]
    longest = max((a.duration_ms or 0 for a in met), default=0)
    run = f", confirmed by a {longest / 1000:g} s run" if s.confirmed and longest else ""
    missed = (f"missed at {upper / devices:,.0f}" if upper is not None
              else "no missed load above it (the search hit its limit; the maximum may be higher)")
    return f"SLO search: met at {s.max_qps / devices:,.0f}{run}; {missed}"


def _offline_options(model: str, study: Study) -> list[Option]:
    d, unit = study.system.devices, study.system.unit
    out = []
    for curve in (c for c in study.curves if c.model == model):
        points = [p for p in study.select("Offline", model, curve.precision, curve.backend) if p.batch_size]
        valid = [p for p in points if p.valid_runs == len(p.runs)]
        pool = valid or points
        if not pool:
            continue
        best = max(pool, key=lambda p: p.stats.samples_per_s.mean)
        s = best.stats.samples_per_s
        out.append(Option(study.name, curve.precision, curve.backend, unit, s.mean / d,
                          spread=Stat(s.mean / d, s.std / d, s.n),
                          basis=f"Offline bs{best.batch_size}, {best.valid_runs} of {len(best.runs)} runs valid",
                          excluded=None if valid else "no Offline point with every run VALID"))
    return out


def decide(question: Question, ranked: list[Option]) -> Verdict:
    candidates = [o for o in ranked if o.excluded is None]
    if not candidates:
        why = "; ".join(sorted({f"{o.label}: {o.excluded}" for o in ranked})) or "no option was measured"
        return Verdict(f"No option answers it ({why}).", [], False)
    best = candidates[0]
    if len(candidates) == 1:
        return Verdict(f"{best.label}: {best.figure()}{_error(best)}, the only option that answers it, so "
                       "there is no margin over another to give.", [_line(best)], False)
    second = candidates[1]
    value, error, clear, why = (_search_margin if question.slo else _offline_margin)(best, second)
    unmeasured = "; a search gives one maximum, its run-to-run spread is not measured" if question.slo else ""
    lines = [_line(best), _line(second), f"Margin: {value} ({error}{unmeasured})."]
    if clear:
        answer = (f"{best.label}: {best.figure()}{_error(best)}, {value} the runner-up {second.label} "
                  f"at {second.figure()} ({error}).")
    else:
        answer = (f"No clear winner: {best.label} ({best.figure()}) leads {second.label} ({second.figure()}) "
                  f"by {value} ({error}), within what the data can tell apart: {why}.")
    return Verdict(answer, lines, clear)


def _error(o: Option) -> str:
    """The figure's own margin of error where the figure text does not carry it."""
    if o.spread is not None or o.value is None:
        return ""
    if o.upper is None:
        return " (its search met it and missed no load above it: the maximum may be higher)"
    return f" (its search met {o.value:,.0f} and missed {o.upper:,.0f}: the maximum lies between)"


def _line(o: Option) -> str:
    return f"{o.label}: {o.figure()}; {o.basis}"


def _search_margin(best: Option, second: Option) -> tuple[str, str, bool, str]:
    value = f"{best.value / second.value:.2f}x"
    if second.upper is None:
        return value, "the runner-up's search missed no load above its maximum", False, \
            "the runner-up's maximum may be higher"
    low = best.value / second.upper
    high = "or more" if best.upper is None else f"to {best.upper / second.value:.2f}x"
    error = f"{low:.2f}x {high} from the two searches' brackets"
    return value, error, best.value > second.upper, \
        "the load the best met is not above the lowest load the runner-up missed"


def _offline_margin(best: Option, second: Option) -> tuple[str, str, bool, str]:
    a, b = best.spread, second.spread
    value = a.mean / b.mean
    if a.n < 2 or b.n < 2:
        return f"{value:.2f}x", "n=1: no spread", False, "a figure from one run has no spread to judge the margin by"
    spread = value * math.hypot(a.std / a.mean, b.std / b.mean)
    return f"{value:.2f}x ± {spread:.2f}", "the ratio ± its standard deviation", value - 2 * spread > 1, \
        "the ratio is within two standard deviations of 1"


# ---- what the figures rest on -------------------------------------------------------------
def basis_text(plan: PlanInfo | None) -> str:
    if plan is None:
        return "run lengths, weights and profile not recorded (study.json has no plan)"
    parts = [f"{plan.repeats} runs of {plan.duration_ms / 1000:g} s per point"]
    if "Server" in plan.scenarios:
        parts.append(f"SLO search runs of {plan.search_ms / 1000:g} s, confirmed by a {plan.confirm_ms / 1000:g} s run")
    parts.append("accuracy gate skipped" if plan.skip_accuracy_gate else "accuracy gate on")
    parts.append(weights_text(plan.weights))
    parts.append(f"{plan.run_profile} run profile")
    return ", ".join(parts)


def weights_text(weights: str) -> str:
    return {"seeded": "seeded random weights (not trained)", "torchvision": "trained torchvision weights"}.get(
        weights, f"weights from {weights}")


def submission_grade(studies: list[Study]) -> bool:
    return all(s.plan is not None and s.plan.run_profile == "submission" and not s.plan.skip_accuracy_gate
               and s.plan.duration_ms >= SUBMISSION_MIN_S * 1000 for s in studies)
