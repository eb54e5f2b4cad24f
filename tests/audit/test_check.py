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
from tests.conftest import cpu_system

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


def trained(data: dict, **figure) -> None:
    """As if the accuracy run had trained weights on labelled data, with these figures."""
    data["runs"]["accuracy"]["config"]["request"]["weights"] = "torchvision"
    data["runs"]["accuracy"]["accuracy"].update(kind="accuracy", reference_good=None, no_verdict=None, **figure)


def low_accuracy(data: dict) -> None:
    trained(data, percent=60.0, good=60, total=100, reference_percent=76.46, threshold_percent=75.6954, passed=False)


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
    "missing system description": (lambda t: (t / f"systems/{cpu_system('null')}.json").unlink(),
                                   "required-file", f"systems/{cpu_system('null')}.json"),
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
    assert "a submission needs an accuracy verdict" in messages["accuracy"]


def test_submission_profile_tree_is_checked_strictly_by_default(good_tree):
    edit_measurements(good_tree, lambda d: d["runs"]["performance"]["config"]["request"].update(run_profile="submission"))
    report = check_tree(good_tree)
    assert report.scenarios[0].strict
    assert ("min-duration", f"{SYSTEM_DIR}/{PERF_DETAIL}") in failures(report)


def accuracy_finding(tree: Path, strict: bool | None = None):
    return next(f for f in check_tree(tree, strict=strict).scenarios[0].findings if f.rule == "accuracy")


def test_labelled_accuracy_that_passes_is_a_pass_and_without_verdict_only_a_note(good_tree):
    edit_measurements(good_tree, lambda d: trained(
        d, percent=76.0, good=7600, total=10000, reference_percent=76.46, threshold_percent=75.6954, passed=True))
    assert accuracy_finding(good_tree).status == "PASS"
    edit_measurements(good_tree, lambda d: d["runs"]["accuracy"]["accuracy"].update(passed=None, reference_percent=None))
    finding = accuracy_finding(good_tree)
    assert finding.status == "NOTE" and "never an accuracy pass" in finding.message


@pytest.mark.parametrize("figure, reason", [
    # Trained weights, but an FP32 reference at chance (1 of 512 right of 1000 classes).
    (dict(percent=0.195, good=1, total=512, reference_percent=0.195, threshold_percent=0.193, passed=True),
     "not above chance for 1000 classes"),
    # The old code on the H200: 0% of a 0% reference, recorded as a pass.
    (dict(percent=0.0, good=0, total=512, reference_percent=0.0, threshold_percent=0.0, passed=True), "not above chance"),
])
def test_no_signal_is_a_note_when_relaxed_and_a_failure_when_strict(good_tree, figure, reason):
    edit_measurements(good_tree, lambda d: trained(d, **figure))
    relaxed = accuracy_finding(good_tree)
    assert relaxed.status == "NOTE" and reason in relaxed.message and "recorded PASS refused" in relaxed.message
    strict = accuracy_finding(good_tree, strict=True)
    assert strict.status == "FAIL" and "a submission needs an accuracy verdict" in strict.message


def test_seeded_weights_never_get_an_accuracy_verdict(good_tree):
    # The shared tree is a seeded rehearsal: the record says so, and the checker agrees.
    finding = accuracy_finding(good_tree)
    assert finding.status == "NOTE" and "no verdict" in finding.message and "seeded weights" in finding.message
    edit_measurements(good_tree, lambda d: d["runs"]["accuracy"]["accuracy"].update(no_verdict=None, passed=True))
    assert "seeded weights" in accuracy_finding(good_tree).message  # the run's weights, not the record's claim


def test_part3_tree_passes_the_check(part3_tree):
    report = check_tree(part3_tree)
    assert report.passed, report.render()
    assert "TEST FAIL in deterministic mode; non-deterministic mode (Part III)" in report.render()


def part3_file(tree: Path, name: str) -> Path:
    return tree / "results" / cpu_system("null") / "resnet18/Offline/TEST01" / name


@pytest.mark.parametrize("edit, rule, file, words", [
    # A better figure written over the real one: within the delta, but not what the logs score.
    (lambda t: part3_file(t, "accuracy/compliance_accuracy.txt").write_text(
        "fp32_agreement=100.000%, good=128, total=128\n"), "compliance-recomputed", "TEST01/accuracy",
     "compliance_accuracy.txt says fp32_agreement=100.000%, good=128, total=128, the logs score "
     "fp32_agreement=99.219%, good=127, total=128"),
    # The verify file claiming the byte comparison passed.
    (lambda t: part3_file(t, "verify_accuracy.txt").write_text("TEST PASS\n"),
     "compliance-recomputed", "TEST01/verify_accuracy.txt", "says TEST PASS, the logs give TEST FAIL"),
    (lambda t: part3_file(t, "accuracy/baseline_accuracy.txt").unlink(),
     "compliance", "TEST01/verify_accuracy.txt", "missing or extra: baseline_accuracy.txt"),
    (lambda t: part3_file(t, "accuracy/mlperf_log_accuracy.json").write_text("[]"),
     "compliance-recomputed", "TEST01/accuracy", "is not a copy of"),
    (lambda t: part3_file(t, "expected_top1.json").unlink(),
     "compliance-recomputed", "TEST01/verify_accuracy.txt", "no expected_top1.json"),
])
def test_part3_tampering_is_caught(part3_tree, edit, rule, file, words):
    edit(part3_tree)
    report = check_tree(part3_tree)
    assert not report.passed
    found = [f for s in report.scenarios for f in s.findings if f.status == "FAIL" and f.rule == rule]
    assert any(f.file.endswith(file) and words in f.message for f in found), report.render()


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
    assert bad.returncode == 5, bad.stdout + bad.stderr  # AUDIT_FAILED_EXIT, as a failed --mode submission
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


def test_cli_json_counts_the_findings(good_tree, tmp_path):
    import json

    summary = tmp_path / "check.json"
    good = run_check_cli(str(good_tree), "--json", str(summary))
    data = json.loads(summary.read_text())
    assert (data["command"], data["exit_code"], data["passed"]) == ("check", good.returncode, True) == \
        ("check", 0, True)
    lines = good.stdout.splitlines()
    for status in ("PASS", "FAIL", "NOTE"):
        assert data["findings"][status] == sum(line.startswith(f"  {status} [") for line in lines)
    set_mllog(good_tree / SYSTEM_DIR / PERF_DETAIL, "effective_schedule_rng_seed", 1)
    bad = run_check_cli(str(good_tree), "--json", "-")
    data = json.loads(bad.stdout)
    assert bad.returncode == data["exit_code"] == 5 and data["findings"]["FAIL"] == 1
    (result,) = data["results"]
    assert result["failed"] == [f"[official-seeds] {SYSTEM_DIR}/{PERF_DETAIL}: schedule_rng_seed is 1, "
                                f"official {OFFICIAL_SEEDS['schedule_rng_seed']}"]
    assert "deepgap results check:" in bad.stderr  # the report moves to stderr
