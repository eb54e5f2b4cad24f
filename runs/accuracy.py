"""Accuracy from LoadGen's accuracy log: top-1 against labels, or, on data without labels,
agreement with the FP32 reference model (reported as agreement, never as accuracy).

A verdict needs figures that carry signal (`no_verdict_reason`, the one place that decides):
seeded weights never do, and on labelled data the FP32 reference's top-1 must be clearly
above chance, or "99% of FP32's top-1" is 99% of nothing and any runtime would pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runs.accuracy_log import deduplicate_by_qsl_idx, parse_accuracy_log
from sut.backends import backend_info
from sut.backends.base import BackendOptions, ModelSpec
from sut.data import Dataset

if TYPE_CHECKING:
    from runs.config import RunConfig

log = logging.getLogger(__name__)
_REFERENCE_CHUNK = 64


# MLPerf's rule: a reduced-precision (or other-runtime) result must reach 99% of FP32's top-1.
FP32_FRACTION = 0.99
# "Clearly above chance": a model guessing uniformly among the label set's classes would get
# at least the FP32 reference's count right with probability below this (one-sided binomial
# tail). 0.1%: a chance-level reference is mistaken for signal once in a thousand runs, while
# any trained network is far past the bound (ImageNet, 50000 images: 74 right of 1000 classes
# suffice; a trained ResNet gets 38000). On a few hundred images the bound is a handful.
CHANCE_ALPHA = 1e-3
# Every model here classifies ImageNet's label set; records without a class count mean it.
IMAGENET_CLASSES = 1000
SEEDED_REASON = "seeded weights (random initialisation: its predictions carry no signal)"
NO_LABELS_REASON = ("synthetic data has no labels (agreement with the FP32 reference is a fidelity "
                    "figure, not an accuracy)")


def above_chance(good: int, total: int, classes: int, alpha: float = CHANCE_ALPHA) -> bool:
    """Whether `good` right of `total` is significantly more than uniform guessing among
    `classes` labels gets: P(X >= good) < alpha for X ~ Binomial(total, 1/classes)."""
    if total <= 0 or classes <= 1 or good <= 0:
        return False
    from scipy.stats import binom  # scikit-learn's own dependency

    return float(binom.sf(good - 1, total, 1.0 / classes)) < alpha


def no_verdict_reason(*, labelled: bool, weights: str | None, reference_good: int | None,
                      total: int, classes: int = IMAGENET_CLASSES) -> str | None:
    """Why a run's accuracy figures can give no pass/fail verdict, or None when they can."""
    reasons = []
    if weights == "seeded":
        reasons.append(SEEDED_REASON)
    if not labelled:
        reasons.append(NO_LABELS_REASON)
    elif reference_good is None:
        reasons.append("no FP32 reference top-1 to compare with")
    elif not above_chance(reference_good, total, classes):
        reasons.append(f"the FP32 reference's top-1 ({reference_good}/{total}) is not above chance for "
                       f"{classes} classes (binomial tail >= {CHANCE_ALPHA:g})")
    return "; ".join(reasons) or None


@dataclass(frozen=True)
class AccuracyResult:
    kind: str  # "accuracy" (against labels) or "fp32_agreement" (against the FP32 model)
    good: int
    total: int
    failed_samples: int  # responses of -1: their batch failed
    # Top-1 of the FP32 torch model on the same samples, where the dataset has labels.
    reference_percent: float | None = None
    reference_good: int | None = None
    classes: int = IMAGENET_CLASSES
    # Set where the figures carry no signal (no_verdict_reason): then there is no verdict.
    no_verdict: str | None = None

    @property
    def threshold_percent(self) -> float | None:
        return None if self.reference_percent is None else FP32_FRACTION * self.reference_percent

    @property
    def passed(self) -> bool | None:
        """MLPerf's 99%-of-FP32 verdict; None where the figures cannot give one."""
        if self.threshold_percent is None or self.no_verdict is not None:
            return None
        return self.failed_samples == 0 and self.percent >= self.threshold_percent

    @property
    def percent(self) -> float:
        return 100.0 * self.good / self.total if self.total else 0.0

    def line(self) -> str:
        """MLPerf's accuracy.txt line; the key says which figure it is."""
        return f"{self.kind}={self.percent:.3f}%, good={self.good}, total={self.total}"

    def verdict_line(self) -> str:
        if self.passed is None:
            return f"no verdict: {self.no_verdict or 'no labelled check against FP32'}"
        return (f"{'PASS' if self.passed else 'FAIL'}: {self.percent:.3f}% against "
                f"{FP32_FRACTION:.0%} of FP32's {self.reference_percent:.3f}% = {self.threshold_percent:.3f}%")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "percent": self.percent, "good": self.good,
                "total": self.total, "failed_samples": self.failed_samples,
                "reference_percent": self.reference_percent, "reference_good": self.reference_good,
                "classes": self.classes, "threshold_percent": self.threshold_percent,
                "passed": self.passed, "no_verdict": self.no_verdict}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> AccuracyResult:
        """A saved figure (older records lack reference_good, classes and no_verdict)."""
        reference, total = record.get("reference_percent"), int(record.get("total") or 0)
        reference_good = record.get("reference_good")
        if reference_good is None and isinstance(reference, (int, float)):
            reference_good = round(reference * total / 100)
        return cls(str(record.get("kind")), int(record.get("good") or 0), total,
                   int(record.get("failed_samples") or 0), reference, reference_good,
                   int(record.get("classes") or IMAGENET_CLASSES), record.get("no_verdict"))


def predictions_from_log(path: Path) -> dict[int, int]:
    """qsl_idx -> predicted class, de-duplicated by sample index like MLPerf's script."""
    predictions = {}
    for index, data in deduplicate_by_qsl_idx(parse_accuracy_log(path)).items():
        values = np.frombuffer(data, dtype="<i4")
        predictions[index] = int(values[0]) if values.size else -1
    return predictions


def score(predictions: dict[int, int], expected: np.ndarray, kind: str) -> AccuracyResult:
    indices = np.fromiter(predictions.keys(), dtype=np.int64, count=len(predictions))
    predicted = np.fromiter(predictions.values(), dtype=np.int64, count=len(predictions))
    good = int(np.sum(predicted == expected[indices])) if len(indices) else 0
    return AccuracyResult(kind, good, len(indices), int(np.sum(predicted < 0)))


def score_run(config: RunConfig, run_dir: Path, dataset: Dataset) -> AccuracyResult:
    """An accuracy run's figure from its log, written to accuracy.txt with its verdict, or
    with "no verdict" and why where the figures carry no signal."""
    from runs.config import model_spec

    predictions = predictions_from_log(run_dir / "mlperf_log_accuracy.json")
    labels = dataset.labels()
    spec, device = model_spec(config), config.device.device
    scored = np.fromiter(predictions.keys(), dtype=np.int64, count=len(predictions))
    if labels is not None:
        result = score(predictions, labels, "accuracy")
        if config.request.precision == "fp32" and backend_info(config.backend).fp32_reference:
            # The run is the FP32 reference itself.
            reference_good, source = result.good, "this run (FP32 torch)"
        else:
            reference = reference_top1(spec, dataset, device, scored)
            reference_good = score({int(i): int(reference[i]) for i in scored}, labels, "accuracy").good
            source = "FP32 torch on the same samples"
        reference_percent = 100.0 * reference_good / result.total if result.total else 0.0
        note = f"top-1 against the dataset's labels; FP32 reference: {source}"
    else:
        reference = reference_top1(spec, dataset, device, scored)
        result = score(predictions, reference, "fp32_agreement")
        reference_good, reference_percent = None, None
        note = ("agreement with the FP32 reference model's top-1 on synthetic data, which has "
                "no labels: a fidelity figure, not an accuracy")
    reason = no_verdict_reason(labelled=labels is not None, weights=config.request.weights,
                               reference_good=reference_good, total=result.total, classes=spec.num_classes)
    result = replace(result, reference_percent=reference_percent, reference_good=reference_good,
                     classes=spec.num_classes, no_verdict=reason)
    (run_dir / "accuracy.txt").write_text("\n".join([result.line(), result.verdict_line(), f"# {note}"]) + "\n")
    return result


def reference_top1(model: ModelSpec, dataset: Dataset, device: str,
                   indices: np.ndarray | None = None) -> np.ndarray:
    """Top-1 of the FP32 torch model on `device`, for `indices` (default: every sample);
    samples not asked for hold -1."""
    from sut.backends.torch_backend import TorchBackend

    spec = ModelSpec(model.name, "fp32", model.weights, model.seed, model.image_size, model.num_classes)
    backend = TorchBackend(spec, BackendOptions(device=device, max_batch=_REFERENCE_CHUNK, in_flight=1, cuda_graphs=False))
    backend.load()
    backend.allocate_staging(_REFERENCE_CHUNK)
    wanted = np.arange(dataset.count) if indices is None else np.unique(np.asarray(indices, dtype=np.int64))
    out = np.full(dataset.count, -1, dtype=np.int64)
    try:
        for start in range(0, len(wanted), _REFERENCE_CHUNK):
            chunk = wanted[start : start + _REFERENCE_CHUNK]
            rows = np.arange(len(chunk))
            backend.stage(rows, dataset.load(chunk))
            pending = backend.run_batch(rows)
            out[chunk] = pending.wait()
            pending.release()
    finally:
        backend.close()
    log.info("FP32 reference top-1 computed for %d samples", len(wanted))
    return out
