"""A backend that answers instantly: measures the harness's own ceiling.

Its answer for a sample is a checksum of the staged pixels, computed when the sample is
staged, so responses still depend on the input (a mixed-up sample shows up in accuracy
checks) while a batch costs nothing but a gather.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plumbing.errors import BackendError
from sut.backends.base import Backend, DonePending, tight_loop_rows


def checksum_class(samples: np.ndarray, num_classes: int = 1000) -> np.ndarray:
    """A deterministic class per sample derived from its pixels."""
    flat = samples.reshape(len(samples), -1).astype(np.float64)
    return (np.abs(flat.sum(axis=1) * 1000.0).astype(np.int64) % num_classes).astype(np.int32)


class NullBackend(Backend):
    name = "null"

    def load(self) -> None:
        self._answers: np.ndarray | None = None

    def allocate_staging(self, capacity: int) -> None:
        self._answers = np.full(capacity, -1, dtype=np.int32)

    def stage(self, rows: np.ndarray, samples: np.ndarray) -> None:
        self._answers[rows] = checksum_class(samples, self.model.num_classes)

    def run_batch(self, rows: np.ndarray):
        if self._answers is None:
            raise BackendError("null backend: run_batch before allocate_staging")
        return DonePending(self._answers[rows])

    def time_tight_loop(self, batch_size: int, iterations: int) -> float:
        import time

        if self._answers is None:
            raise BackendError("null backend: time_tight_loop before allocate_staging")
        rows = tight_loop_rows(batch_size, len(self._answers))
        start = time.perf_counter()
        for _ in range(iterations):
            self._answers[rows]
        return time.perf_counter() - start

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": "cpu", "precision": self.model.precision,
                "note": "no inference: answers are pixel checksums (harness ceiling)"}
