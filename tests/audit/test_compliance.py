"""Compliance definitions and verifiers on small hand-written logs, and the audit.config
path under real LoadGen: applied when a compliance run names it, never picked up from the
working directory by a normal run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit.compliance import TEST01, TEST04, TEST05, audit_applied, verify_performance, verify_test01_accuracy
from runs.config import resolve
from runs.loadgen_log import parse_detail
from runs.runner import ComplianceRun, execute


def write_accuracy_log(path: Path, entries: list[tuple[int, int]]) -> Path:
    """(qsl_idx, class) pairs as LoadGen writes them: little-endian int32 hex."""
    items = [{"seq_id": i, "qsl_idx": idx, "data": value.to_bytes(4, "little", signed=True).hex().upper()}
             for i, (idx, value) in enumerate(entries)]
    path.write_text(json.dumps(items))
    return path


def write_detail(path: Path, **result) -> Path:
    lines = [":::MLLOG " + json.dumps({"key": f"result_{key}", "value": value, "metadata": {}})
             for key, value in result.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_audit_configs_are_mlcommons_overlays():
    assert TEST01.audit_config_text().splitlines()[2:] == [
        "*.*.mode = 2", "*.*.accuracy_log_rng_seed = 720381539243781796", "*.*.accuracy_log_sampling_target = 4096"]
    assert TEST04.audit_config_text().splitlines()[2:] == [
        "*.*.mode = 2", "*.*.performance_issue_unique = 0", "*.*.performance_issue_same = 1",
        "*.*.performance_issue_same_index = 3"]


def test_test01_accuracy_compares_every_logged_response_by_sample(tmp_path):
    # The reference holds sample 1 twice; as in MLPerf's scripts its first answer counts.
    reference = write_accuracy_log(tmp_path / "ref.json", [(0, 5), (1, 7), (1, 9), (2, 3)])
    same = write_accuracy_log(tmp_path / "same.json", [(1, 7), (1, 7), (2, 3)])
    verdict = verify_test01_accuracy(reference, same)
    assert verdict.passed and ("matches", 3) in verdict.figures
    wrong = write_accuracy_log(tmp_path / "wrong.json", [(1, 7), (2, 4)])
    verdict = verify_test01_accuracy(reference, wrong)
    assert not verdict.passed and "qsl_idx 2: logged 04000000, accuracy run 03000000" in verdict.text()
    unknown = write_accuracy_log(tmp_path / "unknown.json", [(9, 1)])
    assert "never answered" in verify_test01_accuracy(reference, unknown).reasons[0]
    empty = write_accuracy_log(tmp_path / "empty.json", [])
    verdict = verify_test01_accuracy(reference, empty)
    assert not verdict.passed and verdict.text().endswith("TEST FAIL\n")


@pytest.mark.parametrize("test, scenario, reference, measured, passed", [
    # Throughput: TEST04 may be slower by any amount, not faster by more than 10%.
    (TEST04, "Offline", {"samples_per_second": 100.0}, {"samples_per_second": 60.0}, True),
    (TEST04, "Offline", {"samples_per_second": 100.0}, {"samples_per_second": 111.0}, False),
    (TEST01, "Offline", {"samples_per_second": 100.0}, {"samples_per_second": 89.0}, False),
    (TEST01, "Offline", {"samples_per_second": 100.0}, {"samples_per_second": 91.0}, True),
    # Latency: lower is better; at <= 200 us (SingleStream) the tolerance is 20%.
    (TEST04, "SingleStream", {"90.00_percentile_latency_ns": 1_000_000}, {"90.00_percentile_latency_ns": 880_000}, False),
    (TEST04, "SingleStream", {"90.00_percentile_latency_ns": 150_000}, {"90.00_percentile_latency_ns": 130_000}, True),
    (TEST04, "MultiStream", {"99.00_percentile_per_query_latency_ns": 1_500_000},
     {"99.00_percentile_per_query_latency_ns": 1_100_000}, False),
    (TEST04, "Server", {"completed_samples_per_sec": 100.0}, {"completed_samples_per_sec": 105.0}, True),
    # Alternate seeds: 5% either way, also at low latency.
    (TEST05, "Offline", {"samples_per_second": 100.0}, {"samples_per_second": 94.0}, False),
    (TEST05, "Offline", {"samples_per_second": 100.0}, {"samples_per_second": 104.0}, True),
    (TEST05, "SingleStream", {"90.00_percentile_latency_ns": 150_000}, {"90.00_percentile_latency_ns": 140_000}, False),
])
def test_performance_tolerances(tmp_path, test, scenario, reference, measured, passed):
    ref = write_detail(tmp_path / "ref.txt", validity="VALID", **reference)
    got = write_detail(tmp_path / "test.txt", validity="VALID", **measured)
    verdict = verify_performance(test, scenario, ref, got)
    assert verdict.passed is passed, verdict.text()


def test_test01_needs_both_runs_valid(tmp_path):
    ref = write_detail(tmp_path / "ref.txt", validity="VALID", samples_per_second=100.0)
    got = write_detail(tmp_path / "test.txt", validity="INVALID", samples_per_second=100.0)
    verdict = verify_performance(TEST01, "Offline", ref, got)
    assert not verdict.passed and "the TEST01 performance run is INVALID" in verdict.reasons


def test_normal_run_ignores_a_stray_audit_config_but_a_compliance_run_applies_its_own(
        tiny_request, tmp_path, monkeypatch):
    # LoadGen's default is ./audit.config: put TEST04's overlay exactly there.
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    (workdir / "audit.config").write_text(TEST04.audit_config_text())
    monkeypatch.chdir(workdir)
    request = tiny_request(backend="null", scenario="Offline", target_qps=400)
    normal = execute(resolve(request), show_progress=False)
    detail = parse_detail(normal.paths.run_dir / "mlperf_log_detail.txt")
    assert not audit_applied(detail)
    assert detail.effective["performance_issue_same"] is False

    overlay = tmp_path / "TEST04.config"
    overlay.write_text(TEST04.audit_config_text())
    audited = execute(resolve(request), show_progress=False, compliance=ComplianceRun("TEST04", overlay))
    assert audited.paths.run_dir.parts[-3:] == ("TEST04", "performance", "run_1")
    detail = parse_detail(audited.paths.run_dir / "mlperf_log_detail.txt")
    assert audit_applied(detail)
    assert detail.effective["performance_issue_same"] is True
    assert detail.effective["performance_issue_same_index"] == 3
