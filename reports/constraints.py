"""Metrics as data with a direction, the SLOs a plan checks, and the one pure constraint check.

A constraint is plain data, {"p99_latency_ms": {"max": 15.0}}, checked against measured
values by `check`, which returns pass/fail and the margin (the smallest relative slack,
negative when violated), so callers never re-implement the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from plumbing.errors import ConfigError
from studies.slo import Slo
from studies.slo import parse_slo as read_slo

# Latency percentiles each study run records (run["latency_ms"] keys).
RECORDED_PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0}


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    higher_is_better: bool

    def sort_key(self, value: float | None) -> tuple[int, float]:
        """Best first; an absent value ranks after every present one."""
        if value is None:
            return (1, 0.0)
        return (0, -value if self.higher_is_better else value)


def parse_slo(text: str) -> Slo:
    """An SLO a plan can check: the one grammar (studies.slo.parse_slo), at a percentile
    that studies record. 'p99:15ms' -> Slo(99.0, 15.0)."""
    try:
        slo = read_slo(text)
    except ConfigError:
        raise ConfigError(f"unknown SLO {text!r}: write it as pXX:LATENCY, e.g. p99:15ms") from None
    if slo.key not in RECORDED_PERCENTILES:
        raise ConfigError(f"unknown SLO {text!r}: studies record {', '.join(RECORDED_PERCENTILES)} latency only")
    return slo


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    margin: float  # smallest relative slack over all constraints; < 0 when one is violated
    missing: tuple[str, ...] = ()  # constraints with no measured value (never a pass)


def check(constraints: Mapping[str, Mapping[str, float]], measured: Mapping[str, float | None]) -> CheckResult:
    """Pure: every constraint {"max": x} / {"min": x} against measured values."""
    margins: list[float] = []
    missing: list[str] = []
    for name, bounds in constraints.items():
        value = measured.get(name)
        if value is None:
            missing.append(name)
            continue
        for kind, bound in bounds.items():
            if kind == "max":
                margins.append((bound - value) / abs(bound) if bound else -value)
            elif kind == "min":
                margins.append((value - bound) / abs(bound) if bound else value)
            else:
                raise ValueError(f"unknown bound {kind!r} in constraint {name!r}")
    margin = min(margins) if margins else 0.0
    return CheckResult(passed=not missing and margin >= 0, margin=margin, missing=tuple(missing))
