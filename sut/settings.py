"""Builds LoadGen TestSettings and LogSettings from resolved, typed values.

Settings are named by their TestSettings attribute (`server_target_qps`,
`min_duration_ms`, ...). `mlperf_rules` reads the rules compiled into LoadGen
(mlperf.conf) without the 'multiple conf files' error a second user-conf load would log.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlperf_loadgen as lg

from harness.errors import ConfigError

SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
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


def build_test_settings(scenario: str, mode: str, values: dict[str, Any]):
    settings = lg.TestSettings()
    settings.scenario = _scenario(scenario)
    for attr, value in values.items():
        if attr not in SETTING_TYPES:
            raise ConfigError(f"unknown LoadGen setting {attr!r}")
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
