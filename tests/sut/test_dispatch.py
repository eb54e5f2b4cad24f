"""PipelineGroup and LeastLoaded: batches across several backend instances, each exactly
once, to the least loaded; one failing instance ends the run; no thread is left."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from sut.backends.base import BackendOptions, DonePending, ModelSpec
from sut.backends.null_backend import NullBackend
from sut.batcher import Batch, DynamicBatcher
from sut.dispatch import LeastLoaded, PipelineGroup


class Slow(NullBackend):
    """The null backend's answers after `service_s` per batch; optionally failing at a
    batch number, at launch."""

    def __init__(self, service_s: float, in_flight: int = 1, device: str = "cpu",
                 fail_at: int | None = None) -> None:
        super().__init__(ModelSpec("resnet18", "fp32"), BackendOptions(device=device, max_batch=4,
                                                                       in_flight=in_flight))
        self.service_s, self.fail_at, self.calls = service_s, fail_at, 0
        self.load()
        self.allocate_staging(64)
        self._answers[:] = np.arange(64)

    def run_batch(self, rows):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("device 1 exploded")
        time.sleep(self.service_s)
        return DonePending(self._answers[rows])


def run_group(instances, samples: int, putters: int = 1, timeout_s: float = 0.0):
    batcher = DynamicBatcher(max_batch=4, timeout_s=timeout_s)
    completed: dict[int, int | None] = {}
    lock = threading.Lock()

    def on_complete(ids, top1):
        with lock:
            for k, i in enumerate(ids):
                assert i not in completed, "sample completed twice"
                completed[i] = None if top1 is None else int(top1[k])

    group = PipelineGroup(instances, batcher.get, np.asarray, on_complete, name="test")
    group.start()
    ids = list(range(samples))
    chunks = [ids[k::putters] for k in range(putters)]
    threads = [threading.Thread(target=lambda c=c: [batcher.put([i], [i % 64]) for i in c]) for c in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    group.join(timeout=20)
    assert not group.alive, "pipeline threads left behind"
    return group, completed


def test_every_sample_completes_exactly_once_under_concurrent_issue():
    group, completed = run_group([Slow(0.0), Slow(0.0, in_flight=2), Slow(0.0)], samples=2000, putters=4)
    assert sorted(completed) == list(range(2000))
    assert all(completed[i] == i % 64 for i in completed)
    assert group.samples_run == 2000 and group.failure is None
    assert sum(i["samples"] for i in group.per_instance()) == 2000


def test_equal_instances_share_the_work():
    group, _ = run_group([Slow(0.002), Slow(0.002)], samples=400)
    shares = [i["batches"] for i in group.per_instance()]
    assert min(shares) >= 0.35 * sum(shares), shares


def test_a_slower_instance_takes_fewer_batches():
    group, _ = run_group([Slow(0.001), Slow(0.008)], samples=400)
    fast, slow = (i["batches"] for i in group.per_instance())
    assert fast > 2 * slow, (fast, slow)


def test_one_instance_takes_at_a_time_and_each_batch_counts_as_its():
    turns = LeastLoaded(2)
    turns.in_flight[:] = [1, 0]  # instance 0 has a batch out, instance 1 none
    order: list[int] = []
    batches = iter([Batch([1], [1], 0.0), Batch([2], [2], 0.0)])
    both_waiting = threading.Barrier(2)

    def ask(member: int) -> None:
        both_waiting.wait()
        time.sleep(0.05 * member)  # instance 0 asks first
        if turns.take(member, lambda: (time.sleep(0.05), next(batches))[1]) is not None:
            order.append(member)

    threads = [threading.Thread(target=ask, args=(m,)) for m in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    # Instance 0 asked first and took the first batch (no one else was waiting); the
    # second went to instance 1 as soon as it asked; each now has one more in flight.
    assert sorted(order) == [0, 1]
    assert turns.in_flight == [2, 1] and turns.taken == [1, 1]


def test_an_idle_instance_is_preferred_over_a_busy_one():
    turns = LeastLoaded(3)
    turns.in_flight[:] = [2, 0, 1]
    turns._waiting.update({0, 1, 2})
    assert turns._next_in_line() == 1
    turns.in_flight[:] = [1, 1, 1]
    turns.taken[:] = [5, 3, 4]  # equal load: the one that has taken fewest
    assert turns._next_in_line() == 1


def test_one_failing_instance_fails_every_later_batch_and_ends_without_a_hang():
    started = time.monotonic()
    group, completed = run_group([Slow(0.001), Slow(0.001, fail_at=3)], samples=400)
    assert time.monotonic() - started < 15
    assert sorted(completed) == list(range(400))  # nothing left outstanding
    assert "device 1 exploded" in str(group.failure)
    failed = [i for i, top1 in completed.items() if top1 is None]
    assert failed and len(failed) < 400


def test_inline_queries_take_turns_over_the_instances():
    instances = [Slow(0.0), Slow(0.0)]
    completed: list[list[int]] = []
    group = PipelineGroup(instances, lambda: None, np.asarray, lambda ids, top1: completed.append(ids))
    for i in range(6):
        group.run_inline(Batch([i], [i], 0.0))
    assert [i["batches"] for i in group.per_instance()] == [3, 3]
    assert completed == [[i] for i in range(6)]


def test_one_instance_runs_as_a_plain_pipeline():
    group, completed = run_group([Slow(0.0, in_flight=2)], samples=50)
    assert len(group.pipelines) == 1 and len(completed) == 50
    assert group.per_instance()[0]["samples"] == 50


def test_an_empty_group_is_refused():
    with pytest.raises(ValueError):
        PipelineGroup([], lambda: None, np.asarray, lambda ids, top1: None)
