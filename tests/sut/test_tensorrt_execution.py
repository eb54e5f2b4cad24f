"""The TensorRT backend's CUDA execution path (slots, per-bucket contexts, CUDA graphs)
against the strict stand-in (tests/sut/fake_tensorrt.py), whose engine runs the fp32
torch network on the buffers the backend binds. Needs a CUDA GPU; skips elsewhere.

The stand-in refuses what TensorRT refuses while the backend runs: a set_input_shape or a
first enqueue after a shape change inside a capture, an enqueue before any shape, a
second logger; every test ends by checking that it refused nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from plumbing.errors import BackendError
from sut.backends.base import BackendOptions, ModelSpec
from sut.backends.cuda_slots import CudaSlotBackend
from sut.backends.tensorrt_backend import TensorRTBackend
from sut.data import SyntheticDataset
from sut.onnx_export import export_onnx
from tests.sut.fake_tensorrt import VERSIONS, install_fake_trt
from tests.sut.trt_helpers import calibration_for, cuda_stack

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")

IMAGE_SIZE = 32
COUNT = 40


@pytest.fixture(params=VERSIONS)
def fake_trt(request, monkeypatch):
    cuda_stack(monkeypatch, torch_cuda=torch.version.cuda)  # no TensorRT wheels: the fake is the TensorRT
    return install_fake_trt(monkeypatch, request.param)


@pytest.fixture(scope="module")
def torch_reference():
    """Top-1 of every staged sample from the fp32 network on the GPU, one at a time."""
    from sut.models import build_model

    net = build_model(ModelSpec("resnet18", "fp32", image_size=IMAGE_SIZE)).cuda()
    samples = SyntheticDataset(count=COUNT, image_size=IMAGE_SIZE).load(np.arange(COUNT))
    with torch.inference_mode():
        logits = torch.cat([net(torch.from_numpy(samples[i : i + 1]).cuda()) for i in range(COUNT)])
    return net, samples, logits.cpu()


def loaded(tmp_path: Path, precision: str = "fp32", staging: str = "device", cuda_graphs: bool = True,
           **extra) -> TensorRTBackend:
    model = ModelSpec("resnet18", precision, image_size=IMAGE_SIZE)
    if precision == "int8":
        extra.setdefault("calibration", calibration_for(export_onnx(model, tmp_path / "cache")))
    options = BackendOptions(
        device="cuda", max_batch=16, in_flight=2, cuda_graphs=cuda_graphs, staging=staging,
        extra=dict(cache_dir=tmp_path / "cache", **extra),
    )
    trt_backend = TensorRTBackend(model, options)
    trt_backend.load()
    trt_backend.allocate_staging(COUNT)
    samples = SyntheticDataset(count=COUNT, image_size=IMAGE_SIZE).load(np.arange(COUNT))
    trt_backend.stage(np.arange(COUNT), samples)
    return trt_backend


def answers(trt_backend: TensorRTBackend, rows) -> np.ndarray:
    pending = trt_backend.run_batch(np.asarray(rows, dtype=np.int64))
    try:
        return pending.wait().copy()
    finally:
        pending.release()


def check_mixed_batches(trt_backend: TensorRTBackend, reference_logits: torch.Tensor, margin=1e-3) -> None:
    """Batches of every size, in an order that switches bucket each time, give the same
    top-1 as one-at-a-time inference wherever the reference's top two are more than
    `margin` (relative) apart."""
    expected = reference_logits.argmax(1).numpy()
    top2 = reference_logits.topk(2, dim=1).values
    clear = ((top2[:, 0] - top2[:, 1]) > margin * top2[:, 0].abs().clamp(min=1)).numpy()
    assert clear.mean() > 0.5, "reference has too many near ties to check anything"
    rng = np.random.default_rng(0)
    for size in [1, 16, 3, 9, 1, 12, 5, 16, 2, 7]:
        rows = rng.choice(COUNT, size=size, replace=False)
        got = answers(trt_backend, rows)
        assert got.dtype == np.int32 and got.shape == (size,)
        mask = clear[rows]
        assert np.array_equal(got[mask], expected[rows][mask]), (size, rows)
    assert answers(trt_backend, []).shape == (0,)


@pytest.mark.parametrize("staging, cuda_graphs", [("device", True), ("device", False), ("host", True)])
def test_fake_engine_execution_path(fake_trt, tmp_path, torch_reference, staging, cuda_graphs):
    trt, state = fake_trt
    net, _, reference = torch_reference
    state.compute = net
    trt_backend = loaded(tmp_path, staging=staging, cuda_graphs=cuda_graphs)
    info = trt_backend.describe()
    assert info["engine_cache"] == "built" and info["tensorrt"] == trt.__version__
    assert info["input_dtype"] == "float32" and info["precision"] == "fp32"
    if cuda_graphs:
        assert info["cuda_graphs"] == "per batch bucket", info["cuda_graphs"]
        assert info["graph_buckets"] == [1, 2, 4, 8, 10, 12, 14, 16]
        # Each slot: one free-shape context plus one fixed-shape context per bucket, all
        # on user-managed memory, the bucket contexts never reshaped after capture.
        assert len(state.contexts) == 2 * (1 + 8)
        assert all(c.strategy is trt.ExecutionContextAllocationStrategy.USER_MANAGED for c in state.contexts)
    else:
        assert info["cuda_graphs"].startswith("off") and len(state.contexts) == 2
    check_mixed_batches(trt_backend, reference)
    with pytest.raises(BackendError, match=f"outside the {COUNT} staged samples"):
        trt_backend.run_batch(np.array([0, -1]))  # an unstaged sample: never into the graph
    assert answers(trt_backend, [1, 2]).shape == (2,)
    assert trt_backend.time_tight_loop(8, 5) > 0
    assert trt_backend.time_tight_loop(3, 2) > 0  # not a bucket: the free-shape context
    trt_backend.close()
    trt_backend.close()

    # A second backend finds the engine in the cache, through the same one logger.
    again = loaded(tmp_path, staging=staging, cuda_graphs=cuda_graphs)
    assert again.describe()["engine_cache"] == "hit" and state.builds == 1
    again.close()
    assert len(state.loggers) == 1 and state.violations == []


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precision_engines_run_with_graphs(fake_trt, tmp_path, torch_reference, precision):
    trt, state = fake_trt
    net, _, reference = torch_reference
    state.compute = net  # the stand-in computes in fp32: this checks the plumbing, not the numbers
    trt_backend = loaded(tmp_path, precision)
    info = trt_backend.describe()
    assert info["precision"] == precision and state.precisions == [precision]
    assert info["cuda_graphs"] == "per batch bucket"
    check_mixed_batches(trt_backend, reference)
    logits = trt_backend.logits(SyntheticDataset(count=3, image_size=IMAGE_SIZE).load(np.arange(3)))
    assert logits.shape == (3, 1000) and logits.dtype == np.float32
    trt_backend.close()
    assert state.violations == [] and len(state.loggers) == 1


def test_restaging_with_a_batch_in_flight_is_refused(fake_trt, tmp_path, torch_reference):
    trt, state = fake_trt
    state.compute = torch_reference[0]
    trt_backend = loaded(tmp_path)
    pending = trt_backend.run_batch(np.arange(4))
    with pytest.raises(BackendError, match="in flight"):
        trt_backend.allocate_staging(COUNT * 2)
    assert pending.wait().shape == (4,)
    pending.release()
    trt_backend.allocate_staging(COUNT * 2)  # nothing out now: re-staged, graphs captured anew
    pending.release()  # a late, second release of a dropped slot: no effect
    assert trt_backend._free_slots.qsize() == 2
    trt_backend.close()


def test_failed_capture_falls_back_to_no_graphs(fake_trt, tmp_path, torch_reference, monkeypatch):
    trt, state = fake_trt
    net, _, reference = torch_reference
    state.compute = net
    monkeypatch.delattr(trt, "ExecutionContextAllocationStrategy")  # no user-managed contexts
    trt_backend = loaded(tmp_path)
    note = trt_backend.describe()["cuda_graphs"]
    assert note.startswith("off (capture failed:") and "\n" not in note
    check_mixed_batches(trt_backend, reference)
    trt_backend.close()


def test_stand_in_catches_a_capture_without_its_warm_up(fake_trt, tmp_path, torch_reference, monkeypatch):
    # The check bites in a real capture: without the enqueue after the shape change, the
    # captured enqueue is the first, which TensorRT's CUDA-graph guidance rules out.
    trt, state = fake_trt
    state.compute = torch_reference[0]
    capture = CudaSlotBackend._capture
    monkeypatch.setattr(CudaSlotBackend, "_capture",
                        lambda self, slot, bucket, warmups, *args: capture(self, slot, bucket, 0, *args))
    trt_backend = loaded(tmp_path)
    assert trt_backend.describe()["cuda_graphs"].startswith("off (capture failed: TensorRT execution failed")
    assert any("inside a CUDA graph capture" in v for v in state.violations)
    check_mixed_batches(trt_backend, torch_reference[2])  # and the fallback still answers right
    trt_backend.close()
