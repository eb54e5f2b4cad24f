"""The checker's rules about verdicts: the accuracy run's (99% of FP32, or no verdict where
its figures carry no signal) and each compliance test's, recomputed from the logs and held
against the verify files and TEST01's Part III files."""

from __future__ import annotations

from typing import Any

from audit.compliance import OPTIONAL_TESTS, TEST01, TESTS, ComplianceTest, audit_applied, read_verdict_file, verify
from audit.findings import PERF, ScenarioCheck, no_audit_config, no_loadgen_errors
from audit.test01_baseline import ACCURACY_DIR, LOG_NAME, Part3, judge_files, read_figure
from runs.accuracy import AccuracyResult, no_verdict_reason
from plumbing.errors import OutputError
from runs.loadgen_log import Detail
from runs.accuracy_log import parse_accuracy_log


def rule_accuracy(c: ScenarioCheck) -> None:
    rel = "accuracy/mlperf_log_detail.txt"
    d = c.detail(rel)
    if d is not None:
        no_loadgen_errors(c, rel, d)
        no_audit_config(c, rel, d)
        mode = d.effective.get("test_mode")
        if mode != "AccuracyOnly":
            c.add(False, "test-mode", rel, f"test mode {mode!r}, expected AccuracyOnly")
    log_rel = "accuracy/mlperf_log_accuracy.json"
    if (c.path / log_rel).is_file():
        try:
            entries = parse_accuracy_log(c.path / log_rel)
            c.add(bool(entries), "accuracy-log", log_rel, f"{len(entries)} responses logged")
        except OutputError as exc:
            c.add(False, "accuracy-log", log_rel, str(exc))
    measurements = c.measurements()
    if measurements is None:
        return
    run = measurements.get("runs", {}).get("accuracy") or {}
    figure = run.get("accuracy")
    if not isinstance(figure, dict):
        c.add(False, "accuracy", "measurements.json", "no accuracy figure recorded (the accuracy run did not finish?)")
        return
    weights = ((run.get("config") or {}).get("request") or {}).get("weights")
    _accuracy_verdict(c, figure, weights)


def _accuracy_verdict(c: ScenarioCheck, figure: dict[str, Any], weights: str | None) -> None:
    """`passed`/`reference_percent`/`threshold_percent` from the accuracy run, where its
    figures carry signal. The no-signal rule is applied again here (runs.accuracy's, to
    the recorded figures and the run's weights): a PASS on seeded weights or a chance-level
    FP32 reference is refused, whatever was recorded."""
    result = AccuracyResult.from_json(figure)
    percent = figure.get("percent")
    shown = (f"{result.kind}={percent:.3f}% over {result.total} samples" if isinstance(percent, (int, float))
             else f"{result.kind}={percent}")
    if result.failed_samples:
        c.add(False, "accuracy", "measurements.json", f"{result.failed_samples} samples failed in the accuracy run")
    recorded = figure.get("passed")
    reason = result.no_verdict or no_verdict_reason(
        labelled=result.kind == "accuracy", weights=weights, reference_good=result.reference_good,
        total=result.total, classes=result.classes)
    if reason is None and isinstance(recorded, bool):
        threshold = result.threshold_percent
        if recorded != result.passed:
            c.add(False, "accuracy", "measurements.json",
                  f"{shown}: recorded verdict {recorded} contradicts threshold {threshold}%")
        else:
            c.add(recorded, "accuracy", "measurements.json",
                  f"{shown} (FP32 reference {result.reference_percent}%, needs {threshold}%): "
                  f"{'within' if recorded else 'below'} 99% of FP32")
        return
    if reason is None:
        reason = "no labelled check against FP32"
    claimed = f" (recorded {'PASS' if recorded else 'FAIL'} refused)" if isinstance(recorded, bool) else ""
    message = f"{shown}: no verdict{claimed}: {reason}; accuracy not judged, never an accuracy pass"
    if c.strict:
        c.add(False, "accuracy", "measurements.json", f"{message}; a submission needs an accuracy verdict")
    else:
        c.add(None, "accuracy", "measurements.json", message)


def rule_compliance(c: ScenarioCheck) -> None:
    for test in TESTS.values():
        _compliance_test(c, test)
    for test in OPTIONAL_TESTS.values():
        if (c.path / test.name).is_dir():
            _compliance_test(c, test)


def _compliance_test(c: ScenarioCheck, test: ComplianceTest) -> None:
    rel = f"{test.name}/{PERF}/mlperf_log_detail.txt"
    d = c.detail(rel)
    if d is not None:
        no_loadgen_errors(c, rel, d)
        _audit_settings(c, test, rel, d)
    for check in test.checks:
        _stated_verdict(c, test, check)
    # Recompute from the logs: a verdict file alone could be stale or edited.
    try:
        verdicts = verify(test, c.path, c.scenario)
    except OutputError as exc:
        c.add(False, "compliance", test.name, f"cannot verify from the logs: {exc}")
        return
    for verdict in verdicts:
        vrel = f"{test.name}/{verdict.filename}"
        said = read_verdict_file(c.path / vrel) if (c.path / vrel).is_file() else None
        if said is not None and said != verdict.stated:
            c.add(False, "compliance-recomputed", vrel, f"says {_LINE[said]}, the logs give {_LINE[verdict.stated]}: "
                  f"{verdict.line()}")
        c.add(verdict.passed, "compliance-recomputed", vrel, f"from the logs: {verdict.line()}")
        if verdict.part3 is not None:
            _part3_files(c, test, verdict.part3)


_LINE = {True: "TEST PASS", False: "TEST FAIL", None: "neither TEST PASS nor TEST FAIL"}


def _stated_verdict(c: ScenarioCheck, test: ComplianceTest, check: str) -> None:
    """What a verify file says, as MLPerf's checker reads it: TEST01's accuracy file may say
    TEST FAIL where non-deterministic mode (Part III) then passes, judged from its files."""
    vrel = f"{test.name}/verify_{check}.txt"
    if not (c.path / vrel).is_file():
        return  # the files rule reports it
    said = read_verdict_file(c.path / vrel)
    if said is False and test is TEST01 and check == "accuracy":
        ok, message = judge_files(c.path / test.name)
        c.add(ok, "compliance", vrel, f"TEST FAIL in deterministic mode; {message}")
    else:
        c.add(said is True, "compliance", vrel, _LINE[said])


def _part3_files(c: ScenarioCheck, test: ComplianceTest, part3: Part3) -> None:
    """TEST01/accuracy/ against the scores recomputed from the logs: an edited figure or a
    replaced log copy fails, even where the edit would pass the delta rule."""
    folder = f"{test.name}/{ACCURACY_DIR}"
    wrong = []
    for name, recomputed in part3.results().items():
        written = read_figure(c.path / folder / name)
        if written is None or written.line() != recomputed.line():
            wrong.append(f"{name} says {written.line() if written else 'no figure'}, the logs score {recomputed.line()}")
    copy = c.path / folder / LOG_NAME
    if not copy.is_file() or copy.read_bytes() != part3.test_log.read_bytes():
        wrong.append(f"{LOG_NAME} is not a copy of {test.name}/{PERF}/{LOG_NAME}")
    c.add(not wrong, "compliance-recomputed", folder,
          "; ".join(wrong) if wrong else f"Part III files agree with the logs, scored against {part3.expected.source}")


def _audit_settings(c: ScenarioCheck, test: ComplianceTest, rel: str, d: Detail) -> None:
    wrong = []
    if not audit_applied(d):
        wrong.append("LoadGen did not apply an audit.config")
    mode = d.effective.get("test_mode")
    if mode != "PerformanceOnly":
        wrong.append(f"test mode {mode!r}, expected PerformanceOnly")
    for key, value in test.expected_effective().items():
        got = d.effective.get(key)
        if got is None or (bool(got) != bool(value) if isinstance(got, bool) else got != value):
            wrong.append(f"{key} is {got}, {test.name} sets {value}")
    c.add(not wrong, "audit-config", rel, "; ".join(wrong) if wrong else f"{test.name}'s audit.config and settings in effect")
