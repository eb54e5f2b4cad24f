"""LoadGen system under test: issue -> batching -> backend -> QuerySamplesComplete.

Server and Offline queries go through a `DynamicBatcher` (Offline with a zero timeout,
so its one large query leaves as full max-batch chunks) into a `BatchPipeline` that keeps
several batches in flight, one pipeline per backend instance (sut/dispatch.py).
SingleStream and MultiStream run each query inline as one batch: LoadGen issues the next
query only after this one completes, so any hand-off to another thread would only add
latency.
"""

from __future__ import annotations

import logging
import threading
import time

import mlperf_loadgen as lg
import numpy as np

from sut.backends.base import Backend
from sut.batcher import Batch, DynamicBatcher
from sut.dispatch import PipelineGroup
from sut.qsl import LoadgenQSL

log = logging.getLogger(__name__)

INLINE_SCENARIOS = ("SingleStream", "MultiStream")
# Response for samples whose batch failed: never a valid class, visible in accuracy logs.
FAILED_RESPONSE = np.array([-1], dtype=np.int32)


class LoadgenSUT:
    def __init__(
        self,
        backend: Backend,
        qsl: LoadgenQSL,
        scenario: str,
        batch_timeout_us: int,
        max_batch: int | None = None,
    ) -> None:
        self.scenario = scenario
        self.qsl = qsl
        self.inline = scenario in INLINE_SCENARIOS
        timeout_s = 0.0 if scenario == "Offline" else batch_timeout_us / 1e6
        # A backend loaded for a larger batch (one backend shared by a sweep over batch
        # sizes) runs this run's batches no larger than `max_batch`.
        limit = backend.options.max_batch if max_batch is None else min(max_batch, backend.options.max_batch)
        self.batcher = DynamicBatcher(limit, timeout_s)
        # One pipeline per backend instance (--gpus, --instances), all fed by this batcher.
        self.pipeline = PipelineGroup(
            backend.instances(),
            next_batch=self.batcher.get,
            rows_for=qsl.rows_for,
            on_complete=self._complete,
            name=f"sut-{scenario}",
        )
        self.samples_completed = 0
        self.samples_failed = 0  # completed with FAILED_RESPONSE: their batch failed
        self._counts = threading.Lock()
        # time.monotonic() of LoadGen's first issue: where the timed part of the test begins.
        self.first_issue_at: float | None = None
        self.issue_failure: BaseException | None = None
        self.handle = lg.ConstructFastSUT(self._issue, self._flush)
        if not self.inline:
            self.pipeline.start()

    @property
    def failure(self) -> BaseException | None:
        return self.issue_failure or self.pipeline.failure or self.qsl.failure

    def _issue(self, ids: list[int], indices: list[int]) -> None:
        if self.first_issue_at is None:
            self.first_issue_at = time.monotonic()
        try:
            if self.inline:
                self.pipeline.run_inline(Batch(ids=ids, indices=indices, oldest_arrival=0.0))
            else:
                self.batcher.put(ids, indices)
        except Exception as exc:  # never raise into LoadGen; complete what we were given
            log.error("issue failed: %s", exc)
            self.issue_failure = self.issue_failure or exc
            self._complete(list(ids), None)

    def _flush(self) -> None:
        pass

    def _complete(self, ids: list[int], top1: np.ndarray | None) -> None:
        if top1 is None:
            ptr, size = FAILED_RESPONSE.ctypes.data, FAILED_RESPONSE.nbytes
            responses = [lg.QuerySampleResponse(i, ptr, size) for i in ids]
        else:
            # One 4-byte int32 per sample, pointing into `top1`, which stays alive (and
            # unreused by the backend) until QuerySamplesComplete has copied what it logs.
            base = top1.ctypes.data
            responses = [lg.QuerySampleResponse(i, base + 4 * k, 4) for k, i in enumerate(ids)]
        lg.QuerySamplesComplete(responses)
        with self._counts:  # several instances' completers count here at once
            self.samples_completed += len(ids)
            if top1 is None:
                self.samples_failed += len(ids)

    def shutdown(self) -> None:
        """Stop the worker threads and free LoadGen's handle; leaves no thread behind."""
        self.batcher.close()
        if not self.inline:
            self.pipeline.join(timeout=60)
            if self.pipeline.alive:
                log.error("SUT worker threads did not stop within 60 s")
        if self.handle is not None:
            lg.DestroyFastSUT(self.handle)
            self.handle = None
