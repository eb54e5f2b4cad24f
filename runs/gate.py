"""Accuracy gate: a reduced-precision backend against the FP32 reference, before it is
benchmarked. Figures: top-1 against labels (MLPerf's rule: at least 99% of FP32's top-1),
top-1 agreement with FP32, mean cosine similarity of the logits, relative error
||out - ref|| / ||ref|| over all logits."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

MLPERF_RELATIVE_ACCURACY = 0.99


@dataclass(frozen=True)
class GateFigures:
    samples: int
    agreement: float  # fraction of samples whose top-1 equals FP32's
    cosine: float  # mean over samples of cos(logits, reference logits)
    relative_error: float
    top1: float | None = None  # against labels, where the check set has them
    reference_top1: float | None = None
    measured_on: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    rule: str
    figures: GateFigures
    module: dict[str, Any] | None = None  # the backend's describe()["compile"]: what was checked

    def line(self) -> str:
        f = self.figures
        parts = [f"agreement {100 * f.agreement:.2f}%", f"cosine {f.cosine:.5f}",
                 f"relative error {f.relative_error:.2e}"]
        if f.top1 is not None and f.reference_top1 is not None:
            parts.insert(0, f"top-1 {100 * f.top1:.2f}% vs FP32 {100 * f.reference_top1:.2f}%")
        verdict = "PASS" if self.passed else "FAIL"
        through = ""
        if self.module and self.module.get("compiled"):
            through = f"; through the network compiled by TorchInductor ({self.module.get('mode')})"
        return f"accuracy gate {verdict} ({self.rule}): {', '.join(parts)}; on {f.measured_on}{through}"

    def to_json(self) -> dict[str, Any]:
        data = {"passed": self.passed, "rule": self.rule, **self.figures.to_json()}
        if self.module is not None:
            data["compile"] = self.module
        return data


def fidelity(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray | None,
             measured_on: str) -> GateFigures:
    logits = np.asarray(logits, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if logits.shape != reference.shape or logits.ndim != 2 or len(logits) == 0:
        raise ValueError(f"logits {logits.shape} and reference {reference.shape} must be equal, non-empty 2-D")
    top, ref_top = logits.argmax(axis=1), reference.argmax(axis=1)
    norms = np.linalg.norm(logits, axis=1) * np.linalg.norm(reference, axis=1)
    cosines = np.where(norms > 0, np.sum(logits * reference, axis=1) / np.where(norms > 0, norms, 1), 0.0)
    if not np.all(np.isfinite(logits)):
        cosines = np.where(np.all(np.isfinite(logits), axis=1), cosines, 0.0)
    ref_norm = np.linalg.norm(reference)
    diff = np.nan_to_num(logits - reference, nan=np.inf)
    relative = float(np.linalg.norm(diff) / ref_norm) if ref_norm > 0 else float("inf")
    figures = GateFigures(
        samples=len(logits),
        agreement=float(np.mean(top == ref_top)),
        cosine=float(np.mean(cosines)),
        relative_error=relative,
        measured_on=measured_on,
    )
    if labels is not None:
        labels = np.asarray(labels)
        figures = GateFigures(**{**asdict(figures), "top1": float(np.mean(top == labels)),
                                 "reference_top1": float(np.mean(ref_top == labels))})
    return figures


def judge(figures: GateFigures, min_agreement: float = 0.99, classes: int = 1000) -> GateVerdict:
    """Labels: MLPerf's rule (top-1 >= 99% of FP32's). No labels, or an FP32 top-1 at
    chance on them (runs.accuracy.above_chance: 99% of it says nothing): top-1
    agreement with FP32 of at least `min_agreement`."""
    from runs.accuracy import above_chance

    agreement_rule = f"top-1 agreement with FP32 >= {100 * min_agreement:g}%"
    if figures.top1 is not None and figures.reference_top1 is not None:
        if above_chance(round(figures.reference_top1 * figures.samples), figures.samples, classes):
            threshold = MLPERF_RELATIVE_ACCURACY * figures.reference_top1
            return GateVerdict(figures.top1 >= threshold, "top-1 >= 99% of FP32's top-1", figures)
        agreement_rule += " (FP32's top-1 on the labels is at chance: no label verdict)"
    return GateVerdict(figures.agreement >= min_agreement, agreement_rule, figures)


_CHUNK = 64


def backend_logits(backend: Any, dataset: Any, indices: np.ndarray) -> np.ndarray:
    """Logits of `backend` for dataset samples `indices`, in chunks of at most its max
    batch (a TensorRT engine built for the run's batch range takes no more)."""
    chunk = max(1, min(_CHUNK, int(backend.options.max_batch)))
    parts = [backend.logits(dataset.load(indices[start:start + chunk]))
             for start in range(0, len(indices), chunk)]
    return np.concatenate(parts, axis=0)


def check_figures(under_test: Any, reference: Any, dataset: Any, indices: np.ndarray,
                  measured_on: str) -> GateFigures:
    """Both backends must be loaded; `reference` is the FP32 torch model."""
    labels = dataset.labels()
    return fidelity(
        backend_logits(under_test, dataset, indices),
        backend_logits(reference, dataset, indices),
        None if labels is None else labels[indices],
        measured_on,
    )
