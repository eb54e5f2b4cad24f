"""Batches from one source across several backend instances (--gpus, --instances).

Each instance runs its own `BatchPipeline` (its own threads, in-flight places and
completion), so instances never share a batch and a slow one never blocks another's
completions. An instance asks for the next batch only when it has a free place, and of the
instances asking, the least loaded (fewest batches in flight, then fewest taken so far)
takes it: a batch never waits behind a busy device while another device is idle, and
equally loaded devices take turns. Every batch is handed to exactly one instance.

A failure on any instance is recorded once for all (`FailureRecord`): every pipeline then
completes what it is given as failed, so LoadGen drains and the run ends.

SingleStream and MultiStream run inline on LoadGen's thread; there, queries take turns
over the instances, which all do the same work.
"""

from __future__ import annotations

import threading
from array import array
from typing import Any, Callable

from sut.backends.base import Backend
from sut.batcher import Batch
from sut.pipeline import BatchPipeline, CompleteFn, FailureRecord, RowsFn

BatchSource = Callable[[], "Batch | None"]


class LeastLoaded:
    """Which of the instances waiting for a batch takes the next one. One takes at a time:
    the others wait until it has its batch (or the source has closed)."""

    def __init__(self, count: int) -> None:
        self.in_flight = [0] * count
        self.taken = [0] * count
        self._waiting: set[int] = set()
        self._taking = False
        self._cond = threading.Condition()

    def take(self, member: int, source: BatchSource) -> Batch | None:
        with self._cond:
            self._waiting.add(member)
            while self._taking or self._next_in_line() != member:
                self._cond.wait()
            self._waiting.discard(member)
            self._taking = True
        batch = None
        try:
            batch = source()
        finally:
            with self._cond:
                self._taking = False
                if batch is not None:
                    self._assign(member)
                self._cond.notify_all()
        return batch

    def _next_in_line(self) -> int:
        return min(self._waiting, key=lambda m: (self.in_flight[m], self.taken[m], m))

    def _assign(self, member: int) -> None:
        self.in_flight[member] += 1
        self.taken[member] += 1

    def claim_least_taken(self) -> int:
        """The instance that has taken fewest batches, with one more counted as its: the
        inline path's turn-taking, where no instance asks."""
        with self._cond:
            member = min(range(len(self.taken)), key=lambda m: (self.taken[m], m))
            self._assign(member)
            return member

    def done(self, member: int) -> None:
        with self._cond:
            self.in_flight[member] -= 1
            self._cond.notify_all()


class PipelineGroup:
    """One pipeline per backend instance, fed from `next_batch`; what the SUT and the runner
    read of a pipeline (failure, counts, batch times), summed over the instances."""

    def __init__(self, instances: list[Backend], next_batch: BatchSource, rows_for: RowsFn,
                 on_complete: CompleteFn, name: str = "pipeline") -> None:
        if not instances:
            raise ValueError("a pipeline group needs at least one backend instance")
        self.instances = list(instances)
        self.failure_record = FailureRecord()
        self._turns = LeastLoaded(len(instances))
        single = len(instances) == 1
        self.pipelines = [
            BatchPipeline(
                backend,
                # One instance takes every batch: no turns to wait for.
                next_batch=next_batch if single else self._source_for(i, next_batch),
                rows_for=rows_for,
                on_complete=on_complete if single else self._completer_for(i, on_complete),
                name=name if single else f"{name}-{i}",
                failure=self.failure_record,
            )
            for i, backend in enumerate(instances)
        ]

    def _source_for(self, member: int, source: BatchSource) -> BatchSource:
        return lambda: self._turns.take(member, source)

    def _completer_for(self, member: int, on_complete: CompleteFn) -> CompleteFn:
        def complete(ids: list[int], top1: Any) -> None:
            try:
                on_complete(ids, top1)
            finally:
                self._turns.done(member)

        return complete

    def start(self) -> None:
        for pipeline in self.pipelines:
            pipeline.start()

    def join(self, timeout: float | None = None) -> None:
        for pipeline in self.pipelines:
            pipeline.join(timeout)

    @property
    def alive(self) -> bool:
        return any(p.alive for p in self.pipelines)

    @property
    def failure(self) -> BaseException | None:
        return self.failure_record.error

    def run_inline(self, batch: Batch) -> None:
        """Run one batch on the caller's thread, on the instance that has taken fewest."""
        if len(self.pipelines) == 1:
            self.pipelines[0].run_inline(batch)
            return
        self.pipelines[self._turns.claim_least_taken()].run_inline(batch)

    @property
    def batches_run(self) -> int:
        return sum(p.batches_run for p in self.pipelines)

    @property
    def samples_run(self) -> int:
        return sum(p.samples_run for p in self.pipelines)

    @property
    def batch_seconds(self) -> array:
        joined = array("d")
        for pipeline in self.pipelines:
            joined.extend(pipeline.batch_seconds)
        return joined

    def per_instance(self) -> list[dict[str, Any]]:
        """Each instance's device and share of the work: the balance a reader checks."""
        return [{"instance": i, "device": backend.options.device, "batches": p.batches_run,
                 "samples": p.samples_run}
                for i, (backend, p) in enumerate(zip(self.instances, self.pipelines))]
