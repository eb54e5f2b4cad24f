"""Several instances of one backend behind the Backend interface (--gpus, --instances).

Each member is a whole backend on its own device: its own network (compiled module or
engine), staging buffer, streams and CUDA graphs, as Triton's instance groups keep them.
The SUT gives every member a pipeline of its own (sut/dispatch.py); the pool does what
every member must (load, stage, close), and answers from the first member what is the
same for all (logits, the description).

On the CPU the members share the cores: unless --threads says how many each takes, each
gets an equal share of the physical cores, as several ONNX Runtime sessions must not each
spin on all of them.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, Callable, ClassVar

import numpy as np

from plumbing.errors import BackendError
from sut.backends.base import Backend, BackendOptions, PendingBatch

log = logging.getLogger(__name__)


def member_options(options: BackendOptions, devices: tuple[str, ...], per_device: int,
                   cores: int) -> list[BackendOptions]:
    """Each member's options: `per_device` members on each of `devices`, in device order.
    `cores` is the physical cores the CPU members share."""
    if per_device < 1 or not devices:
        raise BackendError(f"{per_device} instance(s) on {len(devices)} device(s): nothing to run")
    members = []
    for device in devices:
        threads = options.threads
        if device == "cpu" and threads is None:
            threads = max(1, cores // per_device)
        members += [dataclasses.replace(options, device=device, threads=threads) for _ in range(per_device)]
    return members


def build_instances(create: Callable[[BackendOptions], Backend], options: BackendOptions,
                    devices: tuple[str, ...], per_device: int, cores: int) -> Backend:
    """One backend when one instance is asked for, else an InstancePool of them."""
    if len(devices) == 1 and per_device == 1:
        return create(dataclasses.replace(options, device=devices[0]))
    return InstancePool([create(o) for o in member_options(options, devices, per_device, cores)], per_device)


class InstancePool(Backend):
    name: ClassVar[str] = "instance-pool"

    def __init__(self, members: list[Backend], per_device: int) -> None:
        if len(members) < 2:
            raise BackendError("an instance pool needs at least two members")
        super().__init__(members[0].model, members[0].options)
        self.members = list(members)
        self.per_device = per_device
        self._next = 0
        self._lock = threading.Lock()

    def instances(self) -> list[Backend]:
        return list(self.members)

    def load(self) -> None:
        for i, member in enumerate(self.members):
            log.info("loading instance %d of %d on %s", i + 1, len(self.members), member.options.device)
            member.load()

    def allocate_staging(self, capacity: int) -> None:
        for member in self.members:
            member.allocate_staging(capacity)

    def stage(self, rows: np.ndarray, samples: np.ndarray) -> None:
        for member in self.members:
            member.stage(rows, samples)

    def run_batch(self, rows: np.ndarray) -> PendingBatch:
        """On the members in turn. The SUT does not come here (it runs each member's own
        pipeline); a caller that knows only one backend (a warm-up) does."""
        with self._lock:
            member = self.members[self._next % len(self.members)]
            self._next += 1
        return member.run_batch(rows)

    def time_tight_loop(self, batch_size: int, iterations: int) -> float:
        """The members' own tight loops at once, `iterations` batches shared out between
        them, started together: seconds until the last one finished (the longest of their
        own timings), so `batch_size * iterations / seconds` is the pool's throughput."""
        count = len(self.members)
        shares = [iterations // count + (1 if i < iterations % count else 0) for i in range(count)]
        working = [(m, n) for m, n in zip(self.members, shares) if n > 0]
        start = threading.Barrier(len(working))
        seconds: list[float] = [0.0] * len(working)
        errors: list[BaseException] = []

        def loop(k: int, member: Backend, share: int) -> None:
            try:
                start.wait(timeout=60)
                seconds[k] = member.time_tight_loop(batch_size, share)
            except BaseException as exc:  # reported on the caller's thread
                errors.append(exc)
                start.abort()

        threads = [threading.Thread(target=loop, args=(k, m, n), name=f"tight-loop-{k}", daemon=True)
                   for k, (m, n) in enumerate(working)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
            raise real[0] if real else BackendError("the instances' tight loops did not start together")
        return max(seconds)

    def logits(self, samples: np.ndarray) -> np.ndarray:
        return self.members[0].logits(samples)

    def describe(self) -> dict[str, Any]:
        info = dict(self.members[0].describe())
        info["instances"] = {
            "count": len(self.members),
            "per_device": self.per_device,
            "devices": [m.options.device for m in self.members],
            "threads_each": self.members[0].options.threads,
            "dispatch": "least loaded of the instances with a free place (sut/dispatch.py)",
        }
        return info

    def close(self) -> None:
        failure: BaseException | None = None
        for member in self.members:
            try:
                member.close()
            except BaseException as exc:  # close every member before reporting the first error
                failure = failure or exc
        if failure is not None:
            raise failure
