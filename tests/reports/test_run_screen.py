"""The one-screen summary renders from a saved result alone."""

from __future__ import annotations

from reports.run_screen import render_run


def result(valid: bool, scenario: str = "Offline", min_duration_ok: bool = True) -> dict:
    return {
        "deepgap_version": "0.1.0",
        "config": {
            "system_name": "H100x1_torch_fp16",
            "request": {"model": "resnet50", "scenario": scenario, "mode": "performance",
                        "run_profile": "quick", "precision": "fp16"},
            "device": {"name": "NVIDIA H100 80GB HBM3", "profile": "H100"},
            "backend": "torch",
            "knobs": {"max_batch": 256},
        },
        "summary": {
            "scenario": scenario,
            "valid": valid,
            "invalid_reasons": [] if valid else ["Min duration satisfied: NO"],
            "metric": "Samples per second",
            "value": 14525.0,
            "percentiles_ns": {"50.00": 2.5e9, "90.00": 4.5e9, "99.00": 5.0e9},
            "min_duration_satisfied": min_duration_ok,
        },
        "loadgen_errors": [],
        "weights_note": "weights are seeded random initialisation, not trained weights",
    }


def test_valid_run_screen_has_every_headline_item():
    text = render_run(result(True), "out/run_1")
    assert "H100x1_torch_fp16" in text and "Offline" in text
    assert "result: VALID" in text
    assert "Samples per second: 14,525.0 samples/s" in text
    assert "p50 2500.000 ms" in text and "p90 4500.000 ms" in text and "p99 5000.000 ms" in text
    assert "not trained weights" in text and "not a submission-grade result" in text
    assert text.rstrip().endswith("results: out/run_1 (details: deepgap.log there, or -v)")
    assert "hint:" not in text


def test_invalid_offline_run_gives_reasons_and_a_target_qps_hint():
    text = render_run(result(False, min_duration_ok=False), "out/run_1")
    assert "result: INVALID" in text and "Min duration satisfied: NO" in text
    assert "--target-qps 17430" in text


def test_latency_headline_in_milliseconds():
    saved = result(True, scenario="SingleStream")
    saved["summary"]["metric"] = "90.0th percentile latency (ns)"
    saved["summary"]["value"] = 1049000.0
    assert "90.0th percentile latency: 1.049 ms" in render_run(saved, "x")


def server_miss(batch_p99_ms: float | None) -> dict:
    saved = result(False, scenario="Server")
    saved["summary"]["percentiles_ns"] = {"50.00": 5.0e6, "90.00": 9.0e6, "99.00": 18.0e6}
    saved["summary"]["invalid_reasons"] = ["Early stopping: 99th percentile latency above the bound"]
    if batch_p99_ms is not None:
        saved["harness"] = {"batch_time_ms": {"p50": 4.6, "p99": batch_p99_ms, "max": 21.0, "count": 1001}}
    return saved


def test_server_miss_whose_batches_are_the_tail_says_compute_not_queueing():
    text = render_run(server_miss(16.5), "x")
    assert "the batches themselves took p99 16.500 ms" in text and "max 21.000 ms" in text
    assert "the tail is compute, not queueing" in text and "hint: lower --target-qps" not in text


def test_server_miss_with_short_batches_says_lower_the_load():
    for saved in (server_miss(3.0), server_miss(None)):  # None: a record from before batch times
        text = render_run(saved, "x")
        assert "hint: lower --target-qps" in text and "compute, not queueing" not in text
