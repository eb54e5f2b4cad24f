"""MLPerf compliance tests TEST01 and TEST04: their audit.config overlays and verifiers.

Definitions follow MLCommons' compliance/TEST01 and TEST04 (resnet50 values):

* TEST01 samples responses into LoadGen's accuracy log during a performance run. Every
  logged response must equal the accuracy run's response for that sample (0 mismatches,
  at least one match); where some differ, MLPerf's Part III (non-deterministic mode,
  audit/test01_baseline.py) passes the test if both logs score within 1% of each other.
  Both runs must be VALID, and the score must be within 10% of the normal performance
  run (20% for SingleStream <= 200 us or MultiStream <= 1.6 ms, where timer noise alone
  is a large fraction).
* TEST04 issues one sample over and over. Its score may not beat the normal run by more
  than 10% (20% at those low latencies): a system that caches responses would.
* TEST05 (retired by MLCommons in 2024, optional here) reruns with other seeds; the score
  may not move by more than 5% either way: a result tuned to the official seeds would.

Verifiers read only the files runs leave behind (detail logs, accuracy logs), so the
submission run and the checker (`audit.check`) reach the same verdict from the same tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.test01_baseline import EXPECTED_FILE, Expected, Part3, evaluate
from plumbing.errors import OutputError
from runs.loadgen_log import Detail, parse_detail
from runs.accuracy_log import deduplicate_by_qsl_idx, parse_accuracy_log

PASS_LINE, FAIL_LINE = "TEST PASS", "TEST FAIL"
# LoadGen logs this warning when it applied an audit.config; normal runs must not have it.
AUDIT_APPLIED_MARK = "Found Audit Config file"


@dataclass(frozen=True)
class ComplianceTest:
    name: str
    purpose: str
    # audit.config keys (LoadGen TestSettings names) and values, applied to every model
    # and scenario (`*.*.key`), exactly as MLCommons ships them for resnet50.
    settings: dict[str, int]
    # Which verifications write which file.
    checks: tuple[str, ...]
    # Performance rule: the allowed relative change (low-latency scenarios may get more),
    # and whether a worse score fails too (TEST04 only guards against better).
    tolerance: float = 0.10
    low_latency_tolerance: float = 0.20
    two_sided: bool = True
    # TEST01 also needs both runs VALID.
    needs_valid: bool = False
    # TestSettings values for the run that LoadGen will not take from an audit.config.
    overrides: dict[str, int] = field(default_factory=dict)

    def expected_effective(self) -> dict[str, int]:
        """What the run's detail log must show in effect (effective_* keys; mode aside)."""
        return {**{k: v for k, v in self.settings.items() if k != "mode"}, **self.overrides}

    def audit_config_text(self) -> str:
        lines = [f"# {self.name}: {self.purpose}",
                 "# Written by deepgap for this test's run only; LoadGen reads it by explicit path."]
        lines += [f"*.*.{key} = {value}" for key, value in self.settings.items()]
        return "\n".join(lines) + "\n"


TEST01 = ComplianceTest(
    name="TEST01",
    purpose="accuracy-log sampling during a performance run: performance-mode responses must match accuracy mode",
    settings={"mode": 2, "accuracy_log_rng_seed": 720381539243781796, "accuracy_log_sampling_target": 4096},
    checks=("accuracy", "performance"),
    needs_valid=True,
)
TEST04 = ComplianceTest(
    name="TEST04",
    purpose="one sample issued repeatedly: the score may not beat the normal run (detects response caching)",
    settings={"mode": 2, "performance_issue_unique": 0, "performance_issue_same": 1,
              "performance_issue_same_index": 3},
    checks=("performance",),
    two_sided=False,
)
TEST05 = ComplianceTest(
    name="TEST05",
    purpose="alternate seeds (MLPerf's retired TEST05): the score may not move by more than 5%",
    settings={"mode": 2},
    # LoadGen 6.0 ignores seeds (and the old test05_* keys) in an audit.config, so the
    # seeds go through the settings builder. deepgap's own values: any but the official.
    overrides={"qsl_rng_seed": 313588358309856706, "sample_index_rng_seed": 471397156132239067,
               "schedule_rng_seed": 413914573387865862},
    checks=("performance",),
    tolerance=0.05,
    low_latency_tolerance=0.05,
)
# Required for a submission; TEST05 is optional (--alternate-seeds) and checked where present.
TESTS: dict[str, ComplianceTest] = {t.name: t for t in (TEST01, TEST04)}
OPTIONAL_TESTS: dict[str, ComplianceTest] = {TEST05.name: TEST05}

# Below these reference scores a latency is dominated by timer and scheduling noise, so
# MLCommons allows 20% instead of 10%.
LOW_LATENCY_NS = {"SingleStream": 200_000, "MultiStream": 1_600_000}


@dataclass(frozen=True)
class Score:
    """One run's headline figure, as MLPerf's verifiers compare it."""

    name: str
    value: float
    higher_is_better: bool


def performance_score(detail: Detail, scenario: str, where: Path) -> Score:
    """The figure MLCommons' verify_performance.py compares, from the detail log:
    SingleStream its 90th and MultiStream its 99th percentile (per-query) latency, Server
    completed samples/s, Offline samples/s. Not the early-stopping estimates: on short runs
    those are a single extreme query, which would turn noise into a verdict."""
    r = detail.result
    if scenario == "SingleStream":
        return _score("90th percentile latency (ns)", r.get("90.00_percentile_latency_ns"), False, where)
    if scenario == "MultiStream":
        return _score("99th percentile per-query latency (ns)", r.get("99.00_percentile_per_query_latency_ns"),
                      False, where)
    if scenario == "Server":
        return _score("completed samples per second", r.get("completed_samples_per_sec"), True, where)
    return _score("samples per second", r.get("samples_per_second"), True, where)


def _score(name: str, value: Any, higher: bool, where: Path) -> Score:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise OutputError(f"{where}: no {name} in the detail log (the run did not finish?)")
    return Score(name, float(value), higher)


def tolerance_for(test: ComplianceTest, scenario: str, reference: Score) -> float:
    limit = LOW_LATENCY_NS.get(scenario)
    return test.low_latency_tolerance if limit is not None and reference.value <= limit else test.tolerance


@dataclass
class Verdict:
    """One verification's outcome and the figures behind it: the text of verify_*.txt."""

    test: str
    check: str  # "accuracy" or "performance"
    passed: bool
    figures: list[tuple[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    # TEST01 accuracy whose byte comparison failed: MLPerf's Part III decided `passed`.
    part3: Part3 | None = None

    @property
    def filename(self) -> str:
        return f"verify_{self.check}.txt"

    @property
    def stated(self) -> bool:
        """The verdict verify_*.txt ends with: for TEST01's accuracy the byte comparison's,
        as MLPerf's verify_accuracy.py writes it, even where Part III then passes the test."""
        return self.passed and self.part3 is None

    def text(self) -> str:
        lines = [f"{self.test} {self.check} verification (deepgap)"]
        lines += [f"{name}: {value}" for name, value in self.figures]
        lines += [f"reason: {reason}" for reason in self.reasons]
        if self.part3 is not None:
            lines += [f"non-deterministic mode (TEST01 Part III): {self.part3.summary()}",
                      f"{self.test} accuracy {'PASS' if self.passed else 'FAIL'} by Part III (the byte comparison "
                      f"below fails; see accuracy/baseline_accuracy.txt and accuracy/compliance_accuracy.txt)"]
        lines.append(PASS_LINE if self.stated else FAIL_LINE)
        return "\n".join(lines) + "\n"

    def line(self) -> str:
        why = list(self.reasons)
        if self.part3 is not None:
            why.insert(0, f"non-deterministic mode, Part III: {self.part3.summary()}")
        shown = f" ({'; '.join(why)})" if why else ""
        return f"{self.test} {self.check}: {'PASS' if self.passed else 'FAIL'}{shown}"


@dataclass(frozen=True)
class ResponseComparison:
    """TEST01's logged responses against the accuracy run's, byte for byte (MLPerf's
    verify_accuracy.py: the accuracy run's first answer per sample)."""

    reference_samples: int
    logged: int
    matches: int
    mismatches: int
    unmatched: int
    first_bad: tuple[str, ...]  # the first few samples answered differently
    bad_samples: int = 0

    @property
    def reasons(self) -> list[str]:
        reasons = []
        if self.mismatches:
            reasons.append(f"{self.mismatches} logged responses ({self.bad_samples} samples) differ from the "
                           f"accuracy run's ({'; '.join(self.first_bad)})")
        if self.unmatched:
            reasons.append(f"{self.unmatched} logged responses are for samples the accuracy run never answered")
        if not self.logged:
            reasons.append("the performance run logged no responses, so nothing was compared")
        return reasons

    @property
    def identical(self) -> bool:
        return not self.reasons and self.matches > 0

    @property
    def part3_applies(self) -> bool:
        """Differing answers, each for a sample the accuracy run answered: what Part III
        can judge. A response for a sample never answered has no baseline."""
        return self.mismatches > 0 and self.unmatched == 0


def compare_responses(reference_log: Path, test_log: Path) -> ResponseComparison:
    reference = deduplicate_by_qsl_idx(parse_accuracy_log(reference_log))
    logged = parse_accuracy_log(test_log)
    matches = mismatches = unmatched = 0
    bad: dict[int, str] = {}
    differing: set[int] = set()
    for entry in logged:
        expected = reference.get(entry.qsl_idx)
        if expected is None:
            unmatched += 1
        elif expected == entry.data:
            matches += 1
            continue
        else:
            mismatches += 1
            differing.add(entry.qsl_idx)
        shown = "none" if expected is None else expected.hex()
        bad.setdefault(entry.qsl_idx, f"qsl_idx {entry.qsl_idx}: logged {entry.data.hex()}, accuracy run {shown}")
    return ResponseComparison(len(reference), len(logged), matches, mismatches, unmatched,
                              tuple(list(bad.values())[:3]), len(differing))


def verify_test01_accuracy(reference_log: Path, test_log: Path, expected: Path | None = None) -> Verdict:
    """Every response logged during TEST01's performance run against the accuracy run's
    response for the same sample (the accuracy run's log de-duplicated by qsl_idx, as
    MLPerf's scripts count each sample once). Where some differ and `expected` (the Part
    III reference, TEST01/expected_top1.json) is given, Part III decides."""
    compared = compare_responses(reference_log, test_log)
    reasons = compared.reasons
    figures = [("reference log", reference_log), ("reference samples", compared.reference_samples),
               ("test log", test_log), ("responses logged", compared.logged),
               ("matches", compared.matches), ("mismatches", compared.mismatches),
               ("without reference", compared.unmatched)]
    if expected is not None and compared.part3_applies:
        if expected.is_file():
            part3 = evaluate(reference_log, test_log, Expected.read(expected))
            return Verdict(TEST01.name, "accuracy", part3.passed, figures, reasons, part3)
        reasons.append(f"no {EXPECTED_FILE}: TEST01 Part III (non-deterministic mode) was not run")
    return Verdict(TEST01.name, "accuracy", compared.identical, figures, reasons)


def verify_performance(test: ComplianceTest, scenario: str, reference_detail: Path, test_detail: Path) -> Verdict:
    """TEST01 and TEST05: the score within the tolerance either way (TEST01: both runs
    VALID). TEST04: no better than the tolerance allows (a worse score is no sign of caching)."""
    ref_log, test_log = parse_detail(reference_detail), parse_detail(test_detail)
    ref = performance_score(ref_log, scenario, reference_detail)
    got = performance_score(test_log, scenario, test_detail)
    tolerance = tolerance_for(test, scenario, ref)
    # Relative change oriented so that positive means "the test run looks better".
    better = (got.value - ref.value) / ref.value if got.higher_is_better else (ref.value - got.value) / ref.value
    reasons = []
    if better > tolerance:
        reasons.append(f"{test.name} scored {better:.1%} better than the normal run (allowed {tolerance:.0%})")
    if test.two_sided and -better > tolerance:
        reasons.append(f"{test.name} scored {-better:.1%} worse than the normal run (allowed {tolerance:.0%})")
    if test.needs_valid:
        for label, detail in (("normal", ref_log), (test.name, test_log)):
            validity = detail.result.get("validity")
            if validity != "VALID":
                reasons.append(f"the {label} performance run is {validity or 'without a result'}")
    figures = [("scenario", scenario), ("metric", got.name),
               ("reference score", f"{ref.value:g}"), ("test score", f"{got.value:g}"),
               ("test better by", f"{better:.2%}"), ("allowed", f"{tolerance:.0%}"),
               ("reference run", reference_detail), ("test run", test_detail)]
    return Verdict(test.name, "performance", not reasons, figures, reasons)


def verify(test: ComplianceTest, scenario_dir: Path, scenario: str) -> list[Verdict]:
    """All verifications of `test` from the files in a result's scenario folder."""
    run = scenario_dir / test.name / "performance" / "run_1"
    verdicts = []
    if "accuracy" in test.checks:
        verdicts.append(verify_test01_accuracy(scenario_dir / "accuracy" / "mlperf_log_accuracy.json",
                                               run / "mlperf_log_accuracy.json", scenario_dir / test.name / EXPECTED_FILE))
    verdicts.append(verify_performance(test, scenario, scenario_dir / "performance" / "run_1" / "mlperf_log_detail.txt",
                                       run / "mlperf_log_detail.txt"))
    return verdicts


def write_verdicts(test_dir: Path, verdicts: list[Verdict]) -> None:
    """verify_*.txt, and TEST01/accuracy/ where Part III decided."""
    for verdict in verdicts:
        (test_dir / verdict.filename).write_text(verdict.text())
        if verdict.part3 is not None:
            verdict.part3.write(test_dir)


def read_verdict_file(path: Path) -> bool | None:
    """True for TEST PASS, False for TEST FAIL, None when the file says neither."""
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return True if last == PASS_LINE else False if last == FAIL_LINE else None


def audit_applied(detail: Detail) -> bool:
    return any(AUDIT_APPLIED_MARK in str(value) for _, value in detail.warnings)
