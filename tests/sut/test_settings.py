"""LoadGen settings: the values LoadGen's types take, the schedule it pre-generates, and the
query count its early stopping needs, each checked against LoadGen itself."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlperf_loadgen as lg
import pytest

from plumbing.errors import ConfigError
from sut.settings import (build_log_settings, build_test_settings, early_stopping_min_queries, mlperf_rules,
                          schedule_size, setting_problem)


@pytest.mark.parametrize("attr, value, words", [
    ("min_query_count", 10**30, "64-bit"),  # pybind raised TypeError inside the run
    ("min_query_count", float("inf"), "finite"),  # int(inf): OverflowError
    ("server_target_qps", float("inf"), "finite"),
    ("offline_expected_qps", float("nan"), "finite"),
    ("min_duration_ms", 2**63, "64-bit"),  # a signed std::chrono count in LoadGen
    ("min_query_count", -1, ">= 0"),
    ("min_query_count", 2.5, "whole number"),
    ("print_timestamps", 2, "0 or 1"),
    ("server_target_latency_percentile", 0.0, "fraction"),
    ("accuracy_log_probability", 1.5, "fraction"),
    ("warp_factor", 1, "unknown LoadGen setting"),
])
def test_values_loadgen_cannot_take(attr: str, value, words: str) -> None:
    problem = setting_problem(attr, value)
    assert problem is not None and words in problem


@pytest.mark.parametrize("attr, value", [
    ("schedule_rng_seed", 16159082839903944936),  # mlperf.conf's, above 2**63
    ("min_duration_ms", 600000), ("server_target_qps", 1e7), ("accuracy_log_probability", 0.0),
    ("server_target_latency_percentile", 0.99), ("print_timestamps", True),
    ("single_stream_expected_latency_ns", 10000000.0),
])
def test_values_loadgen_takes(attr: str, value) -> None:
    assert setting_problem(attr, value) is None


def test_build_test_settings_refuses_before_pybind() -> None:
    with pytest.raises(ConfigError, match="min_query_count .*64-bit"):
        build_test_settings("Offline", "performance", {"min_query_count": 10**30})
    with pytest.raises(ConfigError, match="offline_expected_qps .*finite"):
        build_test_settings("Offline", "performance", {"offline_expected_qps": float("inf")})


def test_early_stopping_minimums_match_loadgen_and_mlperf_conf() -> None:
    # mlperf.conf's MultiStream min_query_count is the p99 early-stopping minimum.
    assert early_stopping_min_queries("MultiStream", 0.99) == mlperf_rules("MultiStream")["min_query_count"] == 662
    # LoadGen on a Server run with no query over the bound: "Processed 64 queries. Would
    # need to run at least 395 more queries" (issue 11, item 17).
    assert early_stopping_min_queries("Server", 0.99) == 64 + 395
    assert early_stopping_min_queries("SingleStream", 0.9) == 64
    counts = [early_stopping_min_queries("Server", 0.99, t) for t in range(6)]
    assert counts == sorted(counts) and counts[1] == 662


def run_loadgen(scenario: str, values: dict, tmp_path: Path) -> dict:
    """A LoadGen run whose SUT answers at once; its detail log's generated_* entries."""
    def issue(samples: list) -> None:
        lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in samples])

    settings = build_test_settings(scenario, "performance", values)
    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(64, 64, lambda indices: None, lambda indices: None)
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, build_log_settings(tmp_path), str(tmp_path / "audit.config"))
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    entries = [json.loads(line.partition(":::MLLOG")[2]) for line in
               (tmp_path / "mlperf_log_detail.txt").read_text().splitlines() if line.startswith(":::MLLOG")]
    return {e["key"]: e["value"] for e in entries if e["key"].startswith("generated_")}


@pytest.mark.parametrize("scenario, values", [
    ("Offline", {"min_duration_ms": 100, "offline_expected_qps": 2000, "min_query_count": 1}),
    ("Offline", {"min_duration_ms": 100, "offline_expected_qps": 10, "min_query_count": 500}),
    ("SingleStream", {"min_duration_ms": 50, "single_stream_expected_latency_ns": 500_000, "min_query_count": 1}),
    ("MultiStream", {"min_duration_ms": 50, "multi_stream_expected_latency_ns": 1_000_000, "min_query_count": 1}),
    ("MultiStream", {"min_duration_ms": 10, "multi_stream_expected_latency_ns": 1_000_000, "min_query_count": 300}),
    ("Server", {"min_duration_ms": 100, "server_target_qps": 3000, "min_query_count": 1}),
])
def test_schedule_size_is_what_loadgen_generates(scenario: str, values: dict, tmp_path: Path) -> None:
    queries, samples = schedule_size(scenario, "performance", values, 64)
    generated = run_loadgen(scenario, values, tmp_path)
    assert generated["generated_samples_per_query"] * generated["generated_query_count"] == pytest.approx(
        samples, rel=0.1 if scenario == "Server" else 0.01, abs=8)  # Server: Poisson arrivals
    assert generated["generated_query_count"] == pytest.approx(queries, rel=0.1, abs=1)
    assert math.isclose(samples / queries, generated["generated_samples_per_query"])
