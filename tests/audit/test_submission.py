"""Submission runs end to end under real LoadGen: the honest SUT passes TEST01 and TEST04,
an inconsistent one fails TEST01, a response-caching one fails TEST04; one whose answers
flip on a sample between accuracy and performance mode passes TEST01 by Part III, one whose
performance-mode answers are wrong on more samples fails it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audit.compliance import TEST05, read_verdict_file
from audit.submission import REHEARSAL_GRADE
from audit.test01_baseline import ACCURACY_DIR_FILES
from tests.audit.conftest import PART3_SAMPLES, SYSTEM_DIR, CachingBackend, InconsistentBackend, submit, submit_flipping
from plumbing.errors import OutputError
from runs.loadgen_log import parse_detail
from tests.conftest import cpu_system

ROOT = Path(__file__).resolve().parents[2]


def verdicts(outcome) -> dict[str, bool]:
    return {f"{v.test}/{v.check}": v.passed for v in outcome.verdicts}


def test_honest_sut_passes_both_compliance_tests_and_the_check(good_submission):
    outcome = good_submission
    assert verdicts(outcome) == {"TEST01/accuracy": True, "TEST01/performance": True, "TEST04/performance": True,
                                 "TEST05/performance": True}, outcome.render()
    assert outcome.report.passed and outcome.passed, outcome.render()
    d = outcome.scenario_dir
    for name in ("TEST01/verify_accuracy.txt", "TEST01/verify_performance.txt", "TEST04/verify_performance.txt"):
        assert read_verdict_file(d / name) is True
    text = (d / "TEST01" / "verify_accuracy.txt").read_text()
    assert "\nmismatches: 0\n" in text and "\nmatches: 0\n" not in text  # something was compared
    for name in ("accuracy", "performance/run_1", "TEST01/performance/run_1", "TEST04/performance/run_1"):
        assert (d / name / "mlperf_log_detail.txt").is_file(), name
    assert (d.parents[3] / "systems" / f"{cpu_system('null')}.json").is_file()
    # Each overlay lives in its own test's folder; nothing was left where a run could find it.
    assert "performance_issue_same = 1" in (d / "TEST04" / "audit.config").read_text()
    detail = parse_detail(d / "TEST05/performance/run_1/mlperf_log_detail.txt")
    assert detail.effective["qsl_rng_seed"] == TEST05.overrides["qsl_rng_seed"]  # other seeds really used
    assert not (Path.cwd() / "audit.config").exists()


def test_rehearsal_is_marked_everywhere(good_submission):
    outcome = good_submission
    assert outcome.rehearsal
    measurements = json.loads((outcome.scenario_dir / "measurements.json").read_text())
    assert measurements["submission"]["grade"] == REHEARSAL_GRADE
    assert set(measurements["runs"]) == {"accuracy", "performance"}
    assert set(measurements["compliance"]) == {"TEST01", "TEST04", "TEST05"}
    assert REHEARSAL_GRADE in outcome.render()
    assert REHEARSAL_GRADE in (outcome.scenario_dir / "check.txt").read_text()
    assert "relaxed" in outcome.report.render()


def test_seeded_rehearsal_says_accuracy_was_not_judged(good_submission):
    outcome = good_submission
    assert outcome.accuracy is not None and outcome.accuracy.passed is None
    rendered = outcome.render()
    assert "accuracy: no verdict: seeded weights" in rendered
    assert rendered.splitlines()[-1].endswith("accuracy not judged: no verdict)")
    measurements = json.loads((outcome.scenario_dir / "measurements.json").read_text())
    assert measurements["submission"]["accuracy"].startswith("no verdict: seeded weights")
    assert "no verdict: seeded weights" in (outcome.scenario_dir / "accuracy" / "accuracy.txt").read_text()
    check = (outcome.scenario_dir / "check.txt").read_text()
    assert "NOTE [accuracy]" in check and "accuracy not judged" in check


def test_a_flipped_sample_passes_test01_by_part3(part3_submission):
    outcome = part3_submission
    assert verdicts(outcome)["TEST01/accuracy"] is True and outcome.passed, outcome.render()
    test01 = outcome.scenario_dir / "TEST01"
    verify_text = (test01 / "verify_accuracy.txt").read_text()
    # The byte comparison still fails, as MLPerf's verify_accuracy.py says; Part III decides.
    assert verify_text.endswith("TEST FAIL\n") and "differ from the accuracy run" in verify_text
    assert "TEST01 accuracy PASS by Part III" in verify_text
    assert {p.name for p in (test01 / "accuracy").iterdir()} == ACCURACY_DIR_FILES
    baseline = (test01 / "accuracy" / "baseline_accuracy.txt").read_text()
    compliance = (test01 / "accuracy" / "compliance_accuracy.txt").read_text()
    # Synthetic data: agreement with the FP32 reference's top-1, and the files say so.
    assert baseline.startswith(f"fp32_agreement=100.000%, good={PART3_SAMPLES}, total={PART3_SAMPLES}\n")
    assert compliance.startswith(f"fp32_agreement=99.219%, good={PART3_SAMPLES - 1}, total={PART3_SAMPLES}\n")
    for text in (baseline, compliance):
        assert "agreement with the FP32 reference model's top-1, not an accuracy" in text
    assert json.loads((test01 / "expected_top1.json").read_text())["kind"] == "fp32_agreement"
    part3 = json.loads((outcome.scenario_dir / "measurements.json").read_text())["submission"]["part3"]
    assert part3["TEST01/accuracy"]["passed"] is True
    assert part3["TEST01/accuracy"]["delta_percent"] == pytest.approx(100 * (100 / 99.219 - 1))  # as written
    findings = {(f.rule, f.file.split("Offline/")[-1]): f for s in outcome.report.scenarios for f in s.findings}
    rule = findings[("compliance", "TEST01/verify_accuracy.txt")]
    assert rule.status == "PASS" and "accuracy delta 0.787% <= 1%" in rule.message
    assert findings[("compliance-recomputed", "TEST01/accuracy")].status == "PASS"


def test_wrong_performance_answers_fail_part3(tmp_path, fp32_answers):
    """6 of 128 samples (4.7%) answered wrongly in performance mode: far past 1%."""
    outcome = submit_flipping(tmp_path / "out", fp32_answers, flips=6)
    assert verdicts(outcome)["TEST01/accuracy"] is False and not outcome.passed
    assert "exceeds 1%" in (outcome.scenario_dir / "TEST01" / "verify_accuracy.txt").read_text()
    failed = {(f.rule, f.file.split("Offline/")[-1]): f.message
              for s in outcome.report.scenarios for f in s.findings if f.status == "FAIL"}
    assert "exceeds 1%" in failed[("compliance", "TEST01/verify_accuracy.txt")]
    assert ("compliance-recomputed", "TEST01/verify_accuracy.txt") in failed


def test_inconsistent_sut_fails_test01(tmp_path):
    outcome = submit(tmp_path / "out", InconsistentBackend)
    assert verdicts(outcome)["TEST01/accuracy"] is False, outcome.render()
    assert not outcome.passed
    text = (outcome.scenario_dir / "TEST01" / "verify_accuracy.txt").read_text()
    assert text.rstrip().endswith("TEST FAIL") and "differ from the accuracy run" in text
    failed = {(f.rule, f.file) for s in outcome.report.scenarios for f in s.findings if f.status == "FAIL"}
    assert any(rule == "compliance" and file.endswith("TEST01/verify_accuracy.txt") for rule, file in failed), failed


def test_caching_sut_fails_test04(tmp_path):
    outcome = submit(tmp_path / "out", CachingBackend)
    assert verdicts(outcome)["TEST04/performance"] is False, outcome.render()
    assert verdicts(outcome)["TEST01/accuracy"] is True  # its answers are right, only too fast
    text = (outcome.scenario_dir / "TEST04" / "verify_performance.txt").read_text()
    assert text.rstrip().endswith("TEST FAIL") and "better than the normal run" in text
    assert not outcome.passed


def test_existing_submission_is_not_replaced_without_overwrite(good_tree):
    with pytest.raises(OutputError, match="already holds a result; pass --overwrite"):
        submit(good_tree)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "harness/run.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_submission_refuses_to_replace_and_check_subcommand_runs(good_tree):
    refused = run_cli("--mode", "submission", "--gpu", "cpu", "--backend", "null", "--model", "resnet18",
                      "--scenario", "SingleStream", "--output", str(good_tree), "--no-progress")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert len(refused.stderr.splitlines()) == 1 and "already holds a result" in refused.stderr
    checked = run_cli("check", str(good_tree))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "checked 1 result(s): 0 failed -> PASS" in checked.stdout


def test_a_submission_into_a_folder_another_process_holds_is_refused(tmp_path, held_elsewhere):
    scenario_dir = tmp_path / "out" / SYSTEM_DIR
    pid = held_elsewhere(scenario_dir)
    with pytest.raises(OutputError, match=rf"in use by another deepgap run \(pid {pid}\)"):
        submit(tmp_path / "out")
    assert not (scenario_dir / "accuracy").exists() and not (scenario_dir / "measurements.json").exists()


def test_what_an_interrupted_submission_left_is_not_a_result(tmp_path):
    """A first submission killed during TEST01 leaves TEST01/audit.config and a partial run
    folder: neither makes the rerun say 'already holds a result'."""
    from audit.submission import _claim_folders
    from runs.results import ResultPaths, load_measurements

    paths = ResultPaths(tmp_path / "out", cpu_system("null"), "resnet18", "SingleStream", "performance")
    partial = paths.scenario_dir / "TEST01" / "performance" / "run_1.partial-99999"
    partial.mkdir(parents=True)
    (partial / "mlperf_log_detail.txt").write_text("half a run")
    (paths.scenario_dir / "TEST01" / "audit.config").write_text("x")
    _claim_folders(paths, overwrite=False)
    assert load_measurements(paths.measurements)["submission"]["status"] == "interrupted"


def test_overwrite_replaces_each_run_and_marks_the_submission_finished(good_tree):
    scenario_dir = good_tree / SYSTEM_DIR
    stale = scenario_dir / "TEST01" / "performance" / "run_1.partial-99999"
    stale.mkdir()
    before = (scenario_dir / "performance" / "run_1" / "mlperf_log_detail.txt").read_bytes()
    outcome = submit(good_tree, overwrite=True)  # without TEST05 this time
    assert outcome.passed, outcome.render()
    assert (scenario_dir / "performance" / "run_1" / "mlperf_log_detail.txt").read_bytes() != before
    assert not stale.exists() and not (scenario_dir / "TEST05").exists()
    measurements = json.loads((scenario_dir / "measurements.json").read_text())
    assert "status" not in measurements["submission"] and measurements["submission"]["check_passed"] is True
    assert set(measurements["compliance"]) == {"TEST01", "TEST04"}  # TEST05's record went with its folder
    assert not list(scenario_dir.rglob("*.partial-*")) and not list(scenario_dir.rglob("*.replaced-*"))


# -- the screen and --json (issue 12) ---------------------------------------------------------------


def test_submission_screen_is_short_and_the_whole_check_is_behind_verbose(good_submission):
    # Was: every checker finding (25 PASS lines) and never the samples/s or p99.
    outcome = good_submission
    text = outcome.render()
    lines = text.splitlines()
    assert len(lines) <= 10, text
    assert not [line for line in lines if "PASS [" in line], text
    performance = next(line for line in lines if line.startswith("  performance run: "))
    assert performance.startswith("  performance run: VALID, ") and "samples/s, p99 " in performance
    assert "  TEST01: PASS (accuracy, performance)" in lines and "  TEST04: PASS (performance)" in lines
    check = next(line for line in lines if line.startswith("  results check: "))
    assert check.startswith("  results check: PASS (") and " 0 FAIL, " in check and "check.txt" in check
    assert lines[-1].startswith("overall: PASS")
    assert outcome.report.render() in outcome.render(verbose=True)


def test_a_failed_check_shows_its_fail_lines_on_the_short_screen(good_submission, tmp_path):
    from audit.check import CheckReport, check_scenario
    from tests.audit.conftest import copy_tree
    from tests.audit.test_check import set_mllog

    tree = copy_tree(good_submission, tmp_path / "tree")
    scenario_dir = tree / SYSTEM_DIR
    set_mllog(scenario_dir / "performance/run_1/mlperf_log_detail.txt", "effective_qsl_rng_seed", 12345)
    report = CheckReport(tree, [check_scenario(tree, scenario_dir)])
    outcome = type(good_submission)(scenario_dir, good_submission.grade, good_submission.verdicts, report,
                                    good_submission.accuracy)
    lines = outcome.render().splitlines()
    assert any(line.startswith("  FAIL [official-seeds] ") and "qsl_rng_seed is 12345" in line for line in lines)
    assert lines[-1].startswith("overall: FAIL")


def test_cli_submission_json_reads_the_saved_submission(tmp_path):
    out, summary = tmp_path / "out", tmp_path / "submission.json"
    proc = run_cli("--mode", "submission", "--gpu", "cpu", "--backend", "null", "--model", "resnet18",
                   "--scenario", "SingleStream", "--image-size", "32", "--dataset-count", "32",
                   "--min-duration-ms", "300", "--min-query-count", "64", "--output", str(out), "--no-progress",
                   "--json", str(summary))
    assert proc.returncode in (0, 5), proc.stdout + proc.stderr
    data = json.loads(summary.read_text())
    saved = json.loads(Path(data["paths"]["measurements"]).read_text())
    assert (data["command"], data["exit_code"]) == ("run", proc.returncode)
    assert data["check_passed"] == saved["submission"]["check_passed"]
    assert (proc.returncode == 0) == (data["check_passed"] and all(data["compliance"].values()))
    assert set(data["runs"]) == {"accuracy", "performance", "TEST01", "TEST04"}
    assert data["runs"]["performance"]["result"] in ("VALID", "INVALID")
    assert data["compliance"] == saved["submission"]["compliance"]
    assert len(proc.stdout.splitlines()) <= 12, proc.stdout
