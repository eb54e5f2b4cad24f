"""Results checker: walks OUT/results/<system>/<model>/<scenario>/ and applies MLPerf's
submission rules, reading LoadGen's detail logs (`:::MLLOG` lines), not just summaries.

    python -m audit.check OUT [--strict]

Every finding names its rule and the file it is about; any FAIL makes the exit status 5
(plumbing/errors.py EXIT_CODES, the same table for every deepgap command).
Strict mode (600 s minimum duration, 24576 Offline samples, 662 MultiStream queries,
performance sample count >= 1024, an accuracy verdict) is the default for a result made
with the submission profile, and `--strict` forces it. A quick-profile rehearsal is
checked for structure, validity, seeds, latency bounds and compliance verdicts, and the
report says which rules were relaxed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

from audit.findings import PERF, CheckReport, Finding, ScenarioCheck, no_audit_config, no_loadgen_errors
from audit.verdict_rules import rule_accuracy, rule_compliance
from plumbing.errors import ConfigError
from runs.loadgen_log import Detail

log = logging.getLogger(__name__)

# mlperf.conf's resnet50 rules as compiled into LoadGen 6.0.17 (tests compare these with
# sut.settings.mlperf_rules); kept here so the checker reads trees without LoadGen.
OFFICIAL_SEEDS = {
    "qsl_rng_seed": 2085463073848966840,
    "sample_index_rng_seed": 2747215439041700203,
    "schedule_rng_seed": 16159082839903944936,
}
MIN_DURATION_MS = 600_000
MIN_PERFORMANCE_SAMPLES = 1024
# Offline counts samples in its one query; the others count queries (100: LoadGen's default).
MIN_QUERIES = {"SingleStream": 100, "MultiStream": 662, "Server": 100, "Offline": 24576}
SERVER_LATENCY_NS = 15_000_000
SERVER_PERCENTILE = 0.99

REQUIRED = {
    "measurements.json": "deepgap's result",
    "user.conf": "effective LoadGen settings",
    f"{PERF}/mlperf_log_summary.txt": "performance summary",
    f"{PERF}/mlperf_log_detail.txt": "performance detail log",
    "accuracy/mlperf_log_accuracy.json": "accuracy log",
    "accuracy/accuracy.txt": "accuracy figure",
    "accuracy/mlperf_log_detail.txt": "accuracy run detail log",
    "TEST01/verify_accuracy.txt": "TEST01 accuracy verdict",
    "TEST01/verify_performance.txt": "TEST01 performance verdict",
    f"TEST01/{PERF}/mlperf_log_detail.txt": "TEST01 detail log",
    f"TEST01/{PERF}/mlperf_log_summary.txt": "TEST01 summary",
    f"TEST01/{PERF}/mlperf_log_accuracy.json": "TEST01 sampled responses",
    "TEST04/verify_performance.txt": "TEST04 performance verdict",
    f"TEST04/{PERF}/mlperf_log_detail.txt": "TEST04 detail log",
    f"TEST04/{PERF}/mlperf_log_summary.txt": "TEST04 summary",
}


# --------------------------------------------------------------------------- rules


def rule_files(c: ScenarioCheck) -> None:
    missing = [(rel, what) for rel, what in REQUIRED.items() if not (c.path / rel).is_file()]
    for rel, what in missing:
        c.add(False, "required-file", rel, f"missing ({what})")
    system_json = c.root / "systems" / f"{c.path.parts[-3]}.json"
    if not system_json.is_file():
        c.findings.append(Finding("FAIL", "required-file", str(system_json.relative_to(c.root)),
                                  "missing (system description)"))
    if not missing and system_json.is_file():
        c.add(True, "required-file", ".", f"all {len(REQUIRED) + 1} required files present")


def rule_performance(c: ScenarioCheck) -> None:
    rel = f"{PERF}/mlperf_log_detail.txt"
    d = c.detail(rel)
    if d is None:
        return
    no_loadgen_errors(c, rel, d)
    no_audit_config(c, rel, d)
    mode = d.effective.get("test_mode")
    if mode != "PerformanceOnly":
        c.add(False, "test-mode", rel, f"test mode {mode!r}, expected PerformanceOnly")
    validity = d.result.get("validity")
    why = d.result.get("invalid_reason")
    c.add(validity == "VALID", "result-valid", rel,
          f"Result is : {validity or 'missing'}" + (f" ({why.strip()})" if why and validity != "VALID" else ""))
    met = d.early_stopping.get("met")
    c.add(met is True, "early-stopping", rel, "early stopping met" if met is True else f"early stopping not met ({met})")
    _seeds(c, rel, d)
    _duration_and_counts(c, rel, d)
    if c.scenario == "Server":
        _server_latency(c, rel, d)


def _seeds(c: ScenarioCheck, rel: str, d: Detail) -> None:
    wrong = [f"{key} is {d.effective.get(key)}, official {value}" for key, value in OFFICIAL_SEEDS.items()
             if d.effective.get(key) != value]
    c.add(not wrong, "official-seeds", rel, "; ".join(wrong) if wrong else "official qsl, sample index and schedule seeds")


def _duration_and_counts(c: ScenarioCheck, rel: str, d: Detail) -> None:
    met = d.result.get("min_duration_met")
    c.add(met is True, "min-duration", rel,
          "the run met its minimum duration" if met is True else f"the run ended before its minimum duration ({met})")
    queries_met = d.result.get("min_queries_met")
    c.add(queries_met is True, "min-query-count", rel,
          "the run met its minimum query count" if queries_met is True else f"minimum query count not met ({queries_met})")
    duration = d.effective.get("min_duration_ms")
    if c.scenario == "Offline":
        count, what = d.effective.get("samples_per_query"), "samples in the Offline query"
    else:
        count, what = d.effective.get("min_query_count"), "minimum query count"
    samples = d.effective.get("performance_sample_count")
    checks = [
        ("min-duration", _at_least(duration, MIN_DURATION_MS), f"min_duration_ms {duration}, rules need {MIN_DURATION_MS}"),
        ("min-query-count", _at_least(count, MIN_QUERIES[c.scenario]), f"{what} {count}, rules need {MIN_QUERIES[c.scenario]}"),
        ("performance-sample-count", _at_least(samples, MIN_PERFORMANCE_SAMPLES),
         f"performance sample count {samples}, rules need {MIN_PERFORMANCE_SAMPLES}"),
    ]
    for rule, ok, message in checks:
        if c.strict:
            c.add(ok, rule, rel, message)
        elif not ok:
            c.add(None, rule, rel, f"{message} (relaxed: rehearsal)")


def _at_least(value: Any, minimum: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= minimum


def _server_latency(c: ScenarioCheck, rel: str, d: Detail) -> None:
    target = d.effective.get("target_latency_ns")
    percentile = d.effective.get("target_latency_percentile")
    if not _at_least(percentile, SERVER_PERCENTILE) or not isinstance(target, (int, float)) or target > SERVER_LATENCY_NS:
        c.add(False, "server-latency", rel,
              f"latency bound {target} ns at percentile {percentile}; rules: <= {SERVER_LATENCY_NS} ns at {SERVER_PERCENTILE}")
        return
    key = f"{percentile * 100:.2f}_percentile_latency_ns"
    measured = d.result.get(key)
    ok = isinstance(measured, (int, float)) and measured <= target
    c.add(ok, "server-latency", rel, f"{key.replace('_', ' ')} {measured} vs bound {target} ns")


def rule_grade(c: ScenarioCheck) -> None:
    """Where the performance run's profile decides strictness, say which it was."""
    data = c.measurements() or {}
    grade = (data.get("submission") or {}).get("grade")
    if grade:
        c.rehearsal = grade if "rehearsal" in grade else None


RULES: tuple[Callable[[ScenarioCheck], None], ...] = (
    rule_files, rule_grade, rule_performance, rule_accuracy, rule_compliance,
)


# --------------------------------------------------------------------------- walking


def run_profile_of(scenario_dir: Path) -> str | None:
    try:
        data = json.loads((scenario_dir / "measurements.json").read_text())
        return data["runs"]["performance"]["config"]["request"]["run_profile"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def results_root(path: Path) -> Path:
    """Accept the output root (holding results/ and systems/) or its results/ folder."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: no such results folder")
    if not (path / "results").is_dir() and path.name == "results":
        return path.parent
    return path


def check_scenario(root: Path, scenario_dir: Path, strict: bool | None = None) -> ScenarioCheck:
    profile = run_profile_of(scenario_dir)
    # Unknown profile (no measurements.json): strict, never silently relaxed.
    effective_strict = strict if strict is not None else profile != "quick"
    check = ScenarioCheck(root, scenario_dir, strict=effective_strict)
    if profile is None:
        check.add(None, "run-profile", "measurements.json", "run profile unknown: applying strict rules")
    for rule in RULES:
        rule(check)
    return check


def check_tree(path: Path, strict: bool | None = None) -> CheckReport:
    """Check every results/<system>/<model>/<scenario> under `path`. `strict=None` takes
    each result's own run profile (submission -> strict); True forces strict rules."""
    root = results_root(path)
    scenario_dirs = sorted(p for p in (root / "results").glob("*/*/*") if p.is_dir())
    report = CheckReport(root, [check_scenario(root, d, strict) for d in scenario_dirs])
    if not scenario_dirs:
        report.problems.append(Finding("FAIL", "layout", "results",
                                       "no results/<system>/<model>/<scenario> folders found"))
    return report


# --------------------------------------------------------------------------- command line


def report_fields(report: CheckReport) -> dict[str, Any]:
    """--json: the verdict and the findings counted by status, over the tree and per result."""
    def counts(findings: list[Finding]) -> dict[str, int]:
        return {status: sum(f.status == status for f in findings) for status in ("PASS", "FAIL", "NOTE")}

    return {
        "root": str(report.root), "passed": report.passed,
        "findings": counts([f for s in report.scenarios for f in s.findings] + report.problems),
        "results": [{"result": s.name, "passed": s.passed, "strict": s.strict, "findings": counts(s.findings),
                     "failed": [f"[{f.rule}] {f.file}: {f.message}" for f in s.findings if f.status == "FAIL"]}
                    for s in report.scenarios],
    }


def main(argv: list[str] | None = None) -> int:
    import sys

    from plumbing import logs
    from plumbing.argtypes import DefaultsHelpFormatter, OneLineParser, add_json_flag, add_verbose_flag, guarded
    from plumbing.errors import AUDIT_FAILED_EXIT, OK_EXIT, exit_code_epilog
    from plumbing.json_summary import SummaryTarget

    parser = OneLineParser(prog="python -m audit.check", formatter_class=DefaultsHelpFormatter,
                           epilog=exit_code_epilog(),
                           description="Check a deepgap results tree against MLPerf's submission rules.")
    parser.add_argument("results", type=Path, help="output root holding results/ and systems/ (or its results/ folder)")
    parser.add_argument("--strict", action="store_true", default=None,
                        help="apply the full rules (600 s, 24576 Offline samples, 1024 performance samples, "
                        "labelled accuracy) even to quick-profile rehearsals (default: off: strict for "
                        "submission-profile results, relaxed for quick ones)")
    add_json_flag(parser)
    add_verbose_flag(parser)
    summary = SummaryTarget("check")

    def body() -> int:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        summary.target = args.json
        logs.setup(verbose=args.verbose)
        report = check_tree(args.results, strict=args.strict)
        print(report.render(), file=summary.screen)
        code = OK_EXIT if report.passed else AUDIT_FAILED_EXIT
        summary.write(code, report_fields(report))
        return code

    return guarded("audit.check", body, summary=summary)


if __name__ == "__main__":
    import sys

    sys.exit(main())
