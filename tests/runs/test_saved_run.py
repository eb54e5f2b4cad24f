from __future__ import annotations

from typing import Any

import pytest

from plumbing.errors import ACCURACY_FAILED_EXIT, INVALID_RESULT_EXIT, OK_EXIT, RUN_FAILED_EXIT, OutputError
from runs.saved_run import SavedRun, percentile_key


def _record(scenario: str = "Server", summary: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "status": "ok",
        "config": {"system_name": "CPU-X-2cpu_onnxruntime_fp32", "backend": "onnxruntime",
                   "request": {"scenario": scenario, "model": "resnet18", "mode": "performance",
                               "precision": "fp32", "run_profile": "quick"},
                   "loadgen": {"multi_stream_samples_per_query": 4}},
        "harness": {"samples_completed": 100, "wall_s": 4.0},
    }
    if summary is not None:
        record["summary"] = {"scenario": scenario, "valid": True, "invalid_reasons": [], "metric": "m", "value": 20.5,
                             "percentiles_ns": {"50.00": 4e6, "90.00": 5e6, "99.00": 9e6, "99.90": 12e6},
                             "qps_with_loadgen_overhead": 50.0, **summary}
    return {**record, **extra}


def test_percentiles_are_read_by_their_loadgen_keys() -> None:
    run = SavedRun.from_record(_record(summary={}))
    assert run.latency_ms() == {"p50": 4.0, "p90": 5.0, "p99": 9.0}
    assert run.summary is not None and run.summary.latency_ms("p99.9") == 12.0
    assert run.summary.latency_ms("p95") is None
    assert percentile_key("p99.9") == "99.90"
    with pytest.raises(OutputError, match="not a latency percentile"):
        percentile_key("median")


@pytest.mark.parametrize(("scenario", "rate"), [("Server", 20.5), ("Offline", 20.5), ("SingleStream", 50.0),
                                                ("MultiStream", 200.0)])
def test_rate_is_the_headline_or_queries_times_samples_per_query(scenario: str, rate: float) -> None:
    assert SavedRun.from_record(_record(scenario, summary={})).samples_per_s == rate


def test_a_run_without_a_summary_reports_what_the_harness_completed() -> None:
    run = SavedRun.from_record(_record(status="failed"))
    assert (run.samples_per_s, run.latency_ms(), run.valid) == (25.0, {}, False)


@pytest.mark.parametrize(("changes", "code"), [
    ({"status": "failed"}, RUN_FAILED_EXIT),
    ({"accuracy": {"passed": False}}, ACCURACY_FAILED_EXIT),
    ({"summary": {"scenario": "Server", "valid": False, "metric": "m", "value": 1.0}}, INVALID_RESULT_EXIT),
    ({}, OK_EXIT),
])
def test_exit_codes(changes: dict[str, Any], code: int) -> None:
    assert SavedRun.from_record({**_record(summary={}), **changes}).exit_code == code


def test_study_entry_keeps_verdict_rate_percentiles_and_power() -> None:
    entry = SavedRun.from_record(_record(summary={"valid": False}, power={"mean_w": 70.0})).study_entry("m.json")
    assert entry == {"measurements": "m.json", "valid": False, "status": "ok", "samples_per_s": 20.5,
                     "latency_ms": {"p50": 4.0, "p90": 5.0, "p99": 9.0}, "power": {"mean_w": 70.0}}


@pytest.mark.parametrize("record", [[], {"config": {}}, {**_record(), "summary": {"scenario": "Server"}},
                                    {**_record(), "summary": {"scenario": "Server", "valid": True, "metric": "m",
                                                              "value": "fast"}}])
def test_a_malformed_record_is_one_line_naming_where(record: Any) -> None:
    with pytest.raises(OutputError) as caught:
        SavedRun.from_record(record, "results/x/measurements.json")
    assert "results/x/measurements.json" in str(caught.value) and "\n" not in str(caught.value)


def test_the_summary_the_runner_writes_reads_back_the_same() -> None:
    from runs.saved_run import LoadgenSummary

    written = LoadgenSummary(scenario="Server", valid=False, invalid_reasons=("Early stopping satisfied: NO",),
                             metric="Completed samples per second", value=20.8,
                             percentiles_ns={"50.00": 4e6, "99.00": 9e6}, qps_with_loadgen_overhead=20.7,
                             min_duration_satisfied=True, mean_latency_ns=4.5e6, early_stopping_satisfied=False,
                             min_queries_satisfied=True)
    import json

    assert LoadgenSummary.from_json(json.loads(json.dumps(written.to_json()))) == written
