"""TEST01 Part III: MLPerf's non-deterministic mode, for when the byte comparison fails.

MLPerf allows some non-determinism (compliance/TEST01/README.md, "Non-determinism"): an
fp16 answer may depend on the batch a sample ran in, which flips near-tied top-1 classes.
Where TEST01's logged responses differ from the accuracy run's, Part III decides instead:

1. create_accuracy_baseline.sh: the accuracy run's log entries for the qsl_idx values
   TEST01's performance run logged (the baseline log; rebuilt from the two logs in the
   tree whenever it is needed, as MLPerf uploads only the scores);
2. the accuracy script on the baseline -> TEST01/accuracy/baseline_accuracy.txt;
3. the accuracy script on TEST01's log -> TEST01/accuracy/compliance_accuracy.txt; beside
   them, as run_verification.py lays the folder out, that log and its accuracy.txt;
4. the rule, as MLPerf's submission checker applies it: both figures non-zero and
   |1 - baseline / compliance| x 100 <= (1 - target) x 100, 1% for ResNet50's 99% target.

Both logs are scored against one reference, written to TEST01/expected_top1.json so the
checker rescoring the logs needs neither the dataset nor a model: the dataset's labels where
the accuracy run's figures carry signal, otherwise the FP32 reference model's top-1
(synthetic data, seeded weights), and then the figures are agreement with it, not accuracy.
verify_accuracy.txt keeps the byte comparison's TEST FAIL, as MLPerf's verify_accuracy.py
output does; the test passes when the delta is within the rule.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runs.accuracy import FP32_FRACTION, AccuracyResult, predictions_from_log, score
from plumbing.errors import OutputError

if TYPE_CHECKING:
    from runs.config import RunConfig
    from sut.data import Dataset

EXPECTED_FILE = "expected_top1.json"  # in TEST01/
ACCURACY_DIR = "accuracy"  # TEST01/accuracy/
BASELINE_TXT, COMPLIANCE_TXT, ACCURACY_TXT = "baseline_accuracy.txt", "compliance_accuracy.txt", "accuracy.txt"
LOG_NAME = "mlperf_log_accuracy.json"
# What MLPerf's checker requires in TEST01/accuracy/ in non-deterministic mode, no more.
ACCURACY_DIR_FILES = frozenset({LOG_NAME, ACCURACY_TXT, BASELINE_TXT, COMPLIANCE_TXT})
# submission_checker's get_delta_perc for a 99% target (99.9% targets get 0.1).
ALLOWED_DELTA_PERCENT = round(100 * (1 - FP32_FRACTION), 9)
AGREEMENT_NOTE = "agreement with the FP32 reference model's top-1, not an accuracy"
_FIGURE = re.compile(r"^(accuracy|fp32_agreement)=([\d.]+)%, good=(\d+), total=(\d+)\s*$")


@dataclass(frozen=True)
class Expected:
    """The class each logged sample should get, and what those classes are."""

    kind: str  # "accuracy" (the dataset's labels) or "fp32_agreement" (the FP32 model's top-1)
    source: str
    classes: dict[int, int]

    def write(self, path: Path) -> None:
        data = {"kind": self.kind, "source": self.source,
                "expected": {str(i): c for i, c in sorted(self.classes.items())}}
        path.write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def read(cls, path: Path) -> Expected:
        try:
            data = json.loads(path.read_text())
            kind, source = data["kind"], str(data["source"])
            classes = {int(i): int(c) for i, c in data["expected"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise OutputError(f"{path}: not a TEST01 Part III reference ({exc})") from None
        if kind not in ("accuracy", "fp32_agreement"):
            raise OutputError(f"{path}: unknown reference kind {kind!r}")
        return cls(kind, source, classes)


def expected_classes(config: RunConfig, dataset: Dataset, accuracy: AccuracyResult | None,
                     indices: np.ndarray) -> Expected:
    """The reference Part III scores `indices` against: labels where the accuracy run's
    figures carry signal, else the FP32 reference model's top-1 (computed here)."""
    labels = dataset.labels()
    if labels is not None and accuracy is not None and accuracy.kind == "accuracy" and accuracy.no_verdict is None:
        return Expected("accuracy", "the dataset's labels", {int(i): int(labels[i]) for i in indices})
    from runs.accuracy import reference_top1
    from runs.config import model_spec

    if labels is None:
        why = "synthetic data has no labels"
    else:
        why = f"the accuracy figures carry no signal: {accuracy.no_verdict if accuracy else 'no accuracy figure'}"
    top1 = reference_top1(model_spec(config), dataset, config.device.device, indices)
    return Expected("fp32_agreement", f"the FP32 reference model's top-1 ({why})", {int(i): int(top1[i]) for i in indices})


def accuracy_delta_percent(baseline: float, compliance: float) -> float | None:
    """MLPerf's checker's delta, |1 - baseline / compliance| x 100, on the figures as written;
    None where either is 0, which that checker rejects."""
    if baseline <= 0 or compliance <= 0:
        return None
    return abs(1 - baseline / compliance) * 100


def judge_delta(baseline: AccuracyResult, compliance: AccuracyResult) -> tuple[float | None, list[str]]:
    """The delta and what fails the rule (nothing: it passes)."""
    reasons = []
    if baseline.kind != compliance.kind:
        reasons.append(f"the baseline is {baseline.kind}, the compliance figure {compliance.kind}: not comparable")
    delta = accuracy_delta_percent(round(baseline.percent, 3), round(compliance.percent, 3))
    if delta is None:
        reasons.append(f"a {compliance.kind} of 0% cannot be compared (MLPerf's checker rejects it)")
    elif delta > ALLOWED_DELTA_PERCENT:
        reasons.append(f"accuracy delta {delta:.3f}% exceeds {ALLOWED_DELTA_PERCENT:g}%")
    return delta, reasons


@dataclass(frozen=True)
class Part3:
    """Both scores, the delta between them and the verdict of MLPerf's rule."""

    baseline: AccuracyResult
    compliance: AccuracyResult
    expected: Expected
    test_log: Path
    delta_percent: float | None
    reasons: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons

    def summary(self) -> str:
        what = f" ({AGREEMENT_NOTE})" if self.expected.kind == "fp32_agreement" else ""
        delta = "no delta" if self.delta_percent is None else f"accuracy delta {self.delta_percent:.3f}%"
        verdict = "; ".join(self.reasons) if self.reasons else f"{delta} <= {ALLOWED_DELTA_PERCENT:g}%"
        return (f"baseline {self.baseline.line()}, compliance {self.compliance.line()}{what}: {verdict}")

    def results(self) -> dict[str, AccuracyResult]:
        """TEST01/accuracy/<name> -> the figure that file states."""
        return {BASELINE_TXT: self.baseline, COMPLIANCE_TXT: self.compliance, ACCURACY_TXT: self.compliance}

    def texts(self) -> dict[str, str]:
        """TEST01/accuracy/<name> -> the accuracy script's output for that log."""
        against = f"scored against {self.expected.source}"
        if self.expected.kind == "fp32_agreement":
            against += f"\n# the figure is {AGREEMENT_NOTE}"
        baseline = (f"{self.baseline.line()}\n# TEST01 Part III baseline: the accuracy run's responses "
                    f"(accuracy/{LOG_NAME}) for the {self.baseline.total} samples TEST01's performance run "
                    f"logged, {against}\n")
        compliance = (f"{self.compliance.line()}\n# TEST01's performance-run responses ({LOG_NAME} here, "
                      f"the copy of performance/run_1/{LOG_NAME}), {against}\n")
        return {BASELINE_TXT: baseline, COMPLIANCE_TXT: compliance, ACCURACY_TXT: compliance}

    def write(self, test_dir: Path) -> None:
        folder = test_dir / ACCURACY_DIR
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.test_log, folder / LOG_NAME)
        for name, text in self.texts().items():
            (folder / name).write_text(text)

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "reference": self.expected.kind, "source": self.expected.source,
                "baseline": self.baseline.line(), "compliance": self.compliance.line(),
                "delta_percent": self.delta_percent, "allowed_delta_percent": ALLOWED_DELTA_PERCENT,
                "reasons": list(self.reasons)}


def evaluate(reference_log: Path, test_log: Path, expected: Expected) -> Part3:
    """Score the baseline (the accuracy run's answers for the logged samples) and TEST01's
    log against `expected`, each sample once (its first answer, as the accuracy script)."""
    logged = predictions_from_log(test_log)
    answered = predictions_from_log(reference_log)
    baseline_predictions = {i: answered[i] for i in logged if i in answered}
    reasons = []
    unknown = sorted(set(logged) - set(expected.classes))
    if unknown:
        reasons.append(f"{EXPECTED_FILE} has no class for {len(unknown)} logged samples (first qsl_idx {unknown[0]})")
    if len(baseline_predictions) != len(logged):
        reasons.append(f"the accuracy run never answered {len(logged) - len(baseline_predictions)} logged samples")
    size = 1 + max([*logged, *expected.classes, 0])
    table = np.full(size, -2, dtype=np.int64)  # -2: no class; never a prediction, not even a failed one
    for index, cls in expected.classes.items():
        if index >= 0:
            table[index] = cls
    baseline = score(baseline_predictions, table, expected.kind)
    compliance = score(logged, table, expected.kind)
    delta, failed = judge_delta(baseline, compliance)
    return Part3(baseline, compliance, expected, test_log, delta, reasons + failed)


def read_figure(path: Path) -> AccuracyResult | None:
    """The figure line of an accuracy txt file (accuracy= or fp32_agreement=), or None."""
    if not path.is_file():
        return None
    for line in path.read_text(errors="replace").splitlines():
        match = _FIGURE.match(line.strip())
        if match:
            kind, _, good, total = match.groups()
            return AccuracyResult(kind, int(good), int(total), 0)
    return None


def judge_files(test_dir: Path) -> tuple[bool, str]:
    """MLPerf's checker on the files alone: TEST01/accuracy/ holds exactly its four files,
    and the two written figures are within the delta."""
    folder = test_dir / ACCURACY_DIR
    present = {p.name for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()
    if present != ACCURACY_DIR_FILES:
        wrong = sorted(present ^ ACCURACY_DIR_FILES)
        return False, (f"non-deterministic mode (Part III) needs exactly {', '.join(sorted(ACCURACY_DIR_FILES))} "
                       f"in {test_dir.name}/{ACCURACY_DIR}/ (missing or extra: {', '.join(wrong)})")
    baseline, compliance = read_figure(folder / BASELINE_TXT), read_figure(folder / COMPLIANCE_TXT)
    if baseline is None or compliance is None:
        return False, f"non-deterministic mode (Part III): no accuracy figure in {BASELINE_TXT} or {COMPLIANCE_TXT}"
    delta, reasons = judge_delta(baseline, compliance)
    shown = (f"non-deterministic mode (Part III): {BASELINE_TXT} {baseline.line()}, "
             f"{COMPLIANCE_TXT} {compliance.line()}")
    verdict = "; ".join(reasons) if reasons else f"accuracy delta {delta:.3f}% <= {ALLOWED_DELTA_PERCENT:g}%"
    return not reasons, f"{shown}: {verdict}"
