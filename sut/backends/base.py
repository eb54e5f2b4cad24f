"""The backend interface: load a model, stage inputs, run a batch, describe itself.

A backend knows nothing of LoadGen or of batching policy. The SUT hands it rows of its
staging buffer; it returns a `PendingBatch` whose `wait()` yields the top-1 class of each
row as int32. CUDA backends return before the batch finishes so several batches overlap.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
MODELS = ("resnet18", "resnet50", "resnet101")


@dataclass(frozen=True)
class ModelSpec:
    """What network to run and with which weights."""

    name: str
    precision: str
    weights: str = "seeded"  # "seeded", "torchvision" or a path to a state dict
    seed: int = 0
    image_size: int = 224
    num_classes: int = 1000


@dataclass(frozen=True)
class BackendOptions:
    """How to run it. Resolved from profile YAML and CLI before any backend is built."""

    device: str = "cpu"  # "cpu" or "cuda" (optionally "cuda:N")
    max_batch: int = 1
    in_flight: int = 1  # batches allowed in flight at once (CUDA streams)
    cuda_graphs: bool = True
    channels_last: bool = True
    compile: str = "none"  # sut.compiling.COMPILE_MODES: "none" (eager), "default", "max-autotune"
    staging: str = "device"  # "device" (GPU-resident) or "host" (pinned host memory)
    threads: int | None = None  # CPU intra-op threads; None keeps the runtime's default
    extra: dict[str, Any] = field(default_factory=dict)


class PendingBatch(Protocol):
    """A batch that was launched. `wait` blocks until its results are on the host."""

    def wait(self) -> np.ndarray:
        """Top-1 class per row, int32, valid until `release`."""
        ...

    def release(self) -> None:
        """Give the batch's buffers back to the backend."""
        ...


class DonePending:
    """A batch that finished synchronously (CPU backends)."""

    def __init__(self, top1: np.ndarray) -> None:
        self._top1 = top1

    def wait(self) -> np.ndarray:
        return self._top1

    def release(self) -> None:
        pass


def staged_rows(rows: np.ndarray, staged: int) -> np.ndarray:
    """`rows` as int64, each a row of the `staged`-row staging buffer. A row outside it
    (-1 for an unstaged sample) would make a CUDA graph's gather read out of bounds, an
    illegal address that kills the CUDA context; it fails the batch instead."""
    from plumbing.errors import BackendError

    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= staged):
        raise BackendError(f"batch rows {rows.min()}..{rows.max()} outside the {staged} staged samples")
    return rows


def tight_loop_rows(batch_size: int, staged: int, max_batch: int | None = None) -> np.ndarray:
    """The rows a tight loop of `batch_size` runs: 0, 1, 2, ... wrapping round the `staged`
    rows when a batch is larger than the staged set, as LoadGen's Offline query repeats
    samples when the performance set is smaller than a batch. Reading rows 0..batch_size-1
    regardless sent rows past a 96-sample staging buffer into a CUDA graph's gather (a
    device-side assert that killed the process); every backend's tight loop takes its rows
    from here, through the same check as `run_batch`."""
    from plumbing.errors import BackendError

    if staged < 1:
        raise BackendError("no staged samples to time (allocate_staging and stage first)")
    if batch_size < 1 or (max_batch is not None and batch_size > max_batch):
        limit = f"1..{max_batch}" if max_batch is not None else "at least 1"
        raise BackendError(f"tight loop batch size {batch_size} must be {limit} (the max batch)")
    return staged_rows(np.arange(batch_size) % staged, staged)


class Backend(abc.ABC):
    """One inference runtime. Subclasses are registered by name in `sut.backends`."""

    name: ClassVar[str]

    def __init__(self, model: ModelSpec, options: BackendOptions) -> None:
        self.model = model
        self.options = options

    @abc.abstractmethod
    def load(self) -> None:
        """Build or load the network and warm it up. Raises BackendError."""

    @abc.abstractmethod
    def allocate_staging(self, capacity: int) -> None:
        """Reserve room for `capacity` preprocessed samples (the performance set)."""

    @abc.abstractmethod
    def stage(self, rows: np.ndarray, samples: np.ndarray) -> None:
        """Prepare inputs: copy float32 NCHW `samples` into staging rows `rows`."""

    @abc.abstractmethod
    def run_batch(self, rows: np.ndarray) -> PendingBatch:
        """Run the staged samples at `rows` (int64). May return before the work is done."""

    @abc.abstractmethod
    def time_tight_loop(self, batch_size: int, iterations: int) -> float:
        """Seconds for `iterations` back-to-back batches of `batch_size` staged rows (from
        `tight_loop_rows`: a batch larger than the staged set repeats rows), through the
        backend's own fastest path (no harness in between)."""

    def logits(self, samples: np.ndarray) -> np.ndarray:
        """float32 logits for float32 NCHW `samples`, through the same network and precision
        as `run_batch` (not necessarily the same graphs): what the accuracy gate compares."""
        from plumbing.errors import BackendError

        raise BackendError(f"the {self.name} backend does not expose logits")

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Versions, device and options actually in effect, for results and reports."""

    def instances(self) -> list[Backend]:
        """The backends that run batches: itself, or a pool's members (instance_pool.py),
        each given a pipeline of its own by the SUT."""
        return [self]

    def close(self) -> None:
        """Free device resources. Safe to call twice."""
