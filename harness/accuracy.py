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


@dataclass(frozen=True)
class AccuracyResult:
    kind: str  # "accuracy" (against labels) or "fp32_agreement" (against the FP32 model)
    good: int
    total: int
    failed_samples: int  # responses of -1: their batch failed

    @property
    def percent(self) -> float:
        return 100.0 * self.good / self.total if self.total else 0.0

    def line(self) -> str:
        """MLPerf's accuracy.txt line; the key says which figure it is."""
        return f"{self.kind}={self.percent:.3f}%, good={self.good}, total={self.total}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "percent": self.percent, "good": self.good,
                "total": self.total, "failed_samples": self.failed_samples}


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


def reference_top1(model: ModelSpec, dataset: Dataset, device: str) -> np.ndarray:
    """Top-1 of the FP32 torch model for every sample, on `device`."""
    from sut.backends.torch_backend import TorchBackend

    spec = ModelSpec(model.name, "fp32", model.weights, model.seed, model.image_size, model.num_classes)
    backend = TorchBackend(spec, BackendOptions(device=device, max_batch=_REFERENCE_CHUNK, in_flight=1, cuda_graphs=False))
    backend.load()
    backend.allocate_staging(_REFERENCE_CHUNK)
    out = np.empty(dataset.count, dtype=np.int64)
    try:
        for start in range(0, dataset.count, _REFERENCE_CHUNK):
            indices = np.arange(start, min(start + _REFERENCE_CHUNK, dataset.count))
            rows = np.arange(len(indices))
            backend.stage(rows, dataset.load(indices))
            pending = backend.run_batch(rows)
            out[indices] = pending.wait()
            pending.release()
    finally:
        backend.close()
    log.info("FP32 reference top-1 computed for %d samples", dataset.count)
    return out
