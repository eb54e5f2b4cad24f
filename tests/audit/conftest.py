"""Backend-level test doubles and a shared, real submission-run tree.

The doubles are Backends, not LoadGen mocks: LoadGen, the SUT, the QSL and the logs are
all real. Each batch of the paced backend costs a fixed sleep, so latency figures are
stable enough on a busy 2-core machine for the 10% comparisons the compliance tests make.
"""

from __future__ import annotations

import functools
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from audit.submission import SubmissionOutcome, run_submission
from runs.accuracy import reference_top1
from runs.config import CliRequest, model_spec, resolve
from runs.runner import backend_options
from sut.backends.base import Backend, BackendOptions, DonePending, ModelSpec
from sut.backends.null_backend import NullBackend, checksum_class
from sut.data import Dataset, SyntheticDataset
from tests.conftest import cpu_system

# 40 ms per query: on a busy 2-core machine a waking thread can wait a few ms for a core,
# which must stay well inside the compliance tests' 10% at the 90th percentile. 64 queries
# (the fewest for which SingleStream's early stopping can succeed) take about 2.6 s.
DELAY_S = 0.040
SAMPLES = 32
SUBMISSION = dict(
    gpu="cpu", model="resnet18", image_size=32, dataset_count=SAMPLES, backend="null",
    scenario="SingleStream", min_duration_ms=300, min_query_count=64,
)
SYSTEM_DIR = Path("results") / cpu_system("null", "fp32") / "resnet18" / "SingleStream"


class PacedBackend(NullBackend):
    """Answers the pixel checksum after a fixed delay per batch: an honest, slow SUT."""

    def run_batch(self, rows: np.ndarray):
        time.sleep(DELAY_S)
        return super().run_batch(rows)

    def time_tight_loop(self, batch_size: int, iterations: int) -> float:
        start = time.perf_counter()
        for _ in range(iterations):
            self.run_batch(np.arange(batch_size))
        return time.perf_counter() - start


class CachingBackend(PacedBackend):
    """Remembers its last batch and answers a repeat of it without doing the work: the
    response caching TEST04 exists to catch."""

    def allocate_staging(self, capacity: int) -> None:
        super().allocate_staging(capacity)
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # rows are reassigned per run

    def run_batch(self, rows: np.ndarray):
        if self._last is not None and np.array_equal(self._last[0], rows):
            return DonePending(self._last[1])
        top1 = super().run_batch(rows).wait().copy()
        self._last = (rows.copy(), top1)
        return DonePending(top1)


class InconsistentBackend(PacedBackend):
    """Answers change with every batch it runs, so the same sample gets different answers
    in the accuracy run and in TEST01's performance run."""

    def load(self) -> None:
        super().load()
        self._batches = 0

    def run_batch(self, rows: np.ndarray):
        self._batches += 1
        top1 = super().run_batch(rows).wait()
        return DonePending(((top1 + self._batches) % self.model.num_classes).astype(np.int32))


class ReferenceBackend(PacedBackend):
    """Answers the FP32 reference model's top-1 (`answers`: pixels -> class), except that
    after its first run, the accuracy run, each sample in `flipped` answers another class:
    a few of them are fp16's batch-dependent flips of near-tied classes, many are a SUT
    whose performance-mode answers are wrong."""

    def __init__(self, model: ModelSpec, options: BackendOptions, answers: dict[bytes, int],
                 flipped: frozenset[bytes] = frozenset()) -> None:
        super().__init__(model, options)
        self._reference, self._flipped, self._runs = answers, flipped, 0

    def allocate_staging(self, capacity: int) -> None:
        super().allocate_staging(capacity)
        self._runs += 1  # once per run, by its QSL

    def stage(self, rows: np.ndarray, samples: np.ndarray) -> None:
        keys = [sample.tobytes() for sample in samples]
        answers = [self._reference[key] for key in keys]
        if self._runs > 1:
            answers = [(a + 1) % self.model.num_classes if key in self._flipped else a for key, a in zip(keys, answers)]
        self._answers[rows] = answers


class LabelledSynthetic(SyntheticDataset):
    """Synthetic images labelled with their pixel checksum: the null-like backends score
    100% against these labels, and no FP32 torch reference is needed to score them."""

    def labels(self) -> np.ndarray:
        return checksum_class(self.load(np.arange(self.count)))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "labels": "pixel checksums (test double)"}


def submit(output: Path, backend_cls: Callable[..., Backend] = PacedBackend, alternate_seeds: bool = False,
           dataset: Dataset | None = None, **overrides: Any) -> SubmissionOutcome:
    request = CliRequest(**{**SUBMISSION, "output": output, **overrides})
    config = resolve(request)
    backend = backend_cls(model_spec(config), backend_options(config))
    backend.load()
    return run_submission(request, show_progress=False, backend=backend,
                          dataset=dataset or LabelledSynthetic(count=SAMPLES, image_size=32),
                          alternate_seeds=alternate_seeds)


# TEST01 Part III runs: Offline, so that every one of the samples is logged many times over
# and a single flipped sample is a known 1/128 of the logged ones (within MLPerf's 1%).
PART3_SAMPLES = 128
PART3 = dict(scenario="Offline", dataset_count=PART3_SAMPLES, max_batch=64, min_duration_ms=600)


@pytest.fixture(scope="session")
def fp32_answers() -> dict[bytes, int]:
    """Pixels -> the FP32 (seeded) reference model's top-1, for Part III's synthetic data."""
    config = resolve(CliRequest(**{**SUBMISSION, **PART3, "output": Path("unused")}))
    dataset = SyntheticDataset(count=PART3_SAMPLES, image_size=32)
    top1 = reference_top1(model_spec(config), dataset, "cpu")
    samples = dataset.load(np.arange(PART3_SAMPLES))
    return {sample.tobytes(): int(cls) for sample, cls in zip(samples, top1)}


def submit_flipping(output: Path, answers: dict[bytes, int], flips: int) -> SubmissionOutcome:
    """A Part III rehearsal: synthetic data without labels, seeded weights, and a SUT that
    answers as the FP32 reference does except on `flips` samples after the accuracy run."""
    dataset = SyntheticDataset(count=PART3_SAMPLES, image_size=32)
    flipped = frozenset(sample.tobytes() for sample in dataset.load(np.arange(flips)))
    factory = functools.partial(ReferenceBackend, answers=answers, flipped=flipped)
    return submit(output, factory, dataset=dataset, **PART3)


@pytest.fixture(scope="session")
def part3_submission(tmp_path_factory: pytest.TempPathFactory, fp32_answers) -> SubmissionOutcome:
    """One sample of 128 flips between the accuracy and the performance runs: TEST01's byte
    comparison fails, Part III passes (delta 0.787%). Shared read-only."""
    return submit_flipping(tmp_path_factory.mktemp("part3") / "out", fp32_answers, flips=1)


@pytest.fixture(scope="session")
def good_submission(tmp_path_factory: pytest.TempPathFactory) -> SubmissionOutcome:
    """One honest submission run (quick profile, with the optional TEST05), shared
    read-only: copy before editing."""
    return submit(tmp_path_factory.mktemp("good") / "out", alternate_seeds=True)


def copy_tree(outcome: SubmissionOutcome, destination: Path) -> Path:
    """A private copy of a shared submission's output root."""
    shutil.copytree(outcome.scenario_dir.parents[3], destination)
    return destination


@pytest.fixture
def good_tree(good_submission: SubmissionOutcome, tmp_path: Path) -> Path:
    """A private copy of the honest submission's output root."""
    return copy_tree(good_submission, tmp_path / "tree")


@pytest.fixture
def part3_tree(part3_submission: SubmissionOutcome, tmp_path: Path) -> Path:
    """A private copy of the Part III submission's output root."""
    return copy_tree(part3_submission, tmp_path / "part3")
