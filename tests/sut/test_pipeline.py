"""BatchPipeline: in-order completion, exactly once, and the failure path."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sut.backends.base import BackendOptions, DonePending, ModelSpec
from sut.backends.null_backend import NullBackend
from sut.batcher import DynamicBatcher
from sut.pipeline import BatchPipeline


class FlakyBackend(NullBackend):
    """Fails on chosen batch numbers, either at launch or while waiting."""

    def __init__(self, fail_launch_at: int | None = None, fail_wait_at: int | None = None,
                 in_flight: int = 2) -> None:
        super().__init__(ModelSpec("resnet18", "fp32"), BackendOptions(max_batch=4, in_flight=in_flight))
        self.calls = 0
        self.fail_launch_at, self.fail_wait_at = fail_launch_at, fail_wait_at
        self.load()
        self.allocate_staging(64)
        self._answers[:] = np.arange(64)

    def run_batch(self, rows):
        self.calls += 1
        if self.calls == self.fail_launch_at:
            raise RuntimeError("launch exploded")
        if self.calls == self.fail_wait_at:
            class Broken(DonePending):
                def wait(self):
                    raise RuntimeError("device exploded")
            return Broken(None)
        return super().run_batch(rows)


def run_pipeline(backend, samples: int) -> tuple[BatchPipeline, dict[int, int | None]]:
    batcher = DynamicBatcher(max_batch=4, timeout_s=0.0)
    completed: dict[int, int | None] = {}
    lock = threading.Lock()

    def on_complete(ids, top1):
        with lock:
            for k, i in enumerate(ids):
                assert i not in completed, "sample completed twice"
                completed[i] = None if top1 is None else int(top1[k])

    pipeline = BatchPipeline(backend, batcher.get, lambda idx: np.asarray(idx), on_complete)
    pipeline.start()
    batcher.put(list(range(samples)), [i % 64 for i in range(samples)])
    batcher.close()
    pipeline.join(timeout=10)
    assert not pipeline.alive, "pipeline threads left behind"
    return pipeline, completed


# One batch in flight: the dispatcher completes each batch itself; more: a completer thread.
IN_FLIGHT = pytest.mark.parametrize("in_flight", [1, 2])


@IN_FLIGHT
def test_all_samples_complete_once_with_their_own_answer(in_flight):
    pipeline, completed = run_pipeline(FlakyBackend(in_flight=in_flight), 50)
    assert pipeline.failure is None
    assert completed == {i: i % 64 for i in range(50)}
    assert pipeline.batches_run == 13


@IN_FLIGHT
def test_launch_failure_completes_everything_and_reports(in_flight):
    pipeline, completed = run_pipeline(FlakyBackend(fail_launch_at=3, in_flight=in_flight), 50)
    assert sorted(completed) == list(range(50))
    assert "launch exploded" in str(pipeline.failure)
    assert all(completed[i] == i % 64 for i in range(8))  # batches before the failure answered
    assert all(completed[i] is None for i in range(8, 50))  # the failed one and all later


@IN_FLIGHT
def test_wait_failure_completes_everything_and_reports(in_flight):
    pipeline, completed = run_pipeline(FlakyBackend(fail_wait_at=2, in_flight=in_flight), 20)
    assert sorted(completed) == list(range(20))
    assert "device exploded" in str(pipeline.failure)
    assert completed[4] is None


def test_one_batch_in_flight_completes_on_the_dispatcher_thread():
    threads: set[str] = set()
    backend = FlakyBackend(in_flight=1)
    batcher = DynamicBatcher(max_batch=4, timeout_s=0.0)
    pipeline = BatchPipeline(backend, batcher.get, np.asarray,
                             lambda ids, top1: threads.add(threading.current_thread().name), name="p")
    pipeline.start()
    batcher.put(list(range(12)), list(range(12)))
    batcher.close()
    pipeline.join(timeout=10)
    assert threads == {"p-dispatch"} and pipeline.batches_run == 3 and not pipeline.alive


@IN_FLIGHT
def test_completion_callback_failure_does_not_hang(in_flight):
    backend = FlakyBackend(in_flight=in_flight)
    batcher = DynamicBatcher(max_batch=4, timeout_s=0.0)

    def on_complete(ids, top1):
        raise ValueError("callback broke")

    pipeline = BatchPipeline(backend, batcher.get, np.asarray, on_complete)
    pipeline.start()
    batcher.put(list(range(40)), list(range(40)))
    batcher.close()
    pipeline.join(timeout=10)
    assert not pipeline.alive
    assert "callback broke" in str(pipeline.failure)


class SlowBackend(FlakyBackend):
    """Each batch takes a known time, so its recorded launch-to-done time has a floor."""

    def run_batch(self, rows):
        import time
        time.sleep(0.02)
        return super().run_batch(rows)


@IN_FLIGHT
def test_every_finished_batch_has_its_launch_to_done_time(in_flight):
    from sut.pipeline import batch_time_summary

    pipeline, _ = run_pipeline(SlowBackend(in_flight=in_flight), 12)
    summary = batch_time_summary(pipeline.batch_seconds)
    assert summary["count"] == pipeline.batches_run == 3
    assert 20.0 <= summary["p50"] <= summary["p99"] <= summary["max"] < 5000.0


def test_failed_batches_have_no_time_and_no_batch_none():
    from sut.pipeline import batch_time_summary

    pipeline, _ = run_pipeline(FlakyBackend(fail_wait_at=1, in_flight=1), 4)
    assert len(pipeline.batch_seconds) == 0 and batch_time_summary(pipeline.batch_seconds) is None
