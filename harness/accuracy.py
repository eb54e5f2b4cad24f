"""Accuracy from LoadGen's accuracy log: top-1 against labels, or, on data without labels,
agreement with the FP32 reference model (reported as agreement, never as accuracy)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.loadgen_log import deduplicate_by_qsl_idx, parse_accuracy_log
from sut.backends.base import BackendOptions, ModelSpec
from sut.data import Dataset

log = logging.getLogger(__name__)
_REFERENCE_CHUNK = 64


# MLPerf's rule: a reduced-precision (or other-runtime) result must reach 99% of FP32's top-1.
FP32_FRACTION = 0.99


@dataclass(frozen=True)
class AccuracyResult:
    kind: str  # "accuracy" (against labels) or "fp32_agreement" (against the FP32 model)
    good: int
    total: int
    failed_samples: int  # responses of -1: their batch failed
    # Top-1 of the FP32 torch model on the same samples, where the dataset has labels.
    reference_percent: float | None = None

    @property
    def threshold_percent(self) -> float | None:
        return None if self.reference_percent is None else FP32_FRACTION * self.reference_percent

    @property
    def passed(self) -> bool | None:
        """MLPerf's 99%-of-FP32 verdict; None where there are no labels to judge by."""
        if self.threshold_percent is None:
            return None
        return self.failed_samples == 0 and self.percent >= self.threshold_percent

    @property
    def percent(self) -> float:
        return 100.0 * self.good / self.total if self.total else 0.0

    def line(self) -> str:
        """MLPerf's accuracy.txt line; the key says which figure it is."""
        return f"{self.kind}={self.percent:.3f}%, good={self.good}, total={self.total}"

    def verdict_line(self) -> str | None:
        if self.passed is None:
            return None
        return (f"{'PASS' if self.passed else 'FAIL'}: {self.percent:.3f}% against "
                f"{FP32_FRACTION:.0%} of FP32's {self.reference_percent:.3f}% = {self.threshold_percent:.3f}%")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "percent": self.percent, "good": self.good,
                "total": self.total, "failed_samples": self.failed_samples,
                "reference_percent": self.reference_percent,
                "threshold_percent": self.threshold_percent, "passed": self.passed}


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
