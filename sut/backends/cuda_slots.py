"""The CUDA slot machinery the torch and TensorRT backends share.

A slot is one batch in flight: its own CUDA stream and completion event, pinned row-number
and top-1 buffers (with numpy views made once), device row numbers, the pinned and device
input buffers of host staging, and with CUDA graphs one captured graph per batch bucket
(`batch_buckets`) in one memory pool. `CudaSlotBackend` keeps the free slots, turns a
batch into a slot launch (row numbers in, a graph replay or an ungraphed run, the event
recorded) and hands back a pending result that frees the slot when released. What runs
inside a batch is the backend's: `_batch_body` (and `_run_ungraphed` without graphs).

Slots belong to a generation: dropping them (re-staging, close) starts a new one, and a
pending result of an older generation gives nothing back when released, so a dead slot
never reaches the new free queue. Re-staging is refused while a batch is out, and waits
for the GPU before the slots' buffers go.
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
    `release` gives the slot back (after LoadGen has copied the responses); a second
    release, or one after the slots were dropped, gives nothing back."""

    def __init__(self, owner: "CudaSlotBackend", slot: CudaSlot, count: int, generation: int) -> None:
        self._owner = owner
        self._slot = slot
        self._count = count
        self._generation = generation
        self._released = False

    def wait(self) -> np.ndarray:
        self._slot.event.synchronize()
        return self._slot.out_np[: self._count]

    def release(self) -> None:
        if self._released:  # twice would list the slot twice: two batches in one slot
            return
        self._released = True
        self._owner._return_slot(self._slot, self._generation)


class CudaSlotBackend(Backend):
    """A backend whose CUDA batches run in slots. Subclasses set `_torch`, `_staged`
    (the staged samples, on the device or pinned on the host) and build their slots with
    `_reset_slots`, `new_slot` and `_add_slot`, capturing graphs with `_capture`."""

    _torch: Any = None
    _staged: Any = None
    _device: Any = None
    _slot_generation: int = 0

    def _reset_slots(self) -> None:
        self._slot_generation += 1  # releases of the slots dropped here become no-ops
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

    def _return_slot(self, slot: CudaSlot, generation: int) -> None:
        if generation == self._slot_generation:
            self._free_slots.put(slot)
        # else: its generation was dropped (re-staging, close); the slot is dead

    def _slots_out(self) -> int:
        """Batches launched and not yet released."""
        return len(self._slots) - self._free_slots.qsize() if self._slots else 0

    def _retire_slots(self, refuse_in_flight: bool = True) -> None:
        """Before the slots are dropped: refuse while a batch is out (its caller still reads
        the slot's buffers; re-staging mid-run is a caller's bug), then wait for the GPU so
        no kernel still uses the buffers about to be freed. close() passes
        refuse_in_flight=False: it drops them regardless, and late releases are no-ops."""
        out = self._slots_out()
        if out and refuse_in_flight:
            raise BackendError(
                f"cannot re-stage with {out} batch(es) in flight: release every pending batch first"
            )
        if self._slots and self._torch is not None:
            self._torch.cuda.synchronize(self._device)

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
        # thread_local: only this thread's capture-unsafe CUDA calls invalidate the capture.
        # "global" (the default) also fails it when any other thread of the process makes one
        # meanwhile (a cudaMalloc, a synchronize). torch.cuda.graph takes the keyword since 2.1.
        with torch.cuda.graph(graph, pool=slot.pool, stream=slot.stream, capture_error_mode="thread_local"):
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
        generation = self._slot_generation
        slot = self._free_slots.get()
        try:
            self._launch(slot, rows, count)
        except BaseException:
            self._return_slot(slot, generation)
            raise
        return SlotPending(self, slot, count, generation)

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
        generation = self._slot_generation
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
            self._return_slot(slot, generation)
