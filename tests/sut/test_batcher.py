"""DynamicBatcher: batch formation on a fake clock, and exactly-once delivery under
concurrent producers."""

from __future__ import annotations

import threading

import pytest

from sut.batcher import Batch, DynamicBatcher


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(max_batch: int, timeout_s: float) -> tuple[DynamicBatcher, FakeClock]:
    clock = FakeClock()
    return DynamicBatcher(max_batch, timeout_s, clock=clock), clock


def test_full_batches_leave_at_once_and_remainder_waits_for_timeout():
    batcher, clock = make(max_batch=4, timeout_s=0.002)
    batcher.put(list(range(10)), list(range(100, 110)))
    first, second = batcher.poll(clock.now), batcher.poll(clock.now)
    assert isinstance(first, Batch) and first.ids == [0, 1, 2, 3]
    assert first.indices == [100, 101, 102, 103]
    assert isinstance(second, Batch) and second.ids == [4, 5, 6, 7]
    assert batcher.poll(clock.now) == pytest.approx(0.002)  # remainder: deadline, not a batch
    clock.now = 0.0019
    assert not isinstance(batcher.poll(clock.now), Batch)
    clock.now = 0.002
    rest = batcher.poll(clock.now)
    assert isinstance(rest, Batch) and rest.ids == [8, 9]
    assert batcher.poll(clock.now) is None


def test_deadline_counts_from_the_oldest_sample():
    batcher, clock = make(max_batch=8, timeout_s=0.010)
    batcher.put([1], [1])
    clock.now = 0.006
    batcher.put([2], [2])
    assert batcher.poll(clock.now) == pytest.approx(0.010)
    clock.now = 0.010
    batch = batcher.poll(clock.now)
    assert isinstance(batch, Batch) and batch.ids == [1, 2] and batch.oldest_arrival == 0.0


def test_batch_leaves_early_when_it_fills_before_the_deadline():
    batcher, clock = make(max_batch=3, timeout_s=1.0)
    for i in range(3):
        clock.now = i * 0.1
        batcher.put([i], [i])
    batch = batcher.poll(clock.now)
    assert isinstance(batch, Batch) and batch.ids == [0, 1, 2]


def test_zero_timeout_is_greedy():
    batcher, clock = make(max_batch=16, timeout_s=0.0)
    batcher.put([1, 2, 3], [1, 2, 3])
    batch = batcher.poll(clock.now)
    assert isinstance(batch, Batch) and batch.ids == [1, 2, 3]


def test_close_flushes_partial_batch_then_get_returns_none():
    batcher, clock = make(max_batch=8, timeout_s=10.0)
    batcher.put([1, 2], [1, 2])
    batcher.close()
    batch = batcher.get()
    assert batch is not None and batch.ids == [1, 2]
    assert batcher.get() is None
    with pytest.raises(RuntimeError):
        batcher.put([3], [3])


def test_rejects_bad_parameters_and_unbounded_growth():
    with pytest.raises(ValueError):
        DynamicBatcher(0, 0.0)
    with pytest.raises(ValueError):
        DynamicBatcher(1, -1.0)
    batcher = DynamicBatcher(4, 0.0, max_queued=5)
    batcher.put([1, 2, 3], [1, 2, 3])
    with pytest.raises(OverflowError):
        batcher.put([4, 5, 6], [4, 5, 6])


def test_every_sample_delivered_exactly_once_under_concurrent_producers():
    batcher = DynamicBatcher(max_batch=7, timeout_s=0.0005)
    producers, per_producer = 4, 2500
    seen: list[int] = []
    sizes: list[int] = []

    def consume() -> None:
        while (batch := batcher.get()) is not None:
            assert len(batch.ids) <= 7
            sizes.append(len(batch.ids))
            seen.extend(batch.ids)

    def produce(base: int) -> None:
        for i in range(per_producer):
            batcher.put([base + i], [i])

    consumer = threading.Thread(target=consume)
    consumer.start()
    threads = [threading.Thread(target=produce, args=(p * per_producer,)) for p in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    consumer.join(timeout=10)
    assert not consumer.is_alive()
    assert sorted(seen) == list(range(producers * per_producer))
    assert max(sizes) > 1  # batching actually happened


def test_huge_offline_query_is_split_without_copying_it_per_sample():
    batcher, clock = make(max_batch=256, timeout_s=0.0)
    count = 3_000_000  # a submission-length Offline query on a fast GPU
    ids = list(range(count))
    batcher.put(ids, ids)
    assert len(batcher) == count
    first = batcher.poll(clock.now)
    assert isinstance(first, Batch) and first.ids == list(range(256))
    total = 256
    while (batch := batcher.poll(clock.now)) is not None:
        assert isinstance(batch, Batch)
        total += len(batch.ids)
    assert total == count


def test_batches_span_several_queries_in_arrival_order():
    batcher, clock = make(max_batch=5, timeout_s=0.0)
    batcher.put([1, 2], [10, 20])
    batcher.put([3, 4, 5, 6], [30, 40, 50, 60])
    batcher.put([], [])
    first, second = batcher.poll(clock.now), batcher.poll(clock.now)
    assert first.ids == [1, 2, 3, 4, 5] and first.indices == [10, 20, 30, 40, 50]
    assert second.ids == [6] and batcher.poll(clock.now) is None
