"""LoadGen query sample library: stages the performance set in the backend's memory.

LoadGen's load/unload callbacks run before the timed part of a run (and between the
dataset partitions of an accuracy run); samples are preprocessed and copied into the
backend's staging buffer there, never while queries are timed.
"""

from __future__ import annotations

import logging

import mlperf_loadgen as lg
import numpy as np

from sut.backends.base import Backend
from sut.data import Dataset

log = logging.getLogger(__name__)

_STAGE_CHUNK = 256


class LoadgenQSL:
    def __init__(self, dataset: Dataset, backend: Backend, performance_count: int) -> None:
        self.dataset = dataset
        self.backend = backend
        self.performance_count = min(performance_count, dataset.count)
        # Staging row of each QSL index; -1 while not loaded.
        self.row_of_index = np.full(dataset.count, -1, dtype=np.int64)
        self._free_rows = list(range(self.performance_count))[::-1]
        # An exception must not cross into LoadGen's C++ caller; unstaged samples then fail
        # their batches, which the runner reports.
        self.failure: BaseException | None = None
        backend.allocate_staging(self.performance_count)
        self.handle = lg.ConstructQSL(
            dataset.count, self.performance_count, self._load, self._unload
        )

    def rows_for(self, indices: list[int]) -> np.ndarray:
        return self.row_of_index[indices]

    def _load(self, indices: list[int]) -> None:
        try:
            self._stage(indices)
        except Exception as exc:
            log.error("staging samples failed: %s", exc)
            self.failure = self.failure or exc

    def _stage(self, indices: list[int]) -> None:
        indices_arr = np.asarray(indices, dtype=np.int64)
        # LoadGen may list a sample more than once; stage each once.
        new = np.unique(indices_arr[self.row_of_index[indices_arr] < 0])
        rows = np.array([self._free_rows.pop() for _ in range(len(new))], dtype=np.int64)
        for start in range(0, len(new), _STAGE_CHUNK):
            chunk = slice(start, start + _STAGE_CHUNK)
            self.backend.stage(rows[chunk], self.dataset.load(new[chunk]))
            self.row_of_index[new[chunk]] = rows[chunk]
            log.info("staged %d/%d samples", min(start + _STAGE_CHUNK, len(new)), len(new))

    def _unload(self, indices: list[int]) -> None:
        indices_arr = np.asarray(indices, dtype=np.int64)
        rows = self.row_of_index[indices_arr]
        self._free_rows.extend(int(r) for r in rows[rows >= 0])
        self.row_of_index[indices_arr] = -1

    def destroy(self) -> None:
        if self.handle is not None:
            lg.DestroyQSL(self.handle)
            self.handle = None
