"""Builds LoadGen TestSettings and LogSettings from resolved, typed values.

Settings are named by their TestSettings attribute (`server_target_qps`,
`min_duration_ms`, ...). `mlperf_rules` reads the rules compiled into LoadGen
(mlperf.conf) without the 'multiple conf files' error a second user-conf load would log.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlperf_loadgen as lg

from plumbing.errors import ConfigError

SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
DEFAULT_SCENARIO = "Offline"
# With the dataset's size, these choose which samples LoadGen loads for a performance run.
PERFORMANCE_SET_SETTINGS = ("qsl_rng_seed", "performance_sample_count_override")
MODES = {"performance": "PerformanceOnly", "accuracy": "AccuracyOnly"}
# mlperf.conf defines resnet50 only; resnet18 and resnet101 follow its rules.
RULES_MODEL = "resnet50"

# Every TestSettings attribute a user may set, with its Python type.
SETTING_TYPES: dict[str, type] = {
    "min_duration_ms": int,
    "max_duration_ms": int,
    "min_query_count": int,
    "max_query_count": int,
    "qsl_rng_seed": int,
    "sample_index_rng_seed": int,
    "schedule_rng_seed": int,
    "accuracy_log_rng_seed": int,
    "accuracy_log_probability": float,
    "accuracy_log_sampling_target": int,
    "print_timestamps": bool,
    "performance_issue_unique": bool,
    "performance_issue_same": bool,
    "performance_issue_same_index": int,
    "performance_sample_count_override": int,
    "sample_concatenate_permutation": bool,
    "single_stream_expected_latency_ns": int,
    "single_stream_target_latency_percentile": float,
    "multi_stream_expected_latency_ns": int,
    "multi_stream_target_latency_percentile": float,
    "multi_stream_samples_per_query": int,
    "server_target_qps": float,
    "server_target_latency_ns": int,
    "server_target_latency_percentile": float,
    "server_coalesce_queries": bool,
    "server_max_async_queries": int,
    "offline_expected_qps": float,
    "mode": int,
}
# LoadGen keeps integer settings in uint64_t (test_settings.h); these become signed int64
# std::chrono counts (test_settings_internal.cc), so they must also fit int64.
_UINT64_MAX = 2**64 - 1
_INT64_MAX = 2**63 - 1
_SIGNED_COUNTS = ("min_duration_ms", "max_duration_ms", "server_target_latency_ns")
# Fractions: a probability and the latency percentiles (user.conf gives them in percent).
_FRACTIONS = ("accuracy_log_probability", "single_stream_target_latency_percentile",
              "multi_stream_target_latency_percentile", "server_target_latency_percentile")


def setting_problem(attr: str, value: Any) -> str | None:
    """Why `value` cannot be TestSettings attribute `attr` (what LoadGen's types and meaning
    allow), or None. Checked before a run starts: pybind would raise OverflowError or
    TypeError deep inside the run instead, and a non-finite double silently misleads LoadGen."""
    kind = SETTING_TYPES.get(attr)
    if kind is None:
        return f"unknown LoadGen setting {attr!r}"
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, (int, float)):
        return f"must be a number, got {value!r}"
    if not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if value < 0:
        return f"must be >= 0, got {value:g}"
    if kind is bool:
        return None if value in (0, 1) else f"is a switch: 0 or 1, got {value:g}"
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            return f"must be a whole number, got {value:g}"
        limit = _INT64_MAX if attr in _SIGNED_COUNTS else _UINT64_MAX
        if int(value) > limit:
            return f"{value:g} does not fit LoadGen's 64-bit integer (at most {limit})"
    if attr in _FRACTIONS and not (value <= 1 and (value > 0 or attr == "accuracy_log_probability")):
        return f"must be a fraction in (0, 1] (a percentage in (0, 100] in user.conf), got {value:g}"
    return None


def check_settings(values: Mapping[str, Any], source_of: Mapping[str, str] | None = None) -> None:
    """Raise ConfigError naming the first value LoadGen cannot take, and where it came from."""
    for attr, value in values.items():
        problem = setting_problem(attr, value)
        if problem is not None:
            where = f" (from {source_of[attr]})" if source_of and attr in source_of else ""
            raise ConfigError(f"LoadGen setting {attr}{where} {problem}")


def _scenario(name: str):
    if name not in SCENARIOS:
        raise ConfigError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    return getattr(lg.TestScenario, name)


def mlperf_rules(scenario: str) -> dict[str, Any]:
    """The values mlperf.conf sets for resnet50 in `scenario` that differ from defaults."""
    _scenario(scenario)
    default = lg.TestSettings()
    rules = lg.TestSettings()
    rules.FromConfig("", RULES_MODEL, scenario, 0)  # conf_type 0: LoadGen's own mlperf.conf
    changed = {}
    for attr in SETTING_TYPES:
        value = getattr(rules, attr)
        if value != getattr(default, attr):
            changed[attr] = _plain(value)
    return changed


def _plain(value: Any) -> Any:
    if isinstance(value, lg.TestMode):
        return int(value.value)
    return value


def loadgen_default(attr: str) -> Any:
    """LoadGen's own value of TestSettings attribute `attr` (what a run that sets nothing uses)."""
    if attr not in SETTING_TYPES:
        raise ConfigError(f"unknown LoadGen setting {attr!r}")
    return _plain(getattr(lg.TestSettings(), attr))


def performance_sample_count(values: Mapping[str, Any], total_count: int) -> int:
    """The performance sample count of a run with LoadGen settings `values` over a QSL of
    `total_count` samples: performance_sample_count_override, or the whole dataset where it
    is unset or 0 (LoadGen's meaning of 0), never more than the dataset holds. The runner
    and the calibration's probe of the performance set both use this, so they agree."""
    override = int(values.get("performance_sample_count_override") or 0)
    return min(override or total_count, total_count)


def setting(values: Mapping[str, Any], attr: str) -> Any:
    """`attr` as a run with LoadGen settings `values` uses it: its own value or LoadGen's default."""
    return values[attr] if values.get(attr) is not None else loadgen_default(attr)


def schedule_size(scenario: str, mode: str, values: Mapping[str, Any], total_count: int) -> tuple[int, int]:
    """(queries, samples) LoadGen pre-generates before the first issue, from its own rules
    (loadgen 6.0.17: TestSettingsInternal in test_settings_internal.cc, GenerateQueries in
    loadgen.cc). It holds all of them in memory for the whole run:

    * Offline: one query of max(min_query_count, 1.1 x min_duration x expected_qps) samples.
    * Server: Poisson arrivals at target_qps until min_duration, at least min_query_count.
    * SingleStream / MultiStream: one query per expected latency over twice min_duration
      ("in case the SUT is faster than expected"), at least min_query_count.
    * Accuracy mode: every sample of the dataset once."""
    per_query = int(setting(values, "multi_stream_samples_per_query")) if scenario == "MultiStream" else 1
    if mode == "accuracy":
        return (1 if scenario == "Offline" else math.ceil(total_count / per_query)), total_count
    seconds = float(setting(values, "min_duration_ms")) / 1e3
    min_queries = float(setting(values, "min_query_count"))
    if scenario == "Offline":
        samples = max(min_queries, math.floor(1.1 * seconds * float(setting(values, "offline_expected_qps"))))
        return 1, int(samples)
    if scenario == "Server":
        queries = max(min_queries, seconds * float(setting(values, "server_target_qps")))
    else:
        expected_ns = float(setting(values, f"{'single' if scenario == 'SingleStream' else 'multi'}_stream_expected_latency_ns"))
        queries = max(min_queries, 2 * seconds * 1e9 / max(expected_ns, 1.0))
    return int(queries), int(queries) * per_query


def latency_percentile(scenario: str, values: Mapping[str, Any]) -> float | None:
    """The latency percentile (a fraction) LoadGen's early stopping bounds; None for Offline."""
    attr = {"SingleStream": "single_stream_target_latency_percentile",
            "MultiStream": "multi_stream_target_latency_percentile",
            "Server": "server_target_latency_percentile"}.get(scenario)
    return None if attr is None else float(setting(values, attr))


def early_stopping_min_queries(scenario: str, percentile: float, overlatency: int = 0) -> int:
    """The fewest queries with which LoadGen's early stopping passes (loadgen 6.0.17,
    PerformanceSummary::EarlyStopping in results.cc and MinPassingQueriesFinder in
    early_stopping.cc, confidence 0.99, tolerance 0):

    * Server: h + t queries, where t are over the latency bound and h is the least count
      with P(at most t of h + t over | a fraction 1 - percentile over) < 1 - 0.99.
      p99 with none over: 459 queries.
    * SingleStream / MultiStream: h + 1 with the h of t = 1 (LoadGen always sets one query
      aside): 64 for p90, 662 for p99 (mlperf.conf's MultiStream min_query_count).

    P is the binomial CDF that LoadGen computes as BetaRegularized[p, h, 1 + t]."""
    t = overlatency if scenario == "Server" else 1

    def odds(h: int) -> float:
        n = h + t
        return sum(math.comb(n, x) * percentile ** (n - x) * (1 - percentile) ** x for x in range(t + 1))

    low, high = 1, 1
    while odds(high) >= 0.01:  # LoadGen's test: odds < 1 - confidence
        low, high = high, high * 2
    while low < high:
        mid = (low + high) // 2
        if odds(mid) < 0.01:
            high = mid
        else:
            low = mid + 1
    return low + t


def build_test_settings(scenario: str, mode: str, values: dict[str, Any]):
    settings = lg.TestSettings()
    settings.scenario = _scenario(scenario)
    check_settings(values)
    for attr, value in values.items():
        if attr == "mode":
            continue  # the run's mode below is authoritative
        setattr(settings, attr, SETTING_TYPES[attr](value))
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    settings.mode = getattr(lg.TestMode, MODES[mode])
    return settings


def build_log_settings(outdir: Path, trace: bool = False):
    output = lg.LogOutputSettings()
    output.outdir = str(outdir)
    output.copy_summary_to_stdout = False
    output.copy_detail_to_stdout = False
    output.prefix_with_datetime = False
    log_settings = lg.LogSettings()
    log_settings.log_output = output
    log_settings.enable_trace = trace
    return log_settings
