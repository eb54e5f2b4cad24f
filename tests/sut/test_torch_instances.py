"""Torch instances of one device share one compiled network (each keeps its own staging),
and the last one to close releases it; other devices, batches or modes compile their own."""

from __future__ import annotations

import numpy as np

from sut.backends import torch_backend
from sut.backends.base import BackendOptions, ModelSpec
from sut.backends.torch_backend import TorchBackend
from sut.compiling import CompileRecord

SPEC = ModelSpec("resnet18", "fp32", image_size=32)


def counting_compiler(monkeypatch):
    """compile_network stood in by the eager network and a record: what is counted is who
    compiles, not Inductor (tests/sut/test_compiling.py compiles for real)."""
    calls, released = [], []

    def compile_network(torch, net, mode, label, examples, key):
        calls.append(mode)
        return net, CompileRecord(mode, 0.1, len(examples), 0, 0, 1, 0, "/tmp", {})

    monkeypatch.setattr(torch_backend, "compile_network", compile_network)
    monkeypatch.setattr(torch_backend, "release_compiled", lambda torch: released.append(True))
    return calls, released


def loaded(compile_mode: str = "default", max_batch: int = 4) -> TorchBackend:
    backend = TorchBackend(SPEC, BackendOptions(max_batch=max_batch, compile=compile_mode, threads=1))
    backend.load()
    backend.allocate_staging(8)
    return backend


def test_instances_of_one_device_compile_once_and_release_with_the_last(monkeypatch):
    calls, released = counting_compiler(monkeypatch)
    first, second = loaded(), loaded()
    assert calls == ["default"]
    assert first.describe()["compile"]["shared_with_earlier_instance"] is False
    assert second.describe()["compile"]["shared_with_earlier_instance"] is True
    samples = np.random.default_rng(0).random((8, 3, 32, 32), dtype=np.float32)
    first.stage(np.arange(8), samples)
    second.stage(np.arange(8), samples[::-1].copy())  # staging stays each instance's own
    assert (first.run_batch(np.arange(4)).wait() == second.run_batch(np.arange(7, 3, -1)).wait()).all()
    first.close()
    assert released == []  # the second still runs it
    second.close()
    assert released == [True]
    first.close()  # a second close releases nothing more
    assert released == [True] and torch_backend._SHARED_COMPILED == {}


def test_another_max_batch_or_mode_compiles_its_own(monkeypatch):
    calls, _ = counting_compiler(monkeypatch)
    backends = [loaded("default", 4), loaded("default", 8), loaded("max-autotune", 4)]
    assert calls == ["default", "default", "max-autotune"]
    for backend in backends:
        backend.close()
    assert torch_backend._SHARED_COMPILED == {}


def test_eager_instances_share_nothing(monkeypatch):
    calls, released = counting_compiler(monkeypatch)
    first, second = loaded("none"), loaded("none")
    assert calls == [] and first._net is not second._net
    first.close(), second.close()
    assert released == []
