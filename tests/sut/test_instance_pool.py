"""InstancePool: members per device with the CPU's cores shared, everything a member must
do fanned out, the tight loop run on all at once, every member closed."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from plumbing.errors import BackendError
from sut.backends.base import BackendOptions, ModelSpec
from sut.backends.instance_pool import InstancePool, build_instances, member_options
from sut.backends.null_backend import NullBackend

SPEC = ModelSpec("resnet18", "fp32", image_size=32)


class Recording(NullBackend):
    def __init__(self, model, options, log: list | None = None, fail_close: bool = False,
                 loop_s: float = 0.0) -> None:
        super().__init__(model, options)
        self.log, self.fail_close, self.loop_s = log if log is not None else [], fail_close, loop_s
        self.closed = False

    def load(self) -> None:
        super().load()
        self.log.append(("load", self.options.device))

    def time_tight_loop(self, batch_size: int, iterations: int) -> float:
        self.log.append(("loop", threading.current_thread().name, iterations, time.monotonic()))
        time.sleep(self.loop_s * iterations)
        return self.loop_s * iterations

    def close(self) -> None:
        self.closed = True
        if self.fail_close:
            raise BackendError(f"close failed on {self.options.device}")


def pool_of(count: int, **kwargs) -> InstancePool:
    return InstancePool([Recording(SPEC, BackendOptions(device=f"cuda:{i}"), **kwargs) for i in range(count)], 1)


def test_cpu_members_share_the_physical_cores_unless_threads_are_given():
    shared = member_options(BackendOptions(), ("cpu",), per_device=2, cores=8)
    assert [o.threads for o in shared] == [4, 4]
    assert [o.threads for o in member_options(BackendOptions(), ("cpu",), 3, cores=2)] == [1, 1, 1]
    given = member_options(BackendOptions(threads=3), ("cpu",), 2, cores=8)
    assert [o.threads for o in given] == [3, 3]  # --threads is per instance


def test_members_are_per_device_in_device_order_and_keep_gpu_threads():
    options = member_options(BackendOptions(max_batch=8), ("cuda:0", "cuda:2"), per_device=2, cores=16)
    assert [o.device for o in options] == ["cuda:0", "cuda:0", "cuda:2", "cuda:2"]
    assert all(o.threads is None and o.max_batch == 8 for o in options)


def test_nothing_to_run_is_refused():
    with pytest.raises(BackendError):
        member_options(BackendOptions(), (), 1, 2)
    with pytest.raises(BackendError):
        member_options(BackendOptions(), ("cpu",), 0, 2)


def test_one_instance_is_the_backend_itself_and_more_are_a_pool():
    def create(options):
        return NullBackend(SPEC, options)

    single = build_instances(create, BackendOptions(), ("cuda:1",), 1, cores=2)
    assert isinstance(single, NullBackend) and single.options.device == "cuda:1"
    assert single.instances() == [single]
    pool = build_instances(create, BackendOptions(), ("cpu",), 2, cores=2)
    assert isinstance(pool, InstancePool) and len(pool.instances()) == 2


def test_load_and_staging_reach_every_member():
    log: list = []
    pool = pool_of(3, log=log)
    pool.load()
    pool.allocate_staging(8)
    pool.stage(np.arange(8), np.random.default_rng(0).random((8, 3, 32, 32), dtype=np.float32))
    assert [e for e in log if e[0] == "load"] == [("load", f"cuda:{i}") for i in range(3)]
    answers = [m._answers.copy() for m in pool.members]
    assert all(np.array_equal(a, answers[0]) for a in answers) and (answers[0] >= 0).all()


def test_tight_loop_runs_every_member_at_once_and_shares_the_iterations():
    log: list = []
    pool = pool_of(3, log=log, loop_s=0.05)
    pool.load()
    pool.allocate_staging(4)
    seconds = pool.time_tight_loop(4, 7)
    loops = [e for e in log if e[0] == "loop"]
    assert sorted(e[2] for e in loops) == [2, 2, 3]
    assert max(e[3] for e in loops) - min(e[3] for e in loops) < 0.05  # started together
    assert seconds == pytest.approx(0.15)  # the longest share, not the sum


def test_a_failing_member_fails_the_tight_loop():
    pool = pool_of(2)
    pool.load()
    pool.allocate_staging(4)

    def broken(batch_size, iterations):
        raise BackendError("out of memory on cuda:1")

    pool.members[1].time_tight_loop = broken
    with pytest.raises(BackendError, match="cuda:1"):
        pool.time_tight_loop(4, 4)


def test_describe_says_how_many_instances_where():
    pool = pool_of(2)
    pool.load()
    info = pool.describe()
    assert info["backend"] == "null"
    assert info["instances"]["count"] == 2 and info["instances"]["devices"] == ["cuda:0", "cuda:1"]


def test_close_closes_every_member_and_reports_the_first_failure():
    pool = InstancePool([Recording(SPEC, BackendOptions(device="cuda:0"), fail_close=True),
                         Recording(SPEC, BackendOptions(device="cuda:1"))], 1)
    with pytest.raises(BackendError, match="cuda:0"):
        pool.close()
    assert all(m.closed for m in pool.members)


def test_a_pool_of_one_is_refused():
    with pytest.raises(BackendError):
        InstancePool([NullBackend(SPEC, BackendOptions())], 1)
