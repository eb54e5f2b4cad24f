"""Pure functions over measured curves: spread of repeats, the throughput knee, load ladders.

Reports import these; nothing here runs a benchmark or touches a file.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable, Mapping

DEFAULT_LADDER = (0.10, 0.25, 0.50, 0.75, 0.90, 1.00)


def spread(values: Iterable[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for a single value), count, min and max."""
    data = [float(v) for v in values]
    if not data:
        raise ValueError("spread of no values")
    return {
        "mean": statistics.fmean(data),
        "std": statistics.stdev(data) if len(data) > 1 else 0.0,
        "n": len(data),
        "min": min(data),
        "max": max(data),
    }


def knee(curve: Mapping[int, float], fraction: float) -> int:
    """The smallest batch size whose throughput reaches `fraction` of the curve's peak.

    `curve` maps batch size -> throughput (samples/s). Raises ValueError on an empty curve,
    a fraction outside (0, 1], or a throughput that is not a finite non-negative number.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if not curve:
        raise ValueError("knee of an empty curve")
    for batch, value in curve.items():
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"throughput at batch {batch} is {value}")
    peak = max(curve.values())
    return min(batch for batch, value in curve.items() if value >= fraction * peak)


def peak(curve: Mapping[int, float]) -> tuple[int, float]:
    """(batch size, throughput) of the highest throughput; the smaller batch on a tie."""
    if not curve:
        raise ValueError("peak of an empty curve")
    top = max(curve.values())
    return min(b for b, v in curve.items() if v == top), top


def latency_bound_qps(curve: Mapping[int, float], bound_ms: float) -> float:
    """Highest load a batcher could serve within `bound_ms` if a sample waits at most one
    batch time to be batched and one to be computed: max T(b) over b with 2 b/T(b) <= bound."""
    feasible = [qps for batch, qps in curve.items() if qps > 0 and 2 * batch / qps * 1e3 <= bound_ms]
    return max(feasible, default=0.0)


def ladder(max_qps: float, fractions: Iterable[float] = DEFAULT_LADDER) -> list[tuple[float, float]]:
    """(fraction, target QPS) for each fraction of `max_qps`, ascending, duplicates dropped."""
    if not max_qps > 0:
        raise ValueError(f"max_qps must be positive, got {max_qps}")
    chosen = sorted({float(f) for f in fractions})
    if not chosen or chosen[0] <= 0 or chosen[-1] > 1:
        raise ValueError(f"ladder fractions must lie in (0, 1], got {chosen}")
    return [(f, f * max_qps) for f in chosen]
