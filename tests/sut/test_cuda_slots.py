"""The CUDA slot machinery both GPU backends share (sut/backends/cuda_slots.py), on any
machine: the torch backend's real slot code runs on the CPU behind a stand-in for the
torch.cuda calls it makes (streams, events, graph capture, synchronize), which records them.

What is checked: graphs are captured in thread-local mode; re-staging is refused while a
batch is out and waits for the GPU before dropping the slots; a pending batch released
twice, or after its slots were dropped, gives nothing back to the free queue.
"""

from __future__ import annotations

import contextlib
import inspect
import types
from typing import Any

import numpy as np
import pytest
import torch

from plumbing.errors import BackendError
from sut.backends.base import BackendOptions, ModelSpec
from sut.backends.tensorrt_backend import TensorRTBackend
from sut.backends.torch_backend import TorchBackend

IMAGE_SIZE = 4


class _Event:
    def record(self, stream: Any = None) -> None:
        pass

    def synchronize(self) -> None:
        pass


class _Graph:
    def replay(self) -> None:
        pass


class FakeCuda:
    """The torch.cuda calls the slot code makes, recorded in `calls`."""

    def __init__(self, owner: "FakeTorch") -> None:
        self.owner = owner

    def Stream(self, device: Any = None) -> Any:
        return types.SimpleNamespace(synchronize=lambda: None, cuda_stream=1)

    def Event(self, enable_timing: bool = False) -> _Event:
        return _Event()

    def stream(self, stream: Any) -> Any:
        return contextlib.nullcontext()

    def graph_pool_handle(self) -> object:
        return object()

    def CUDAGraph(self) -> _Graph:
        return _Graph()

    def graph(self, cuda_graph: Any, **kwargs: Any) -> Any:
        self.owner.calls.append(("graph", kwargs))
        return contextlib.nullcontext()

    def synchronize(self, device: Any = None) -> None:
        backend = self.owner.backend
        self.owner.calls.append(("synchronize", len(backend._slots) if backend is not None else None))

    def memory_reserved(self, device: Any = None) -> int:
        return 0

    def empty_cache(self) -> None:
        pass


class FakeTorch:
    """torch, with torch.cuda replaced and device/pinned allocations made on the CPU."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.backend: Any = None
        self.cuda = FakeCuda(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    def zeros(self, *shape: Any, dtype: Any = None, device: Any = None, pin_memory: bool = False) -> torch.Tensor:
        self.calls.append(("zeros", tuple(shape[0]) if isinstance(shape[0], tuple) else shape))
        return torch.zeros(*shape, dtype=dtype)


def torch_slots(cuda_graphs: bool = False, in_flight: int = 2) -> tuple[TorchBackend, FakeTorch]:
    """A CUDA torch backend whose slots live on the CPU; a tiny network."""
    backend = TorchBackend(ModelSpec("resnet18", "fp32", image_size=IMAGE_SIZE),
                           BackendOptions(device="cuda", max_batch=4, in_flight=in_flight, cuda_graphs=cuda_graphs,
                                          compile="none", channels_last=False))
    fake = FakeTorch()
    fake.backend = backend
    torch.manual_seed(0)
    backend._torch, backend._device, backend._dtype = fake, torch.device("cpu"), torch.float32
    backend._net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * IMAGE_SIZE * IMAGE_SIZE, 10))
    return backend, fake


def staged(backend: TorchBackend, capacity: int) -> None:
    backend.allocate_staging(capacity)
    rng = np.random.default_rng(capacity)
    backend.stage(np.arange(capacity), rng.standard_normal((capacity, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32))


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.strip() == text and text, repr(text)
    return text


# -- CUDA graph capture mode --------------------------------------------------------------


def test_graphs_are_captured_in_thread_local_mode():
    backend, fake = torch_slots(cuda_graphs=True)
    staged(backend, 8)
    captures = [kwargs for name, kwargs in fake.calls if name == "graph"]
    assert len(captures) == 2 * 3  # two slots, buckets 1, 2, 4
    assert all(kwargs.get("capture_error_mode") == "thread_local" for kwargs in captures), captures
    assert all(kwargs.get("stream") is not None and "pool" in kwargs for kwargs in captures)


def test_this_torch_takes_the_capture_mode_keyword():
    # torch.cuda.graph has had capture_error_mode since 2.1; setup.py asks for 2.11 or newer.
    assert "capture_error_mode" in inspect.signature(torch.cuda.graph).parameters


# -- re-staging with batches in flight ----------------------------------------------------


def test_restaging_with_a_batch_in_flight_is_refused_then_waits_for_the_gpu():
    backend, fake = torch_slots()
    staged(backend, 8)
    pending = backend.run_batch(np.array([0, 1]))
    with pytest.raises(BackendError) as exc:
        backend.allocate_staging(16)
    assert "1 batch(es) in flight" in one_line(exc)
    assert backend._staged.shape[0] == 8 and len(backend._slots) == 2  # nothing was dropped
    assert pending.wait().shape == (2,)
    pending.release()
    fake.calls.clear()
    backend.allocate_staging(16)
    # The GPU is waited for while the old slots still exist, before the new buffer is made.
    assert fake.calls[0] == ("synchronize", 2), fake.calls[:3]
    assert fake.calls[1][0] == "zeros" and fake.calls[1][1][0] == 16
    assert backend._free_slots.qsize() == 2


def test_same_size_restaging_keeps_slots_even_with_a_batch_out():
    backend, _ = torch_slots()
    staged(backend, 8)
    slots = list(backend._slots)
    pending = backend.run_batch(np.array([3]))
    backend.allocate_staging(8)  # same size: nothing is dropped, so nothing to refuse
    assert backend._slots == slots
    pending.release()


def test_a_release_twice_or_after_restaging_gives_nothing_back():
    backend, _ = torch_slots()
    staged(backend, 8)
    first = backend.run_batch(np.array([0]))
    first.release()
    first.release()  # twice would list the slot twice: two batches sharing one slot
    assert backend._free_slots.qsize() == 2
    late = backend.run_batch(np.array([1]))
    expected = late.wait().copy()
    late.release()
    staged(backend, 16)
    late.release()  # a slot of the dropped generation: not into the new queue
    assert backend._free_slots.qsize() == 2 and all(slot in backend._slots for slot in backend._free_slots.queue)
    assert expected.shape == (1,)


def test_close_with_a_batch_out_waits_and_the_late_release_is_a_no_op():
    backend, fake = torch_slots()
    staged(backend, 8)
    pending = backend.run_batch(np.array([0, 1, 2]))
    fake.calls.clear()
    backend.close()
    assert ("synchronize", 2) in fake.calls  # before the slots went
    pending.release()
    assert backend._free_slots.qsize() == 0 and backend._slots == []


def test_ungraphed_answers_survive_restaging():
    backend, _ = torch_slots()
    staged(backend, 8)
    rows = np.array([0, 5, 7])
    before = backend.run_batch(rows)
    answer = before.wait().copy()
    before.release()
    staged(backend, 8 * 2)
    staged(backend, 8)  # the same samples again, in fresh slots
    after = backend.run_batch(rows)
    assert np.array_equal(after.wait(), answer)
    after.release()


def test_tensorrt_restaging_with_a_batch_out_is_refused_before_dropping():
    # The TensorRT backend re-stages through the same base: its slots stay while one is out.
    trt_backend = TensorRTBackend(ModelSpec("resnet18", "fp32", image_size=IMAGE_SIZE),
                                  BackendOptions(device="cuda", max_batch=4, in_flight=1))
    fake = FakeTorch()
    fake.backend = trt_backend
    trt_backend._torch, trt_backend._plan, trt_backend._engine = fake, object(), object()
    trt_backend._staged = torch.zeros((8, 3, IMAGE_SIZE, IMAGE_SIZE))
    slot = types.SimpleNamespace(graphs={}, contexts={}, context=None, scratch=None)
    trt_backend._add_slot(slot)  # built, and out: never put in the free queue
    with pytest.raises(BackendError, match="in flight"):
        trt_backend.allocate_staging(16)
    assert trt_backend._slots == [slot] and trt_backend._staged.shape[0] == 8
    assert not [call for call in fake.calls if call[0] == "zeros"]
