"""A Server latency objective and the search for the highest load that meets it.

An SLO is a percentile and a bound (`p99:15ms`, MLPerf's Server rule for ResNet50). A run
meets it when LoadGen calls it VALID with `server_target_latency_percentile` and
`server_target_latency_ns` set from the SLO (LoadGen also requires its minimum duration,
query count and early-stopping criterion).

`search_max_qps` knows nothing of LoadGen: it calls a `trial(target_qps, duration_ms,
phase)` and reads the attempt's verdict. It brackets the answer with short runs (growing or
halving the load from a start), bisects the bracket to a tolerance, then confirms the
highest valid load with a full-length run, stepping down and confirming again while a
confirmation fails. Every attempt is kept.

Only a latency failure is fixed by a lower load. An attempt that failed another of
LoadGen's rules (early stopping or the minimum query count with latency within the bound:
a lower load only gives fewer queries in the same time) ends the stepping down, and the
result says which rule failed.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from plumbing.errors import ConfigError

# The one SLO grammar of every command: pPERCENTILE:BOUND, the bound in us, ms (the default) or s.
_SLO = re.compile(r"^p(?P<pct>\d+(?:\.\d+)?):(?P<value>\d+(?:\.\d+)?)(?P<unit>us|ms|s)?$")
_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass(frozen=True)
class Slo:
    """A latency objective: the `percentile` of query latency at most `latency_ms`. The one
    type the sweep's SLO search, the capacity plan and the reports share."""

    percentile: float  # 99.0 for p99
    latency_ms: float

    def __post_init__(self) -> None:
        if not 0 < self.percentile < 100:
            raise ConfigError(f"SLO percentile must be between 0 and 100, got {self.percentile}")
        if not self.latency_ms > 0:
            raise ConfigError(f"SLO latency bound must be positive, got {self.latency_ms} ms")

    @property
    def key(self) -> str:
        """The run's latency_ms key for this percentile: 'p99'."""
        return f"p{self.percentile:g}"

    @property
    def label(self) -> str:
        return f"{self.key} <= {self.latency_ms:g} ms"

    @property
    def constraint_name(self) -> str:
        return f"{self.key}_latency_ms"

    def constraints(self) -> dict[str, dict[str, float]]:
        """As a constraint for reports.constraints.check: {"p99_latency_ms": {"max": 15.0}}."""
        return {self.constraint_name: {"max": self.latency_ms}}

    def matches(self, percentile: float, latency_ms: float) -> bool:
        return math.isclose(percentile, self.percentile) and math.isclose(latency_ms, self.latency_ms, rel_tol=1e-9)

    def user_conf(self) -> str:
        """The Server lines of a user.conf that make LoadGen judge runs by this SLO."""
        return (f"# Server latency objective of this study: {self.label}\n"
                f"*.Server.target_latency = {self.latency_ms:g}\n"
                f"*.Server.target_latency_percentile = {self.percentile:g}\n")


MLPERF_SLO = Slo(99.0, 15.0)


def parse_slo(text: str) -> Slo:
    """'p99:15ms', 'p90:5ms', 'p99.9:20ms', 'p95:800us', 'p99:0.02s', 'p99:15' (ms). Raises ConfigError."""
    match = _SLO.match(text.strip().lower().replace(" ", ""))
    if not match:
        raise ConfigError(f"cannot read SLO {text!r}: write PERCENTILE:BOUND, e.g. p99:15ms or p90:5ms")
    return Slo(float(match["pct"]), float(match["value"]) * _UNIT_MS[match["unit"] or "ms"])


@dataclass
class Attempt:
    """One Server run made by the search."""

    target_qps: float
    duration_ms: int
    phase: str  # "search" (short run) or "confirm" (full length)
    valid: bool
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50, p90, p99
    achieved_qps: float | None = None
    measurements: str | None = None  # measurements.json, relative to the study folder
    invalid_reasons: list[str] = field(default_factory=list)
    # The LoadGen rule an invalid attempt failed (one of RULES); None where valid or unknown.
    failed_rule: str | None = None

    def why(self) -> str:
        """One line: the load, the latency and the rule it failed."""
        p99 = self.latency_ms.get("p99")
        line = f"at {self.target_qps:,.1f} QPS" + (f" p99 was {p99:.1f} ms" if p99 is not None else "")
        if self.failed_rule is None:
            return line
        # LoadGen's own words on the count: "Processed 64 queries. Would need to run at least 395 more ..."
        detail = " ".join(r.split(",")[0].rstrip(".") + "." for r in self.invalid_reasons if "queries" in r)
        if self.failed_rule == LATENCY or not detail:
            return f"{line} and the run failed LoadGen's {self.failed_rule} rule"
        return f"{line} and the run failed LoadGen's {self.failed_rule} rule ({detail.rstrip('.')})"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Attempt":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


Trial = Callable[[float, int, str], Attempt]
LATENCY = "latency bound"
RULES = (LATENCY, "early stopping", "min queries", "min duration")


def failed_rule(perf_constraints: bool | None, early_stopping: bool | None, min_queries: bool | None,
                min_duration: bool | None, clean_count_met: bool | None = None) -> str | None:
    """Which of LoadGen's rules an invalid Server run failed, from its summary's lines
    ("Performance constraints satisfied" and the others); the latency bound first, since
    over-latency queries also make early stopping fail. `clean_count_met`: the run had
    the queries early stopping needs with none over the bound, so where early stopping
    still failed, over-latency queries failed it (a lower load can fix that; a count
    short of it, never). None where none says NO."""
    if early_stopping is False and perf_constraints is not False and clean_count_met:
        return LATENCY
    for rule, satisfied in zip(RULES, (perf_constraints, early_stopping, min_queries, min_duration)):
        if satisfied is False:
            return rule
    return None


@dataclass(frozen=True)
class SearchSettings:
    start_qps: float
    search_ms: int
    confirm_ms: int
    tolerance: float = 0.03  # stop bisecting when (hi - lo) / hi is this small
    growth: float = 1.5
    max_expansions: int = 8
    max_bisections: int = 8
    step_down: float = 0.05  # after a failed confirmation, try 5% less
    max_step_downs: int = 4
    floor_qps: float = 1.0

    def __post_init__(self) -> None:
        if not self.start_qps > 0:
            raise ConfigError(f"the search needs a positive start load, got {self.start_qps}")
        if not (0 < self.tolerance < 1 and self.growth > 1 and 0 < self.step_down < 1):
            raise ConfigError("search tolerance and step-down must lie in (0, 1), growth above 1")


@dataclass
class SearchResult:
    max_qps: float | None  # highest load found valid; None if none was
    confirmed: bool  # a full-length run at max_qps was VALID
    attempts: list[Attempt]
    bracketed: bool  # an invalid load above max_qps was seen (else the search hit its limit)
    # Why the search stopped stepping down: the last attempt failed a rule other than the
    # latency bound, which a lower load cannot fix. None where it ran its course.
    stopped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"max_qps": self.max_qps, "confirmed": self.confirmed, "bracketed": self.bracketed,
                "stopped": self.stopped, "attempts": [a.to_json() for a in self.attempts]}


def _not_fixed_by_less_load(attempt: Attempt) -> str | None:
    if attempt.valid or attempt.failed_rule in (None, LATENCY):
        return None
    return f"{attempt.why()}: a lower load would only run fewer queries in the same time, so the search stopped"


def search_max_qps(trial: Trial, settings: SearchSettings) -> SearchResult:
    attempts: list[Attempt] = []

    def ok(qps: float, duration_ms: int, phase: str) -> bool:
        attempt = trial(qps, duration_ms, phase)
        attempts.append(attempt)
        return attempt.valid

    def stop() -> str | None:
        return _not_fixed_by_less_load(attempts[-1])

    s = settings
    lo: float | None = None
    hi: float | None = None
    if ok(s.start_qps, s.search_ms, "search"):
        lo = s.start_qps
        for _ in range(s.max_expansions):
            if ok(lo * s.growth, s.search_ms, "search"):
                lo *= s.growth
            else:
                hi = lo * s.growth
                break
    else:
        hi = s.start_qps
        while (stopped := stop()) is None and hi / 2 >= s.floor_qps:
            if ok(hi / 2, s.search_ms, "search"):
                lo = hi / 2
                break
            hi /= 2
        if lo is None:
            if stopped is None:
                stopped = f"{attempts[-1].why()}; the load reached the search's floor of {s.floor_qps:g} QPS"
            return SearchResult(None, False, attempts, bracketed=True, stopped=stopped)
    for _ in range(s.max_bisections):
        if hi is None or (hi - lo) / hi <= s.tolerance:
            break
        mid = (lo + hi) / 2
        if ok(mid, s.search_ms, "search"):
            lo = mid
        else:
            hi = mid
    candidate = lo
    for _ in range(s.max_step_downs + 1):
        if ok(candidate, s.confirm_ms, "confirm"):
            return SearchResult(candidate, True, attempts, bracketed=hi is not None)
        if (stopped := stop()) is not None:
            return SearchResult(candidate, False, attempts, bracketed=hi is not None, stopped=stopped)
        candidate *= 1 - s.step_down
    return SearchResult(candidate / (1 - s.step_down), False, attempts, bracketed=hi is not None)
