"""The results checker on a real (quick-profile) submission tree and on copies of it broken
in one way each: every break must fail the check and name its rule and file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from audit.check import MIN_DURATION_MS, MIN_QUERIES, OFFICIAL_SEEDS, check_tree
from tests.audit.conftest import SYSTEM_DIR
from sut.settings import mlperf_rules

ROOT = Path(__file__).resolve().parents[2]
PERF_DETAIL = "performance/run_1/mlperf_log_detail.txt"


def set_mllog(path: Path, key: str, value) -> None:
    """Rewrite the value of every `:::MLLOG` entry named `key` in a detail log."""
    lines, hits = [], 0
    for line in path.read_text().splitlines():
        if line.startswith(":::MLLOG"):
            entry = json.loads(line[len(":::MLLOG"):])
            if entry["key"] == key:
                entry["value"], hits = value, hits + 1
                line = ":::MLLOG " + json.dumps(entry)
        lines.append(line)
    assert hits, f"{key} not in {path}"
    path.write_text("\n".join(lines) + "\n")


def add_mllog(path: Path, key: str, value, *, error: bool = False, warning: bool = False) -> None:
    entry = {"key": key, "value": value, "time_ms": 1.0, "namespace": "mlperf::logging",
             "event_type": "POINT_IN_TIME", "metadata": {"is_error": error, "is_warning": warning}}
    with path.open("a") as handle:
        handle.write(":::MLLOG " + json.dumps(entry) + "\n")


def edit_measurements(tree: Path, change: Callable[[dict], None]) -> None:
    path = tree / SYSTEM_DIR / "measurements.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def low_accuracy(data: dict) -> None:
    data["runs"]["accuracy"]["accuracy"].update(
        kind="accuracy", percent=60.0, reference_percent=76.46, threshold_percent=75.6954, passed=False)


def tamper_test01_response(tree: Path) -> None:
    path = tree / SYSTEM_DIR / "TEST01/performance/run_1/mlperf_log_accuracy.json"
    entries = json.loads(path.read_text())
    entries[0]["data"] = "FFFFFFFF"
    path.write_text(json.dumps(entries))


# name -> (break the tree, expected failing rule, file the finding must name)
BREAKS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "invalid result": (lambda t: set_mllog(t / SYSTEM_DIR / PERF_DETAIL, "result_validity", "INVALID"),
                       "result-valid", PERF_DETAIL),
    "missing file": (lambda t: (t / SYSTEM_DIR / "TEST04/verify_performance.txt").unlink(),
                     "required-file", "TEST04/verify_performance.txt"),
    "missing system description": (lambda t: (t / "systems/CPU_null_fp32.json").unlink(),
                                   "required-file", "systems/CPU_null_fp32.json"),
    "wrong seed": (lambda t: set_mllog(t / SYSTEM_DIR / PERF_DETAIL, "effective_qsl_rng_seed", 12345),
                   "official-seeds", PERF_DETAIL),
    "too short": (lambda t: set_mllog(t / SYSTEM_DIR / PERF_DETAIL, "result_min_duration_met", False),
                  "min-duration", PERF_DETAIL),
    "early stopping unmet": (lambda t: set_mllog(t / SYSTEM_DIR / PERF_DETAIL, "early_stopping_met", False),
                             "early-stopping", PERF_DETAIL),
    "loadgen error": (lambda t: add_mllog(t / SYSTEM_DIR / PERF_DETAIL, "error_runtime", "SUT failed", error=True),
                      "loadgen-errors", PERF_DETAIL),
    "stray audit.config": (lambda t: add_mllog(t / SYSTEM_DIR / PERF_DETAIL, "warning_generic_message",
                                               "Found Audit Config file (audit.config).", warning=True),
                           "no-audit-config", PERF_DETAIL),
    "low accuracy": (lambda t: edit_measurements(t, low_accuracy), "accuracy", "measurements.json"),
    "failed compliance": (lambda t: (t / SYSTEM_DIR / "TEST04/verify_performance.txt").write_text("TEST FAIL\n"),
                          "compliance", "TEST04/verify_performance.txt"),
    "failed TEST05": (lambda t: (t / SYSTEM_DIR / "TEST05/verify_performance.txt").write_text("TEST FAIL\n"),
                      "compliance", "TEST05/verify_performance.txt"),
    "tampered TEST01 log": (tamper_test01_response, "compliance-recomputed", "TEST01/verify_accuracy.txt"),
    "audit overlay not applied": (lambda t: set_mllog(t / SYSTEM_DIR / "TEST04" / PERF_DETAIL,
                                                      "effective_performance_issue_same", False),
                                  "audit-config", f"TEST04/{PERF_DETAIL}"),
}


def failures(report) -> list[tuple[str, str]]:
    return [(f.rule, f.file) for s in report.scenarios for f in s.findings if f.status == "FAIL"] + \
           [(f.rule, f.file) for f in report.problems]


def test_good_tree_passes_with_relaxed_rules_stated(good_tree):
    report = check_tree(good_tree)
    assert report.passed, report.render()
    text = report.render()
    assert "relaxed" in text and "rehearsal (quick profile): not a submission-grade run" in text
    # Passing rules are listed, not just failures.
    assert "PASS [official-seeds]" in text and "PASS [compliance-recomputed]" in text


@pytest.mark.parametrize("name", list(BREAKS))
def test_each_break_is_caught_and_named(good_tree, name):
    breaker, rule, file = BREAKS[name]
    breaker(good_tree)
    report = check_tree(good_tree)
    assert not report.passed, report.render()
    found = failures(report)
    assert any(r == rule and f.endswith(file) for r, f in found), f"{name}: {found}"


def test_strict_mode_applies_submission_durations_and_counts(good_tree):
    # The test dataset has labels, so the accuracy run recorded a verdict; without one
    # (synthetic data) the accuracy is a fidelity figure, which strict mode refuses.
    edit_measurements(good_tree, lambda d: d["runs"]["accuracy"]["accuracy"].update(
        passed=None, reference_percent=None, threshold_percent=None))
    report = check_tree(good_tree, strict=True)
    assert not report.passed
    messages = {f.rule: f.message for f in report.scenarios[0].findings if f.status == "FAIL"}
    assert f"rules need {MIN_DURATION_MS}" in messages["min-duration"]
    assert f"rules need {MIN_QUERIES['SingleStream']}" in messages["min-query-count"]
    assert "rules need 1024" in messages["performance-sample-count"]
    assert "a submission needs labelled accuracy" in messages["accuracy"]


def test_submission_profile_tree_is_checked_strictly_by_default(good_tree):
    edit_measurements(good_tree, lambda d: d["runs"]["performance"]["config"]["request"].update(run_profile="submission"))
    report = check_tree(good_tree)
    assert report.scenarios[0].strict
    assert ("min-duration", f"{SYSTEM_DIR}/{PERF_DETAIL}") in failures(report)


def test_labelled_accuracy_that_passes_is_a_pass_and_without_verdict_only_a_note(good_tree):
    edit_measurements(good_tree, lambda d: d["runs"]["accuracy"]["accuracy"].update(
        percent=76.0, reference_percent=76.46, threshold_percent=75.6954, passed=True))
    findings = {f.rule: f for f in check_tree(good_tree).scenarios[0].findings}
    assert findings["accuracy"].status == "PASS"
    edit_measurements(good_tree, lambda d: d["runs"]["accuracy"]["accuracy"].update(passed=None))
    findings = {f.rule: f for f in check_tree(good_tree).scenarios[0].findings}
    assert findings["accuracy"].status == "NOTE" and "not an accuracy pass" in findings["accuracy"].message


def test_empty_folder_fails(tmp_path):
    report = check_tree(tmp_path)
    assert not report.passed and failures(report) == [("layout", "results")]


def test_official_rules_match_loadgen():
    for scenario in ("SingleStream", "MultiStream", "Server", "Offline"):
        rules = mlperf_rules(scenario)
        assert {k: rules[k] for k in OFFICIAL_SEEDS} == OFFICIAL_SEEDS
        assert rules["min_duration_ms"] == MIN_DURATION_MS
        assert rules.get("min_query_count", 100) == MIN_QUERIES[scenario]


def run_check_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "audit.check", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_exit_status_follows_the_verdict(good_tree, tmp_path):
    good = run_check_cli(str(good_tree))
    assert good.returncode == 0, good.stdout + good.stderr
    set_mllog(good_tree / SYSTEM_DIR / PERF_DETAIL, "effective_schedule_rng_seed", 1)
    bad = run_check_cli(str(good_tree / "results"))  # the results/ folder itself is accepted too
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"FAIL [official-seeds] {SYSTEM_DIR}/{PERF_DETAIL}: schedule_rng_seed is 1" in bad.stdout
    missing = run_check_cli(str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [f"audit.check: error: {tmp_path / 'nowhere'}: no such results folder"]


@pytest.mark.parametrize("target_ns, p99_ns, passed", [
    (15_000_000, 14_000_000, True),
    (15_000_000, 16_000_000, False),  # over its bound
    (20_000_000, 16_000_000, False),  # a bound looser than the rules' 15 ms
])
def test_server_latency_rule(tmp_path, target_ns, p99_ns, passed):
    run = tmp_path / "results/S/resnet50/Server/performance/run_1"
    run.mkdir(parents=True)
    detail = run / "mlperf_log_detail.txt"
    detail.write_text("")
    add_mllog(detail, "effective_target_latency_ns", target_ns)
    add_mllog(detail, "effective_target_latency_percentile", 0.99)
    add_mllog(detail, "result_99.00_percentile_latency_ns", p99_ns)
    findings = [f for f in check_tree(tmp_path).scenarios[0].findings if f.rule == "server-latency"]
    assert [f.status for f in findings] == ["PASS" if passed else "FAIL"], findings
