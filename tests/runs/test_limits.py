"""Bounds on what a run allocates: refused before the allocation, naming the number and the limit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from runs import limits
from runs.config import CliRequest, resolve
from plumbing.errors import ConfigError

GIB = 1 << 30


@pytest.fixture
def host_16g(monkeypatch: pytest.MonkeyPatch) -> limits.Memory:
    memory = limits.Memory(16 * GIB, "a test's 16 GiB")
    monkeypatch.setattr(limits, "available_memory", lambda: memory)
    return memory


def test_max_batch_beyond_memory_is_refused_at_resolve(host_16g: limits.Memory) -> None:
    # Issue 11, item 8: --max-batch 100000 at 224 px died in NumPy ("Unable to allocate 56.1 GiB").
    with pytest.raises(ConfigError) as info:
        resolve(CliRequest(gpu="cpu", max_batch=100_000))
    message = str(info.value)
    assert "max_batch 100,000 from CLI at 224 px" in message
    assert "112.2 GiB" in message and "8.0 GiB" in message and "a test's 16 GiB" in message


def test_a_max_batch_that_fits_is_allowed(host_16g: limits.Memory) -> None:
    assert resolve(CliRequest(gpu="cpu", max_batch=1024)).knobs["max_batch"] == 1024


@pytest.mark.parametrize("fields, words", [
    # Issue 11, item 3: std::bad_alloc inside LoadGen, then a segfault.
    ({"scenario": "Server", "target_qps": 1e12}, ["5,000,000,000,000 queries", "server_target_qps 1e+12 from CLI"]),
    ({"target_qps": 1e12}, ["5,500,000,000,000 samples", "offline_expected_qps 1e+12 from CLI"]),
    ({"min_query_count": 10**12}, ["1,000,000,000,000 samples", "min_query_count 1e+12 from CLI"]),
    ({"scenario": "SingleStream", "min_query_count": 10**12}, ["1,000,000,000,000 queries"]),
    ({"dataset_count": 10**12}, ["index of 1,000,000,000,000 dataset samples"]),
    ({"image_size": 100_000}, ["staged samples of 111.8 GiB at 100000 px"]),
])
def test_what_loadgen_or_the_dataset_cannot_hold_is_refused(host_16g: limits.Memory, fields: dict,
                                                             words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(CliRequest(gpu="cpu", **fields))
    for word in words:
        assert word in str(info.value)


def test_the_default_run_fits_a_small_host() -> None:
    config = resolve(CliRequest(gpu="cpu"))
    needs = limits.run_needs(config, 1024)
    assert sum(n.nbytes for n in needs) < GIB  # well within a laptop's half of its memory
    assert {n.kind for n in needs} == {"schedule", "index", "staging", "images", "batches"}


def test_device_memory_is_checked_apart_from_the_host() -> None:
    config = resolve(CliRequest(gpu="cpu", max_batch=64))
    config.device = type(config.device)(config.device.profile, "cuda:0", "a GPU", 1)
    config.backend = "torch"
    big = limits.Memory(1 << 50, "plenty")
    limits.check_fits(config, 1024, host=big, device=big)
    with pytest.raises(ConfigError, match="of device memory.*staged samples"):
        limits.check_fits(config, 1024, host=big, device=limits.Memory(512 << 20, "a small card"))


def test_threads_beyond_the_cpus_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 11, item 2: --threads 100000 started 9,301 threads and took 17 GB.
    monkeypatch.setattr(limits, "usable_cpus", lambda: 4)
    with pytest.raises(ConfigError, match=r"threads 100000 \(from CLI\) exceeds the 4 CPUs.*--threads 4"):
        resolve(CliRequest(gpu="cpu", threads=100_000))
    assert resolve(CliRequest(gpu="cpu", threads=4)).knobs["threads"] == 4


def test_available_memory_sees_the_address_space_limit() -> None:
    # ulimit -v is one of the limits a run must fit; read in a child so this process keeps its own.
    code = ("import resource; from runs import limits; "
            "resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30)); "
            "m = limits.available_memory(); print(m.available, m.source)")
    available = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                   check=True).stdout.split()[0])
    assert 0 < available < 8 << 30  # less than the limit: what the process already maps is counted


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_a_batch_beyond_the_gpu_is_refused_before_the_backend_loads() -> None:
    free = limits.device_memory("cuda:0")
    assert free is not None and free.available > 0
    with pytest.raises(ConfigError, match="of device memory.*max_batch 10,000,000 from CLI"):
        resolve(CliRequest(gpu="auto", backend="torch", precision="fp16", max_batch=10_000_000))
    assert resolve(CliRequest(gpu="auto", backend="torch", precision="fp16", max_batch=256)).knobs["max_batch"] == 256
