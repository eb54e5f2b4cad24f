"""Runs batches on a backend with several in flight, and reports each one finished.

Two threads: the dispatcher takes batches from a source and launches them (a CUDA
backend returns at once, so the next batch's copies and kernels queue behind it on
another stream); the completer waits for launched batches in order and hands their
results to `on_complete`. With one batch in flight the dispatcher completes each batch
itself and there is no completer. The backend bounds how many batches are in flight: its
`run_batch` blocks while all its slots are busy.

A failure never leaves samples outstanding: the failed batch and every later one are
completed with `top1=None`, so LoadGen drains quickly, and `failure` records the first
error for the runner to report.

Each batch's time from launch to done is recorded (`batch_time_summary`): when a latency
bound is missed, it tells compute from queueing, which call for different remedies.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from array import array
from typing import Callable

import numpy as np

from sut.backends.base import Backend, PendingBatch
from sut.batcher import Batch

log = logging.getLogger(__name__)

# Called once per batch: LoadGen ids, top-1 per sample (None when the batch failed).
CompleteFn = Callable[[list[int], "np.ndarray | None"], None]
RowsFn = Callable[[list[int]], np.ndarray]
_STOP = object()


class FailureRecord:
    """The first failure of a run, shared by every pipeline of it (sut/dispatch.py): once
    one backend instance fails, every instance completes what it is given as failed."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def record(self, exc: BaseException) -> bool:
        """Keep `exc` if it is the first; True when it was."""
        with self._lock:
            if self.error is None:
                self.error = exc
                return True
            return False


class BatchPipeline:
    def __init__(
        self,
        backend: Backend,
        next_batch: Callable[[], Batch | None],
        rows_for: RowsFn,
        on_complete: CompleteFn,
        name: str = "pipeline",
        failure: FailureRecord | None = None,
    ) -> None:
        self._backend = backend
        self._next_batch = next_batch
        self._rows_for = rows_for
        self._on_complete = on_complete
        # Bounded: at most the backend's in-flight slots plus one waiting to be reaped.
        self._launched: queue.Queue = queue.Queue(maxsize=backend.options.in_flight + 1)
        self._places = threading.Semaphore(max(1, backend.options.in_flight))
        self._failure = failure or FailureRecord()
        self.batches_run = 0
        self.samples_run = 0
        # Launch-to-done seconds of every batch; 8 bytes each, and LoadGen bounds the count.
        self.batch_seconds = array("d")
        # With one batch in flight nothing overlaps: a batch must finish before the next can
        # launch, so the dispatcher completes it itself. A completer thread would only add two
        # thread hand-offs per batch and one more thread competing for a small CPU's cores.
        self.completes_inline = backend.options.in_flight <= 1
        self._dispatcher = threading.Thread(target=self._dispatch, name=f"{name}-dispatch", daemon=True)
        self._threads = [self._dispatcher]
        if not self.completes_inline:
            self._threads.append(threading.Thread(target=self._complete, name=f"{name}-complete", daemon=True))

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the threads; the batch source must have returned None (closed)."""
        for thread in self._threads:
            thread.join(timeout)

    @property
    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    @property
    def failure(self) -> BaseException | None:
        return self._failure.error

    def _record_failure(self, exc: BaseException) -> None:
        if self._failure.record(exc):
            log.error("backend failed: %s: %s", type(exc).__name__, exc)

    def _dispatch(self) -> None:
        if self.completes_inline:
            while (batch := self._next_batch()) is not None:
                self.run_inline(batch)
            return
        try:
            while True:
                self._places.acquire()
                batch = self._next_batch()
                if batch is None:
                    break
                if self.failure is not None:
                    self._launched.put((batch, None, 0.0))
                    continue
                launched_at = time.perf_counter()
                try:
                    pending = self._backend.run_batch(self._rows_for(batch.indices))
                except Exception as exc:  # complete the batch, then report: LoadGen must not hang
                    self._record_failure(exc)
                    pending = None
                self._launched.put((batch, pending, launched_at))
        finally:
            self._launched.put(_STOP)

    def run_inline(self, batch: Batch) -> None:
        """Run one batch on the caller's thread and complete it: the minimal-latency path
        for SingleStream and MultiStream, where LoadGen issues the next query only after
        this one completes, so there is nothing to overlap and every thread hop is latency."""
        pending = None
        launched_at = time.perf_counter()
        if self.failure is None:
            try:
                pending = self._backend.run_batch(self._rows_for(batch.indices))
            except Exception as exc:
                self._record_failure(exc)
        self._finish(batch, pending, launched_at)

    def _complete(self) -> None:
        while True:
            item = self._launched.get()
            if item is _STOP:
                return
            batch, pending, launched_at = item
            self._finish(batch, pending, launched_at)
            self._places.release()

    def _finish(self, batch: Batch, pending: PendingBatch | None, launched_at: float) -> None:
        top1 = None
        if pending is not None:
            try:
                top1 = pending.wait()
                self.batch_seconds.append(time.perf_counter() - launched_at)
            except Exception as exc:
                self._record_failure(exc)
        try:
            self._on_complete(batch.ids, top1)
        except Exception as exc:  # a dead completer would block the dispatcher forever
            self._record_failure(exc)
        finally:
            if pending is not None:
                pending.release()
        self.batches_run += 1
        self.samples_run += len(batch.ids)


def batch_time_summary(seconds: array) -> dict[str, float | int] | None:
    """p50, p99 and max of the batches' launch-to-done times in ms, and how many; None
    before any batch finished. With several batches in flight a batch's time includes its
    wait behind the batches launched before it on the device."""
    if not seconds:
        return None
    ms = np.frombuffer(seconds, dtype=np.float64) * 1e3
    p50, p99 = np.percentile(ms, [50, 99])
    return {"p50": round(float(p50), 4), "p99": round(float(p99), 4), "max": round(float(ms.max()), 4),
            "count": int(ms.size)}
