"""Real TensorRT engines, fp32, fp16 and int8, against the torch backend and the fp32
network. They need TensorRT and a CUDA GPU and skip, saying which is missing, elsewhere:
TensorRT cannot be installed on this project's machines.
"""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from sut.backends.base import BackendOptions, ModelSpec
from sut.backends.tensorrt_backend import TensorRTBackend
from sut.data import SyntheticDataset
from sut.onnx_export import INPUT_NAME, export_onnx

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
pytestmark = [
    pytest.mark.skipif(not HAVE_TRT, reason="TensorRT is not installed (not installable on this project's machines)"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)"),
]

IMAGE_SIZE = 32
COUNT = 40
CALIBRATION_IMAGES = 16


@pytest.fixture(scope="module")
def reference():
    """The staged samples and the fp32 network's logits for them, one at a time."""
    from sut.models import build_model

    net = build_model(ModelSpec("resnet18", "fp32", image_size=IMAGE_SIZE)).cuda()
    samples = SyntheticDataset(count=COUNT, image_size=IMAGE_SIZE).load(np.arange(COUNT))
    with torch.inference_mode():
        logits = torch.cat([net(torch.from_numpy(samples[i : i + 1]).cuda()) for i in range(COUNT)])
    return samples, logits.cpu().numpy()


def max_calibration(fp32_path: Path):
    """Plain max calibration on synthetic images through ONNX Runtime: max |x| of every
    tensor, max |w| / 127 per output channel of every Conv/Gemm weight."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(fp32_path))
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    typed = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    tensors = [out for node in graph.node for out in node.output if out in typed]
    graph.output.extend(typed[name] for name in tensors)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    images = SyntheticDataset(count=CALIBRATION_IMAGES, image_size=IMAGE_SIZE, seed=7).load(
        np.arange(CALIBRATION_IMAGES))
    values = session.run(tensors, {INPUT_NAME: images})
    amax = {name: float(np.abs(value).max()) or 1e-3 for name, value in zip(tensors, values)}
    amax[INPUT_NAME] = float(np.abs(images).max())
    scales = {}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm"):
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            weight = np.moveaxis(inits[node.input[1]], 0 if node.op_type == "Conv" or trans_b else 1, 0)
            scales[node.input[1]] = np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1) / 127.0
    return types.SimpleNamespace(activation_amax=amax, weight_scales=scales, cache_hash="max-synthetic-16")


def loaded(tmp_path: Path, precision: str, cuda_graphs: bool = True) -> TensorRTBackend:
    model = ModelSpec("resnet18", precision, image_size=IMAGE_SIZE)
    extra = dict(cache_dir=tmp_path / "cache")
    if precision == "int8":
        extra["calibration"] = max_calibration(export_onnx(model, tmp_path / "cache"))
    trt_backend = TensorRTBackend(model, BackendOptions(device="cuda", max_batch=16, in_flight=2,
                                                        cuda_graphs=cuda_graphs, extra=extra))
    trt_backend.load()
    trt_backend.allocate_staging(COUNT)
    trt_backend.stage(np.arange(COUNT), SyntheticDataset(count=COUNT, image_size=IMAGE_SIZE).load(np.arange(COUNT)))
    return trt_backend


def top1(trt_backend: TensorRTBackend, rows: np.ndarray) -> np.ndarray:
    pending = trt_backend.run_batch(rows)
    try:
        return pending.wait().copy()
    finally:
        pending.release()


@pytest.mark.parametrize("cuda_graphs", [True, False])
def test_real_fp32_engine_matches_the_torch_backend(tmp_path, reference, cuda_graphs):
    from sut.backends.torch_backend import TorchBackend

    samples, _ = reference
    torch_backend = TorchBackend(ModelSpec("resnet18", "fp32", image_size=IMAGE_SIZE),
                                 BackendOptions(device="cuda", max_batch=16))
    torch_backend.load()
    torch_backend.allocate_staging(COUNT)
    torch_backend.stage(np.arange(COUNT), samples)
    torch_top1 = top1(torch_backend, np.arange(16))
    torch_backend.close()

    trt_backend = loaded(tmp_path, "fp32", cuda_graphs)
    info = trt_backend.describe()
    assert info["engine_cache"] == "built" and Path(info["engine_path"]).is_file()
    assert Path(info["timing_cache_path"]).is_file() and info["timing_cache"] == "new"
    # TF32 on both sides: rare near-ties may flip, nothing else.
    assert (top1(trt_backend, np.arange(16)) == torch_top1).mean() >= 0.9
    assert trt_backend.time_tight_loop(16, 10) > 0
    trt_backend.close()
    assert loaded(tmp_path, "fp32", cuda_graphs).describe()["engine_cache"] == "hit"


@pytest.mark.parametrize("precision, min_cosine, min_in_top5", [("fp16", 0.995, 0.95), ("int8", 0.95, 0.9)])
def test_real_reduced_precision_engine_agrees_with_fp32(tmp_path, reference, precision, min_cosine, min_in_top5):
    _, fp32_logits = reference
    trt_backend = loaded(tmp_path, precision)
    info = trt_backend.describe()
    assert info["precision"] == precision and info["strongly_typed"] is True
    assert info["input_dtype"] == "float32"  # both graphs keep float32 IO
    samples = SyntheticDataset(count=16, image_size=IMAGE_SIZE).load(np.arange(16))
    logits = trt_backend.logits(samples)
    expected = fp32_logits[:16]
    cosine = np.sum(expected * logits, axis=1) / (np.linalg.norm(expected, axis=1) * np.linalg.norm(logits, axis=1))
    in_top5 = np.mean([r in t for r, t in zip(expected.argmax(1), np.argsort(logits, axis=1)[:, -5:])])
    assert cosine.mean() > min_cosine and in_top5 >= min_in_top5, (cosine.mean(), in_top5)
    # The graphs of every bucket answer as the ungraphed path does.
    graphed = top1(trt_backend, np.arange(16))
    assert (graphed == logits.argmax(1)).mean() >= 0.9, (graphed, logits.argmax(1))
    trt_backend.close()
