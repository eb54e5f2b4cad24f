"""The CUDA slot machinery the torch and TensorRT backends share.

A slot is one batch in flight: its own CUDA stream and completion event, pinned row-number
and top-1 buffers (with numpy views made once), device row numbers, the pinned and device
input buffers of host staging, and with CUDA graphs one captured graph per batch bucket
(`batch_buckets`) in one memory pool. `CudaSlotBackend` keeps the free slots, turns a
batch into a slot launch (row numbers in, a graph replay or an ungraphed run, the event
recorded) and hands back a pending result that frees the slot when released. What runs
inside a batch is the backend's: `_batch_body` (and `_run_ungraphed` without graphs).
"""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plumbing.errors import BackendError
from sut.backends.base import Backend, DonePending, staged_rows


def batch_buckets(max_batch: int) -> list[int]:
    """Batch sizes that get a CUDA graph; a batch runs in the smallest bucket that fits.

    1, 2, 4, 8, then four steps per doubling (10, 12, 14, 16, 20, 24, ...), capped by
    max_batch: padding wastes at most a fifth of a batch. Coarser (power-of-two) buckets
    waste up to half, which under Server load turns spare capacity into queueing.
    """
    buckets = [b for b in (1, 2, 4, 8) if b < max_batch]
    power = 8
    while power < max_batch:
        step = power // 4
        buckets.extend(b for b in range(power + step, 2 * power + 1, step) if b < max_batch)
        power *= 2
    buckets.append(max_batch)
    return buckets


@dataclass
class CudaSlot:
    stream: Any
    event: Any
    idx_host: Any  # pinned int64 (max_batch,)
    idx_dev: Any  # device int64 (max_batch,)
    out_host: Any  # pinned int32 (max_batch,)
    idx_np: Any = None  # numpy views of the pinned buffers, made once
    out_np: Any = None
    in_host: Any = None  # host staging only: pinned input rows, the backend's layout and dtype
    in_dev: Any = None  # device input rows (host staging; TensorRT always: the engine reads it)
    graphs: dict[int, Any] = field(default_factory=dict)  # bucket -> CUDAGraph
    pool: Any = None


def new_slot(torch: Any, device: Any, max_batch: int, slot_type: type[CudaSlot] = CudaSlot,
             **buffers: Any) -> CudaSlot:
    """A slot's stream, event and row/top-1 buffers on `device`; `buffers` are the
    backend's own fields (input buffers, TensorRT's logits)."""
    slot = slot_type(
        stream=torch.cuda.Stream(device),
        event=torch.cuda.Event(),
        idx_host=torch.zeros(max_batch, dtype=torch.int64, pin_memory=True),
        idx_dev=torch.zeros(max_batch, dtype=torch.int64, device=device),
        out_host=torch.zeros(max_batch, dtype=torch.int32, pin_memory=True),
        **buffers,
    )
    slot.idx_np, slot.out_np = slot.idx_host.numpy(), slot.out_host.numpy()
    return slot


class SlotPending:
    """A launched batch: `wait` returns its top-1 once the slot's event has fired,
    `release` gives the slot back (after LoadGen has copied the responses)."""

    def __init__(self, free: queue.Queue, slot: CudaSlot, count: int) -> None:
        self._free = free
        self._slot = slot
        self._count = count

    def wait(self) -> np.ndarray:
        self._slot.event.synchronize()
        return self._slot.out_np[: self._count]

    def release(self) -> None:
        self._free.put(self._slot)


class CudaSlotBackend(Backend):
    """A backend whose CUDA batches run in slots. Subclasses set `_torch`, `_staged`
    (the staged samples, on the device or pinned on the host) and build their slots with
    `_reset_slots`, `new_slot` and `_add_slot`, capturing graphs with `_capture`."""

    _torch: Any = None
    _staged: Any = None

    def _reset_slots(self) -> None:
        self._slots: list[CudaSlot] = []
        self._free_slots: queue.Queue = queue.Queue()
        max_batch = self.options.max_batch
        buckets = batch_buckets(max_batch)
        self._bucket_for = [0] + [next(b for b in buckets if b >= n) for n in range(1, max_batch + 1)]

    def _add_slot(self, slot: CudaSlot) -> None:
        self._slots.append(slot)

    def _open_slots(self) -> None:
        """Every slot built: make them free to take."""
        for slot in self._slots:
            self._free_slots.put(slot)

    def _capture(self, slot: CudaSlot, bucket: int, warmups: int, *body_args: Any) -> Any:
        """One CUDA graph of `_batch_body(slot, bucket, *body_args)` in the slot's pool,
        after `warmups` runs on the slot's stream outside the capture (cuDNN autotuning,
        TensorRT's shape-dependent setup)."""
        torch = self._torch
        with torch.cuda.stream(slot.stream):
            for _ in range(warmups):
                self._batch_body(slot, bucket, *body_args)
        slot.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=slot.pool, stream=slot.stream):
            self._batch_body(slot, bucket, *body_args)
        return graph

    def _batch_body(self, slot: CudaSlot, count: int, *args: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _run_ungraphed(self, slot: CudaSlot, count: int) -> None:
        self._batch_body(slot, count)

    def _run_in_slot(self, rows: np.ndarray) -> SlotPending | DonePending:
        """Take a free slot (blocking while all are in flight), launch the batch in it."""
        count = len(rows)
        if count == 0:
            return DonePending(np.empty(0, dtype=np.int32))
        if count > self.options.max_batch:
            raise BackendError(f"batch of {count} exceeds max batch {self.options.max_batch}")
        rows = staged_rows(rows, self._staged.shape[0])
        slot = self._free_slots.get()
        try:
            self._launch(slot, rows, count)
        except BaseException:
            self._free_slots.put(slot)
            raise
        return SlotPending(self._free_slots, slot, count)

    def _launch(self, slot: CudaSlot, rows: np.ndarray, count: int) -> None:
        torch = self._torch
        self._fill_rows(slot, rows)
        # Entries past `count` keep earlier, valid rows or pixels: bucket padding computes
        # throwaway results instead of reading out of bounds.
        with torch.cuda.stream(slot.stream):
            if slot.graphs:
                slot.graphs[self._bucket_for[count]].replay()
            else:
                self._run_ungraphed(slot, count)
            slot.event.record(slot.stream)

    def _fill_rows(self, slot: CudaSlot, rows: np.ndarray) -> None:
        """Put a batch's checked rows (from `staged_rows` or `tight_loop_rows`, the only way
        rows reach a slot) into the slot's row buffer, or with host staging their pixels
        into its pinned input buffer."""
        if slot.in_host is not None:
            self._torch.index_select(self._staged, 0, self._torch.from_numpy(rows), out=slot.in_host[: len(rows)])
        else:
            slot.idx_np[: len(rows)] = rows

    def _time_in_slot(self, rows: np.ndarray, iterations: int) -> float:
        """Seconds for `iterations` back-to-back batches of `rows` in one slot, timed with
        CUDA events on its stream after one untimed batch: the bucket's graph replayed where
        the batch size has one, else the ungraphed run."""
        torch = self._torch
        count = len(rows)
        slot = self._free_slots.get()
        try:
            self._fill_rows(slot, rows)
            graph = slot.graphs.get(count)
            run = graph.replay if graph is not None else (lambda: self._run_ungraphed(slot, count))
            with torch.cuda.stream(slot.stream):
                run()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record(slot.stream)
                for _ in range(iterations):
                    run()
                end.record(slot.stream)
            end.synchronize()
            return start.elapsed_time(end) / 1000.0
        finally:
            self._free_slots.put(slot)
