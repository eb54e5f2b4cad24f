"""Metrics as data with a direction, latency SLOs, and the one pure constraint check.

A constraint is plain data, {"p99_latency_ms": {"max": 15.0}}, checked against measured
values by `check`, which returns pass/fail and the margin (the smallest relative slack,
negative when violated), so callers never re-implement the comparison.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping

from plumbing.errors import ConfigError

# Latency percentiles each study run records (run["latency_ms"] keys).
RECORDED_PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0}
_SLO = re.compile(r"^p(\d+(?:\.\d+)?):(\d+(?:\.\d+)?)(ms)?$", re.IGNORECASE)


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


@dataclass(frozen=True)
class Slo:
    percentile: float  # 99.0
    latency_ms: float

    @property
    def key(self) -> str:
        """The run's latency_ms key for this percentile: 'p99'."""
        return f"p{self.percentile:g}"

    @property
    def constraint_name(self) -> str:
        return f"{self.key}_latency_ms"

    def constraints(self) -> dict[str, dict[str, float]]:
        return {self.constraint_name: {"max": self.latency_ms}}

    def label(self) -> str:
        return f"{self.key} <= {self.latency_ms:g} ms"

    def matches(self, percentile: float, latency_ms: float) -> bool:
        return math.isclose(percentile, self.percentile) and math.isclose(latency_ms, self.latency_ms, rel_tol=1e-9)


def parse_slo(text: str) -> Slo:
    """'p99:15ms' (or 'p99:15') -> Slo(99.0, 15.0). Only the percentiles studies record."""
    match = _SLO.match(text.strip())
    if not match:
        raise ConfigError(f"unknown SLO {text!r}: write it as pXX:LATENCYms, e.g. p99:15ms")
    percentile, latency = float(match.group(1)), float(match.group(2))
    key = f"p{percentile:g}"
    if key not in RECORDED_PERCENTILES:
        raise ConfigError(f"unknown SLO {text!r}: studies record {', '.join(RECORDED_PERCENTILES)} latency only")
    if not latency > 0:
        raise ConfigError(f"unknown SLO {text!r}: the latency bound must be positive")
    return Slo(percentile, latency)


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
