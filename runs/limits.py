"""Bounds on what a run allocates, in one place, each number with its reason.

A run is checked before it allocates: one that cannot fit is refused with the number and
the limit, never left to LoadGen's std::bad_alloc, NumPy's MemoryError or the OOM killer.
Sizes a run derives from its own warm-up are capped here too: a warm-up measures the
backend's loop, which can be orders of magnitude faster than the harness around it.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from plumbing.errors import ConfigError
from sut.cpu_cores import usable_cpus
from sut.backends import backend_info
from sut.settings import schedule_size, setting



class SizedRun(Protocol):
    """What the checks read of a resolved run (runs.config.RunConfig), named here so that
    this module, which config's resolve() calls, does not import config back."""

    backend: str
    device: Any  # runs.device.DeviceChoice
    knobs: dict[str, Any]
    loadgen: dict[str, Any]
    provenance: dict[str, str]
    request: Any  # runs.config.CliRequest

    @property
    def scenario(self) -> str: ...

log = logging.getLogger(__name__)

# Share of the memory available when a run is checked that it plans for what it sizes
# itself (LoadGen's schedule, the staged performance set, batch buffers). The rest is for
# what cannot be counted up front: the runtime, the network's weights and activations,
# Python, other processes.
MEMORY_SHARE = 0.5
# Host bytes a sample of LoadGen's pre-generated schedule costs over a run, the harness's
# side included (FastSUT id lists, the latency LoadGen records per sample). Measured with
# the null backend on the 2-core CPU: an Offline query of 33M samples peaked 3.6 GB above a
# 100-sample run (109 B a sample), one of 11M 0.75 GB (68 B); rounded up.
SCHEDULE_BYTES_PER_SAMPLE = 128
# ... and a query on top of its samples: 2M SingleStream queries peaked 346 MB above 2,000
# (173 B a query, its sample included).
SCHEDULE_BYTES_PER_QUERY = 256
# Per dataset index: the QSL's staging-row map (int64), its loaded flags and LoadGen's own
# per-sample bookkeeping.
INDEX_BYTES_PER_SAMPLE = 16
# The fastest the harness itself completes samples: with the null backend (no inference)
# it reached 0.40M samples/s Offline on a 2-core Xeon and 0.95-1.15M on a 2-core AMD EPYC
# (2026-12-04), against 46M/s for the null backend's own loop; the fastest real system
# measured, resnet18 fp16 on an H200, ran 90k img/s (BENCHMARKS.md). A warm-up rate above
# this is the loop, not what a run can reach. At 1M the EPYC's null runs ended before their
# minimum duration (INVALID); 3M leaves room for a faster host, and the memory cap below
# still bounds LoadGen's schedule (422 MB a second of minimum duration at this rate).
HARNESS_MAX_SAMPLES_PER_S = 3_000_000
# The shortest query round trip through LoadGen and the harness: SingleStream with the
# null backend ran 70k queries/s on the 2-core CPU (14 us a query).
HARNESS_MIN_QUERY_S = 10e-6


@dataclass(frozen=True)
class Memory:
    available: int  # bytes
    source: str  # what bounds it, for the message

    @property
    def budget(self) -> int:
        return int(self.available * MEMORY_SHARE)


@dataclass(frozen=True)
class Need:
    kind: str  # "schedule", "index", "staging", "images", "batches"
    what: str  # the part and the settings that size it, for the message
    nbytes: int
    where: str  # "host" or "device"


def check_threads(threads: int | None, source: str) -> None:
    """Intra-op threads beyond the CPUs the process can use only contend for them, and
    each costs a stack; 100000 made ONNX Runtime start 9,301 threads and take 17 GB."""
    cpus = usable_cpus()
    if threads is not None and threads > cpus:
        raise ConfigError(f"threads {threads} (from {source}) exceeds the {cpus} CPUs this process may use; "
                          f"use --threads {cpus} or fewer")


def available_memory() -> Memory | None:
    """Host memory a run can still take: the least of MemAvailable, the cgroup's limit and
    the address-space limit (ulimit -v), each less what is already in use. None where
    none of them can be read."""
    found = [m for m in (_meminfo(), _cgroup(), _address_space()) if m is not None]
    return min(found, key=lambda m: m.available) if found else None


def device_memory(device: str) -> Memory | None:
    """Free memory of the run's CUDA device; None on the CPU."""
    if not device.startswith("cuda"):
        return None
    import torch

    try:
        free, _ = torch.cuda.mem_get_info(torch.device(device))
    except RuntimeError:  # a broken CUDA setup: the backend's load says what is wrong
        return None
    return Memory(int(free), f"free memory of {device}")


def _least_free(devices: tuple[str, ...]) -> Memory | None:
    free = [m for m in (device_memory(d) for d in devices) if m is not None]
    return min(free, key=lambda m: m.available) if free else None


def _meminfo() -> Memory | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return Memory(int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo")
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup() -> Memory | None:
    base = Path("/sys/fs/cgroup")
    for limit_file, usage_file in (("memory.max", "memory.current"),  # cgroup v2
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            limit = (base / limit_file).read_text().strip()
            usage = int((base / usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # v1 writes a huge number for "no limit"
            return Memory(max(0, int(limit) - usage), f"the cgroup's memory limit ({base / limit_file})")
    return None


def _address_space() -> Memory | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        status = Path("/proc/self/status").read_text()
        used = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmSize:"))
    except (OSError, ValueError, StopIteration):
        used = 0
    return Memory(max(0, soft - used), "the address-space limit (ulimit -v)")


def _size(nbytes: float) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:,.1f} {unit}"
    return f"{nbytes:.0f} B"


def sample_bytes(image_size: int) -> int:
    """One preprocessed sample as the backends stage it: float32 NCHW."""
    return 3 * image_size * image_size * 4


def dataset_count_hint(request: Any) -> int | None:
    """The run's dataset size before the dataset is opened: --dataset-count, or the synthetic
    default; None for an ImageNet folder not yet read."""
    from sut.data import DEFAULT_SYNTHETIC_COUNT

    if request.dataset_count:
        return int(request.dataset_count)
    return DEFAULT_SYNTHETIC_COUNT if request.dataset == "synthetic" else None


def schedule_need(config: SizedRun, dataset_count: int | None) -> Need | None:
    """LoadGen's schedule; None for an accuracy run over a dataset of unknown size."""
    scenario, values, source = config.scenario, config.loadgen, config.provenance
    accuracy = config.request.mode == "accuracy"
    if accuracy and not dataset_count:
        return None
    queries, samples = schedule_size(scenario, config.request.mode, values, dataset_count or 0)
    seconds = setting(values, "min_duration_ms") / 1e3
    if accuracy:
        why = f"every one of the {dataset_count:,} samples"
    elif scenario == "Offline":
        why = (f"1.1 x {seconds:g} s x offline_expected_qps {setting(values, 'offline_expected_qps'):g} "
               f"from {source.get('loadgen.offline_expected_qps', 'LoadGen default')}")
    elif scenario == "Server":
        why = (f"server_target_qps {setting(values, 'server_target_qps'):g} from "
               f"{source.get('loadgen.server_target_qps', 'LoadGen default')} x {seconds:g} s")
    else:
        why = "the larger of min_query_count and 2 x min duration / expected latency"
    if setting(values, "min_query_count") >= (samples if scenario == "Offline" else queries) > 1:
        why = f"min_query_count {setting(values, 'min_query_count'):g} from {source.get('loadgen.min_query_count', 'LoadGen default')}"
    nbytes = queries * SCHEDULE_BYTES_PER_QUERY + samples * SCHEDULE_BYTES_PER_SAMPLE
    return Need("schedule", f"LoadGen's pre-generated schedule of {queries:,} queries, {samples:,} samples ({why})",
                nbytes, "host")


def run_needs(config: SizedRun, dataset_count: int | None) -> list[Need]:
    """What a run allocates that its settings size, at least (activations come on top)."""
    r, knobs = config.request, config.knobs
    per_sample = sample_bytes(r.image_size)
    on_device = config.device.device.startswith("cuda") and backend_info(config.backend).device_staging
    override = int(config.loadgen.get("performance_sample_count_override") or 0)
    staged = min(override, dataset_count) if override and dataset_count else (override or dataset_count or 0)
    if r.mode == "accuracy" and dataset_count:
        staged = dataset_count  # LoadGen may load every sample at once
    needs = [need for need in (schedule_need(config, dataset_count),) if need is not None]
    if dataset_count:
        needs.append(Need("index", f"the index of {dataset_count:,} dataset samples",
                          dataset_count * INDEX_BYTES_PER_SAMPLE, "host"))
    # Every backend instance (--instances on each of --gpus) keeps its own copy: a device
    # holds its own instances', the host every instance's that lives there.
    per_device = int(knobs.get("instances") or 1)
    everywhere = per_device * max(1, int(getattr(config.device, "count", 1)))
    if staged:
        staging_on_device = on_device and knobs.get("staging") == "device"
        copies = per_device if staging_on_device else everywhere
        needs.append(Need("staging", f"{staged:,} staged samples of {_size(per_sample)} at {r.image_size} px"
                          + _times(copies), copies * staged * per_sample, "device" if staging_on_device else "host"))
        if r.dataset == "synthetic":  # SyntheticDataset keeps each image it made, as uint8
            needs.append(Need("images", f"{staged:,} synthetic images kept as uint8", staged * per_sample // 4, "host"))
    max_batch, in_flight = int(knobs["max_batch"]), int(knobs["in_flight"])
    buffers = in_flight + 1  # a batch being gathered per slot, plus the warm-up batch
    copies = per_device if on_device else everywhere
    needs.append(Need("batches", f"max_batch {max_batch:,} from {config.provenance.get('knob.max_batch', 'default')} "
                      f"at {r.image_size} px: {buffers} batch buffers of {max_batch:,} x {_size(per_sample)}"
                      + _times(copies), copies * buffers * max_batch * per_sample, "device" if on_device else "host"))
    return needs


def _times(instances: int) -> str:
    return f", for each of {instances} instances" if instances > 1 else ""


def check_fits(config: SizedRun, dataset_count: int | None, host: Memory | None = None,
               device: Memory | None = None) -> None:
    """Refuse a run whose sized allocations exceed MEMORY_SHARE of what is available."""
    host = host or available_memory()
    # The tightest of the run's devices: each holds the same instances.
    device = device or _least_free(getattr(config.device, "devices", None) or (config.device.device,))
    needs = run_needs(config, dataset_count)
    for where, room in (("host", host), ("device", device)):
        parts = [n for n in needs if n.where == where]
        total = sum(n.nbytes for n in parts)
        if room is None or not parts or total <= room.budget:
            continue
        largest = max(parts, key=lambda n: n.nbytes)
        raise ConfigError(
            f"this run needs at least {_size(total)} of {where} memory, more than the {_size(room.budget)} "
            f"it may plan for ({MEMORY_SHARE:.0%} of {_size(room.available)} available, {room.source}); "
            f"largest part: {largest.what}: {_size(largest.nbytes)}")


def schedule_room(config: SizedRun, dataset_count: int | None, host: Memory) -> int:
    """Bytes LoadGen's schedule may take of `host`'s budget, after the run's other host needs."""
    others = sum(n.nbytes for n in run_needs(config, dataset_count) if n.where == "host" and n.kind != "schedule")
    return max(0, host.budget - others)
