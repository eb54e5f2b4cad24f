"""What a capacity rests on: every recorded run at one Server load and whether it met the
SLO, and the study's run lengths, weights, run profile and accuracy gate.

A search's maximum is confirmed only when the runs at that load, its confirmation runs and
the ladder's repeats there, meet the SLO: every one of them, or a stated fraction (the count
is always shown). The search's own short runs are not repeats: each is one run of a
bisection, shorter than the measured points, and is left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from reports.constraints import check
from studies.slo import Slo
from reports.studies import PlanInfo, SloSearch, Study
from reports.verdict import basis_text, weights_text

# Loads are target QPS; the ladder's top rung is the search's maximum times 1.0.
_SAME_LOAD = 1e-6
KIND_ORDER = ("confirmation", "ladder repeat", "point repeat", "attempt")


def meets_slo(valid: bool, latency_ms: dict[str, float | None], slo: Slo) -> bool:
    """LoadGen called the run VALID and its latency at the SLO's percentile is within it."""
    return valid and check(slo.constraints(), {slo.constraint_name: latency_ms.get(slo.key)}).passed


@dataclass(frozen=True)
class RunAtLoad:
    # "confirmation", "ladder repeat", "point repeat" (a Server point outside a search's ladder)
    # or "attempt" (a search run whose phase the study did not record)
    kind: str
    duration_ms: float | None  # the run's minimum duration; None where the study does not say
    passed: bool


@dataclass(frozen=True)
class LoadEvidence:
    """Every run recorded at one target load (whole system, samples/s)."""

    load: float
    runs: tuple[RunAtLoad, ...]

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.runs)

    @property
    def total(self) -> int:
        return len(self.runs)

    def meets(self, pass_fraction: float) -> bool:
        return self.total > 0 and self.passed >= pass_fraction * self.total - 1e-9

    def count(self) -> str:
        return f"{self.passed} of {self.total}"

    def breakdown(self) -> str:
        """'confirmation 1 of 1 at 3 s; ladder repeat 1 of 3 at 1 s'."""
        parts = []
        for kind in KIND_ORDER:
            runs = [r for r in self.runs if r.kind == kind]
            if runs:
                lengths = sorted({seconds(r.duration_ms) for r in runs})
                parts.append(f"{kind} {sum(r.passed for r in runs)} of {len(runs)} at {', '.join(lengths)}")
        return "; ".join(parts)

    def summary(self) -> str:
        return f"{self.count()} runs at {self.load:,.0f} QPS ({self.breakdown()})"


def seconds(duration_ms: float | None) -> str:
    return "a length not recorded" if duration_ms is None else f"{duration_ms / 1000:g} s"


def _point_runs(study: Study, point_id: str, slo: Slo, kind: str) -> tuple[RunAtLoad, ...]:
    duration = study.plan.duration_ms if study.plan else None
    return tuple(RunAtLoad(kind, duration, meets_slo(r.valid, r.latency_ms, slo)) for r in study.point(point_id).runs)


def point_evidence(study: Study, point_id: str, slo: Slo) -> LoadEvidence:
    point = study.point(point_id)
    return LoadEvidence(point.target_qps or 0.0, _point_runs(study, point_id, slo, "point repeat"))


def loads_of(study: Study, search: SloSearch, slo: Slo) -> list[LoadEvidence]:
    """The search's confirmation runs and its ladder's repeats, grouped by load, highest first."""
    found: list[tuple[float, RunAtLoad]] = []
    for attempt in search.attempts:
        if attempt.phase == "search":
            continue
        kind = "confirmation" if attempt.phase == "confirm" else "attempt"
        found.append((attempt.target_qps, RunAtLoad(kind, attempt.duration_ms,
                                                    meets_slo(attempt.valid, attempt.latency_ms, slo))))
    for point_id in search.ladder:
        target = study.point(point_id).target_qps
        if target is not None:
            found += [(target, run) for run in _point_runs(study, point_id, slo, "ladder repeat")]
    groups: list[LoadEvidence] = []
    for load, run in sorted(found, key=lambda item: -item[0]):
        if groups and math.isclose(groups[-1].load, load, rel_tol=_SAME_LOAD):
            groups[-1] = LoadEvidence(groups[-1].load, groups[-1].runs + (run,))
        else:
            groups.append(LoadEvidence(load, (run,)))
    return groups


def at_load(loads: list[LoadEvidence], load: float) -> LoadEvidence | None:
    return next((e for e in loads if math.isclose(e.load, load, rel_tol=_SAME_LOAD)), None)


@dataclass(frozen=True)
class Provenance:
    """A study's plan by column (run lengths in seconds, repeats, weights, profile, gate) and
    in the words the comparison report uses (`summary`)."""

    point_s: float | None
    search_s: float | None
    confirm_s: float | None
    repeats: int | None
    weights: str
    run_profile: str
    accuracy_gate: str
    summary: str


def provenance(plan: PlanInfo | None, precision: str) -> Provenance:
    if plan is None:
        unknown = "not recorded (study.json has no plan)"
        return Provenance(None, None, None, None, unknown, unknown, unknown, basis_text(plan))
    if precision == "fp32":
        gate = "not applicable (fp32 is the reference)"
    else:
        gate = "skipped (--skip-accuracy-gate)" if plan.skip_accuracy_gate else "run against fp32"
    return Provenance(plan.duration_ms / 1000, plan.search_ms / 1000, plan.confirm_ms / 1000, plan.repeats,
                      weights_text(plan.weights), plan.run_profile, gate, basis_text(plan))
