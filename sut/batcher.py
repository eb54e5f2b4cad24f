"""Dynamic batching, independent of models and of LoadGen.

Samples arrive one query at a time; `DynamicBatcher` hands out batches of at most
`max_batch` samples. An incomplete batch is held until its oldest sample has waited
`timeout_s` (Triton's max_queue_delay), so light load keeps latency low and heavy load
fills batches. With `timeout_s == 0` it is greedy: whatever is queued goes at once, which
is what Offline wants (one huge query split into full max-batch chunks).
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

Clock = Callable[[], float]


@dataclass(frozen=True)
class Batch:
    ids: list[int]  # LoadGen response ids
    indices: list[int]  # QSL sample indices
    oldest_arrival: float


class DynamicBatcher:
    def __init__(
        self,
        max_batch: int,
        timeout_s: float,
        clock: Clock = time.monotonic,
        max_queued: int = 100_000_000,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if timeout_s < 0:
            raise ValueError("timeout_s must be >= 0")
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self._clock = clock
        self._max_queued = max_queued
        # One entry per put(): [ids, indices, arrival, next unread position]. Keeping
        # LoadGen's lists whole makes put() O(1) even for an Offline query of millions.
        self._chunks: collections.deque[list] = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closed = False

    def put(self, ids: Sequence[int], indices: Sequence[int]) -> None:
        if not ids:
            return
        now = self._clock()
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed")
            if self._queued + len(ids) > self._max_queued:
                # A bound, not back-pressure: LoadGen cannot be slowed, so overflowing means
                # the SUT is hopelessly behind. Fail loudly rather than eat all memory.
                raise OverflowError(f"more than {self._max_queued} samples queued")
            self._chunks.append([ids, indices, now, 0])
            self._queued += len(ids)
            self._cond.notify()

    def close(self) -> None:
        """No more samples; `get` drains what is queued, then returns None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        return self._queued

    def poll(self, now: float) -> Batch | float | None:
        """Decide at time `now`: a Batch to run, else the time at which to decide again
        (float), else None when nothing is queued."""
        with self._cond:
            return self._poll_locked(now)

    def _poll_locked(self, now: float) -> Batch | float | None:
        if not self._queued:
            return None
        deadline = self._chunks[0][2] + self.timeout_s
        if self._queued >= self.max_batch or now >= deadline or self._closed:
            return self._pop_locked()
        return deadline

    def _pop_locked(self) -> Batch:
        ids: list[int] = []
        indices: list[int] = []
        oldest = self._chunks[0][2]
        while self._chunks and len(ids) < self.max_batch:
            chunk = self._chunks[0]
            start = chunk[3]
            stop = min(len(chunk[0]), start + self.max_batch - len(ids))
            ids.extend(chunk[0][start:stop])
            indices.extend(chunk[1][start:stop])
            if stop == len(chunk[0]):
                self._chunks.popleft()
            else:
                chunk[3] = stop
        self._queued -= len(ids)
        return Batch(ids=ids, indices=indices, oldest_arrival=oldest)

    def get(self) -> Batch | None:
        """Block until a batch is due; None once closed and drained."""
        with self._cond:
            while True:
                decision = self._poll_locked(self._clock())
                if isinstance(decision, Batch):
                    return decision
                if decision is None:
                    if self._closed:
                        return None
                    self._cond.wait()
                else:
                    self._cond.wait(timeout=max(0.0, decision - self._clock()))
