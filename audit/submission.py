"""A submission run for one system/model/scenario: the accuracy run, the performance run,
TEST01 and TEST04 into MLPerf's layout, then the checker on what they wrote.

    OUT/results/<system>/<model>/<scenario>/
        accuracy/  performance/run_1/  TEST01/  TEST04/  measurements.json  user.conf
    OUT/systems/<system>.json

With the quick profile it is a rehearsal: measurements.json and every report say so, and
the checker relaxes the duration and count rules (and says that it did). With the
submission profile the full rules apply.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from audit.check import CheckReport, check_scenario
from audit.compliance import (OPTIONAL_TESTS, TEST01, TEST05, TESTS, ComplianceTest, Verdict, compare_responses,
                              verify, write_verdicts)
from audit.test01_baseline import EXPECTED_FILE, expected_classes
from runs.accuracy import AccuracyResult, predictions_from_log
from runs.config import CliRequest, RunConfig, resolve
from plumbing.errors import OutputError
from plumbing.files import folder_lock
from runs.results import (ResultPaths, check_outputs, forget_run, holds_result, refuse_existing,
                             update_measurements)
from runs.loadgen_log import parse_detail
from runs.runner import ComplianceRun, execute, make_dataset
from runs.sizing import MEASURED_SOURCE, SIZING_ATTRS
from sut.backends.base import Backend
from sut.data import Dataset

log = logging.getLogger(__name__)

REHEARSAL_GRADE = "rehearsal (quick profile): not a submission-grade run"
SUBMISSION_GRADE = "submission profile: MLPerf's full run rules"
# The runs a submission writes (mode, compliance test); an existing one is never replaced silently.
RUNS = (("accuracy", None), ("performance", None), *(("performance", t) for t in (*TESTS, *OPTIONAL_TESTS)))


@dataclass
class SubmissionOutcome:
    scenario_dir: Path
    grade: str
    verdicts: list[Verdict]
    report: CheckReport
    accuracy: AccuracyResult | None = None

    @property
    def rehearsal(self) -> bool:
        return self.grade == REHEARSAL_GRADE

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts) and self.report.passed

    def render(self, verbose: bool = False) -> str:
        """The short screen: each run's outcome, each compliance test's verdict, the
        checker's counts and its FAIL lines; the whole check (check.txt) with `verbose`."""
        lines = [f"submission run: {self.scenario_dir}", f"grade: {self.grade}"]
        if self.accuracy is not None:
            lines.append(f"  accuracy: {self.accuracy.verdict_line()}")
        lines.append(f"  performance run: {self._performance_line()}")
        by_test: dict[str, list[Verdict]] = {}
        for v in self.verdicts:
            by_test.setdefault(v.test, []).append(v)
        for test, verdicts in by_test.items():
            if all(v.passed for v in verdicts):
                lines.append(f"  {test}: PASS ({', '.join(v.check for v in verdicts)})")
            else:
                lines += [f"  {v.line()}" for v in verdicts if not v.passed]
        findings = [f for c in self.report.scenarios for f in c.findings] + self.report.problems
        counts = ", ".join(f"{sum(f.status == s for f in findings)} {s}" for s in ("PASS", "FAIL", "NOTE"))
        lines.append(f"  results check: {'PASS' if self.report.passed else 'FAIL'} ({counts}; "
                     f"{self.scenario_dir / 'check.txt'})")
        lines += [f"  {f.line().strip()}" for f in findings if f.status == "FAIL"]
        if verbose:
            lines.append(self.report.render())
        notes = [REHEARSAL_GRADE] if self.rehearsal else []
        if self.accuracy is not None and self.accuracy.passed is None:
            notes.append("accuracy not judged: no verdict")
        lines.append(f"overall: {'PASS' if self.passed else 'FAIL'}" + (f" ({'; '.join(notes)})" if notes else ""))
        return "\n".join(lines)

    def _performance_line(self) -> str:
        """The performance run's verdict, samples/s and p99, from its saved result."""
        from runs.jsonsummary import run_fields, saved_run

        fields = run_fields(saved_run(self.scenario_dir / "measurements.json", ("runs", "performance")))
        if fields["result"] is None:
            return f"no LoadGen summary (status {fields['status']})"
        p99 = (fields["latency_ms"] or {}).get("p99")
        shown = "-" if p99 is None else f"{p99:.2f} ms"
        return f"{fields['result']}, {fields['samples_per_s']:,.1f} samples/s, p99 {shown}"


def grade_of(request: CliRequest) -> str:
    return SUBMISSION_GRADE if request.run_profile == "submission" else REHEARSAL_GRADE


def run_submission(request: CliRequest, show_progress: bool = True, backend: Backend | None = None,
                   dataset: Dataset | None = None, alternate_seeds: bool = False) -> SubmissionOutcome:
    """All four runs, the verifications and the check; `alternate_seeds` adds TEST05. A
    loaded `backend` (tests, or a caller timing many runs) is reused by every run and not
    closed; without one each run loads its own, with the INT8 calibration and accuracy
    gate a normal run has."""
    base = replace(request, mode="performance")
    performance = resolve(base)
    paths = ResultPaths(Path(base.output), performance.system_name, base.model, base.scenario, "performance")
    # Held for all the runs: each run's own lock is the same one, taken again.
    with folder_lock(paths.scenario_dir):
        return _submit(base, performance, paths, show_progress, backend, dataset, alternate_seeds)


def _submit(base: CliRequest, performance: RunConfig, paths: ResultPaths, show_progress: bool,
            backend: Backend | None, dataset: Dataset | None, alternate_seeds: bool) -> SubmissionOutcome:
    _claim_folders(paths, base.overwrite)
    dataset = dataset or make_dataset(performance)
    log.info("submission run (%s): accuracy run", grade_of(base))
    accuracy = execute(resolve(replace(base, mode="accuracy")), show_progress, backend, dataset).accuracy
    log.info("submission run: performance run")
    execute(performance, show_progress, backend, dataset)
    verdicts: list[Verdict] = []
    tests = [*TESTS.values(), *([TEST05] if alternate_seeds else [])]
    for test in tests:
        config = resolve(base)
        if test is TEST01:
            size_from_performance_run(config, paths.run_dir / "mlperf_log_detail.txt")
        verdicts += run_compliance_test(test, config, show_progress, backend, dataset, accuracy)
    for name, test in OPTIONAL_TESTS.items():  # an earlier submission's optional test is not part of this one
        if test not in tests:
            forget_run(replace(paths, compliance=name))
    grade = grade_of(base)
    update_measurements(paths, {"submission": {
        "grade": grade, "run_profile": base.run_profile,
        # Says "no verdict: why" where the figures carry no signal: never a silent pass.
        "accuracy": accuracy.verdict_line() if accuracy is not None else None,
        "compliance": {f"{v.test}/{v.check}": v.passed for v in verdicts},
        "part3": {f"{v.test}/{v.check}": v.part3.to_json() for v in verdicts if v.part3 is not None},
    }}, merge=False)
    report = CheckReport(paths.root, [check_scenario(paths.root, paths.scenario_dir)])
    (paths.scenario_dir / "check.txt").write_text(report.render() + "\n")
    update_measurements(paths, {"submission": {"check_passed": report.passed}})
    return SubmissionOutcome(paths.scenario_dir, grade, verdicts, report, accuracy)


# Margins on the performance run's measurement: latencies halved and Offline throughput
# raised, so a TEST01 run somewhat faster than the performance run still has enough queries
# (and Offline still fills its minimum duration).
_SIZING_FROM_RUN = {
    "SingleStream": ("mean_latency_ns", 0.5),
    "MultiStream": ("mean_query_latency_ns", 0.5),
    "Offline": ("samples_per_second", 1.25),
}


def size_from_performance_run(config: RunConfig, detail_path: Path) -> None:
    """Size TEST01's run from what the performance run measured, not from a warm-up.
    LoadGen logs each response with probability sampling_target / expected samples, the
    expected count coming from the sizing value: a warm-up that looks much faster than the
    real run (a short loop on one hot batch) would leave TEST01 with nothing logged."""
    attr = SIZING_ATTRS.get(config.scenario)
    if attr is None or config.scenario not in _SIZING_FROM_RUN:
        return  # Server: target_qps is the experiment's load, never resized
    key, factor = _SIZING_FROM_RUN[config.scenario]
    measured = parse_detail(detail_path).result.get(key)
    if not isinstance(measured, (int, float)) or measured <= 0:
        raise OutputError(f"{detail_path}: no {key} to size {TEST01.name} from")
    value = measured * factor
    config.loadgen[attr] = int(value) if attr.endswith("_ns") else float(value)
    config.provenance[f"loadgen.{attr}"] = f"{MEASURED_SOURCE} ({key} {measured:g} x {factor})"


def run_compliance_test(test: ComplianceTest, config: RunConfig, show_progress: bool,
                        backend: Backend | None, dataset: Dataset,
                        accuracy: AccuracyResult | None = None) -> list[Verdict]:
    """One compliance test's performance run with its audit.config, in its own folder
    (LoadGen reads the file by the explicit path; nothing is written to the working
    directory), then its verifications into verify_*.txt. Where TEST01's responses differ
    from the accuracy run's, Part III's reference is written first: the dataset's labels,
    or the FP32 model's top-1 where `accuracy` (the accuracy run's) carries no signal."""
    paths = ResultPaths(Path(config.request.output), config.system_name, config.request.model,
                        config.scenario, "performance", test.name)
    test_dir = paths.scenario_dir / test.name
    test_dir.mkdir(parents=True, exist_ok=True)
    audit_config = test_dir / "audit.config"
    audit_config.write_text(test.audit_config_text())
    for attr, value in test.overrides.items():
        config.loadgen[attr] = value
        config.provenance[f"loadgen.{attr}"] = f"{test.name} ({test.purpose})"
    log.info("submission run: %s (%s)", test.name, test.purpose)
    execute(config, show_progress, backend, dataset, ComplianceRun(test.name, audit_config))
    if "accuracy" in test.checks:
        reference_log = paths.scenario_dir / "accuracy" / "mlperf_log_accuracy.json"
        test_log = paths.run_dir / "mlperf_log_accuracy.json"
        compared = compare_responses(reference_log, test_log)
        if compared.part3_applies:
            log.info("%s: %s; running Part III (non-deterministic mode)", test.name, compared.reasons[0])
            logged = np.array(sorted(predictions_from_log(test_log)), dtype=np.int64)
            expected_classes(config, dataset, accuracy, logged).write(test_dir / EXPECTED_FILE)
    verdicts = verify(test, paths.scenario_dir, config.scenario)
    write_verdicts(test_dir, verdicts)
    for verdict in verdicts:
        log.info("%s", verdict.line())
    return verdicts


def _claim_folders(paths: ResultPaths, overwrite: bool) -> None:
    """Before running anything: refuse if any of the runs exists (a half-replaced
    submission would mix runs) unless `overwrite`, and mark the submission unfinished in
    measurements.json until its end. Each run keeps the earlier one until it has finished
    itself; the verify files, which describe the earlier runs, go now."""
    check_outputs(paths)
    existing = [p.final_run_dir for p in (replace(paths, mode=mode, compliance=test) for mode, test in RUNS)
                if holds_result(p)]
    if existing and not overwrite:
        refuse_existing(existing[0], "the submission run")
    for name in (*TESTS, *OPTIONAL_TESTS):
        for stale in (paths.scenario_dir / name).glob("verify_*.txt"):
            stale.unlink()
    update_measurements(paths, {"submission": {
        "status": "interrupted",
        "note": "written when the submission run started and replaced when it finishes: "
                "until then the runs here may mix this submission's and an earlier one's"}}, merge=False)
