"""The CPUs a process may run on, and how many physical cores they are.

ONNX Runtime's CPU provider runs one intra-op thread per physical core by default, and only
when the count is left at its default (0) does it also pin those threads to cores
(onnxruntime.ai, "Thread management"). Pinned threads cannot move off a core that LoadGen's
issue thread, the dispatcher or the OS wants, and on a small host that shows as a tail: on
the 2-core Xeon development machine a resnet18 64 px batch of one took p50 4.1-4.9 ms and
p90 9.8-10.3 ms with the default, against p50 3.6-4.0 ms and p90 4.2-4.5 ms with the same
count set explicitly (2026-12-02, ONNX Runtime 1.32, the same process and model). The ONNX
Runtime backend therefore always sets the count, to `physical_cores()` unless --threads
says otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

_TOPOLOGY = Path("/sys/devices/system/cpu")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def physical_cores(topology: Path = _TOPOLOGY) -> int:
    """Physical cores among the CPUs this process may run on: hyper-threads of one core
    count once. Where the topology cannot be read (not Linux, a restricted /sys), every
    usable CPU counts as a core."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return usable_cpus()
    cores = set()
    for cpu in cpus:
        folder = topology / f"cpu{cpu}" / "topology"
        try:
            cores.add(((folder / "physical_package_id").read_text().strip(), (folder / "core_id").read_text().strip()))
        except OSError:
            return len(cpus)
    return max(1, len(cores))
