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
        max_queued: int = 1_000_000,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if timeout_s < 0:
            raise ValueError("timeout_s must be >= 0")
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self._clock = clock
        self._max_queued = max_queued
        # (id, index, arrival) per sample; one deque keeps put() cheap on LoadGen's thread.
        self._queue: collections.deque[tuple[int, int, float]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, ids: Sequence[int], indices: Sequence[int]) -> None:
        now = self._clock()
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed")
            if len(self._queue) + len(ids) > self._max_queued:
                # A bound, not back-pressure: LoadGen cannot be slowed, so overflowing means
                # the SUT is hopelessly behind. Fail loudly rather than eat all memory.
                raise OverflowError(f"more than {self._max_queued} samples queued")
            self._queue.extend(zip(ids, indices, [now] * len(ids)))
            self._cond.notify()

    def close(self) -> None:
        """No more samples; `get` drains what is queued, then returns None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._queue)

    def poll(self, now: float) -> Batch | float | None:
        """Decide at time `now`: a Batch to run, else the time at which to decide again
        (float), else None when nothing is queued. Caller must hold no lock; pure in `now`."""
        with self._cond:
            return self._poll_locked(now)

    def _poll_locked(self, now: float) -> Batch | float | None:
        if not self._queue:
            return None
        deadline = self._queue[0][2] + self.timeout_s
        if len(self._queue) >= self.max_batch or now >= deadline or self._closed:
            return self._pop_locked()
        return deadline

    def _pop_locked(self) -> Batch:
        count = min(self.max_batch, len(self._queue))
        popped = [self._queue.popleft() for _ in range(count)]
        return Batch(
            ids=[p[0] for p in popped],
            indices=[p[1] for p in popped],
            oldest_arrival=popped[0][2],
        )

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
