"""LoadGen query sample library: stages the performance set in the backend's memory.

LoadGen's load/unload callbacks run before the timed part of a run (and between the
dataset partitions of an accuracy run); samples are preprocessed and copied into the
backend's staging buffer there, never while queries are timed.

`performance_sample_set` predicts which samples a performance run will load, by watching
LoadGen choose them in a run of no cost; `LoadgenQSL.loaded_indices` is what a real run
did load, so the two can be compared afterwards.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import tempfile
from pathlib import Path

import mlperf_loadgen as lg
import numpy as np

from plumbing.errors import ConfigError
from sut.backends.base import Backend
from sut.data import Dataset
from sut.settings import SCENARIOS, build_log_settings, build_test_settings

log = logging.getLogger(__name__)

_STAGE_CHUNK = 256


class LoadgenQSL:
    def __init__(self, dataset: Dataset, backend: Backend, performance_count: int) -> None:
        self.dataset = dataset
        self.backend = backend
        self.performance_count = min(performance_count, dataset.count)
        # Staging row of each QSL index; -1 while not loaded.
        self.row_of_index = np.full(dataset.count, -1, dtype=np.int64)
        # Every index LoadGen asked to load during the test (a performance run loads its
        # performance set once): the record the calibration's overlap is computed from.
        self._ever_loaded = np.zeros(dataset.count, dtype=bool)
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

    def loaded_indices(self) -> np.ndarray:
        """Sorted QSL indices LoadGen asked to load so far (int64)."""
        return np.flatnonzero(self._ever_loaded).astype(np.int64)

    def _load(self, indices: list[int]) -> None:
        try:
            self._ever_loaded[np.asarray(indices, dtype=np.int64)] = True
            self._stage(indices)
        except Exception as exc:
            log.error("staging samples failed: %s", exc)
            self.failure = self.failure or exc

    def _stage(self, indices: list[int]) -> None:
        indices_arr = np.asarray(indices, dtype=np.int64)
        # LoadGen may list a sample more than once; stage each once.
        new = np.unique(indices_arr[self.row_of_index[indices_arr] < 0])
        if len(new) > len(self._free_rows):
            raise RuntimeError(f"{len(new)} samples to stage but only {len(self._free_rows)} free "
                               f"staging rows of {self.performance_count}")
        for start in range(0, len(new), _STAGE_CHUNK):
            chunk = new[start:start + _STAGE_CHUNK]
            # Rows leave the free list only once their samples are staged: a failed load
            # or stage() leaves every row it was given free for the next load.
            rows = np.array(self._free_rows[len(self._free_rows) - len(chunk):][::-1], dtype=np.int64)
            self.backend.stage(rows, self.dataset.load(chunk))
            del self._free_rows[len(self._free_rows) - len(chunk):]
            self.row_of_index[chunk] = rows
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


def performance_sample_set(
    total_count: int, performance_count: int, qsl_rng_seed: int, scenario: str = "Offline"
) -> np.ndarray:
    """The QSL indices a performance run loads from `total_count` samples with
    `performance_count` performance samples and `qsl_rng_seed`: sorted, unique int64.

    Observed, not recomputed: LoadGen picks the set itself (GenerateLoadableSets; the
    algorithm has changed between LoadGen versions and uses the C++ library's shuffle), so
    this runs LoadGen once in performance mode, with a QSL that records what it is asked to
    load and a SUT that completes every query at once, logging to a temporary folder that
    is removed. A few tens of milliseconds; repeated calls are answered from memory.

    The set depends on these three numbers only, not on the scenario (the tests probe all
    four); `scenario` is there for that check. Call it only while no other LoadGen test is
    running in this process: LoadGen runs one test at a time.
    """
    if total_count < 1:
        raise ConfigError(f"the QSL must hold at least one sample, got {total_count}")
    if not 1 <= performance_count <= total_count:
        raise ConfigError(
            f"performance sample count must be in 1..{total_count} (the QSL's size), "
            f"got {performance_count}"
        )
    if scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    observed = _observe(int(total_count), int(performance_count), int(qsl_rng_seed), scenario)
    return np.array(observed, dtype=np.int64)


def index_set_sha256(indices: np.ndarray | list[int] | tuple[int, ...]) -> str:
    """sha256 of a set of sample indices (sorted, unique, int64 little-endian): compares a
    probed set with a loaded one, and keys caches, without storing every index."""
    unique = np.unique(np.asarray(indices, dtype=np.int64))
    return hashlib.sha256(unique.astype("<i8").tobytes()).hexdigest()


@functools.lru_cache(maxsize=16)
def _observe(total_count: int, performance_count: int, qsl_rng_seed: int, scenario: str) -> tuple[int, ...]:
    loaded: set[int] = set()

    def load(indices: list[int]) -> None:
        loaded.update(indices)  # MultiStream pads its set with repeats; a set drops them

    def unload(indices: list[int]) -> None:
        pass

    def issue(samples: list) -> None:
        lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in samples])

    def flush() -> None:
        pass

    # One query of one sample is all it takes: the set is loaded before the first query.
    values = {
        "qsl_rng_seed": qsl_rng_seed,
        "performance_sample_count_override": performance_count,
        "min_duration_ms": 0,
        "min_query_count": 1,
        "max_query_count": 1,
    }
    settings = build_test_settings(scenario, "performance", values)
    sut = lg.ConstructSUT(issue, flush)
    qsl = lg.ConstructQSL(total_count, performance_count, load, unload)
    try:
        with tempfile.TemporaryDirectory(prefix="deepgap-probe-") as folder:
            outdir = Path(folder)
            # A path that does not exist: no stray audit.config may change the probe.
            lg.StartTestWithLogSettings(sut, qsl, settings, build_log_settings(outdir),
                                        str(outdir / "audit.config"))
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    log.debug("probed LoadGen's performance set: %d of %d samples (qsl_rng_seed %d, %s)",
              len(loaded), total_count, qsl_rng_seed, scenario)
    return tuple(sorted(loaded))
