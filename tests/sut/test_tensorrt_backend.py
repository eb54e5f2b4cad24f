"""TensorRT backend without TensorRT: the planning module (sut/trt_plan.py), and the order
and wording of load()'s checks, the install advice and the CUDA-build check
(sut/trt_cuda.py) included, against the strict stand-in (tests/sut/fake_tensorrt.py).

The engine build and cache are tests/sut/test_tensorrt_engine.py, the CUDA execution path
tests/sut/test_tensorrt_execution.py, real engines tests/sut/test_tensorrt_real.py.
"""

from __future__ import annotations

import builtins
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from plumbing.errors import BackendError, ConfigError, DeviceError
from sut.backends.base import BackendOptions, ModelSpec
from sut.backends.tensorrt_backend import TensorRTBackend
from sut.trt_cuda import CudaStack, Driver, tensorrt_cuda_builds, trt_missing
from sut.trt_plan import (
    FP16_GRAPH,
    FP32_EXPORT,
    INT8_QDQ_GRAPH,
    BindingPlan,
    TensorDesc,
    engine_cache_key,
    engine_cache_path,
    engine_stem,
    onnx_for_precision,
    profile_shapes,
)
from tests.sut.fake_tensorrt import install_fake_trt
from tests.sut.trt_helpers import cuda_stack, fake_gpu

IMAGE_SIZE = 32


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.strip() == text and text, repr(text)
    return text


# -- engine cache key and path -----------------------------------------------------------

KEY_ARGS: dict[str, Any] = dict(
    gpu_name="NVIDIA H100 80GB HBM3",
    compute_capability=(9, 0),
    trt_version="10.3.0",
    model="resnet50",
    precision="int8",
    min_batch=1,
    opt_batch=256,
    max_batch=256,
    image_size=224,
    onnx_sha256="ab" * 32,
    calibration_hash="c0ffee",
)
KEY_CHANGES: dict[str, Any] = dict(
    gpu_name="NVIDIA L4",
    compute_capability=(8, 9),
    trt_version="10.4.0",
    model="resnet18",
    precision="fp16",
    min_batch=2,
    opt_batch=128,
    max_batch=512,
    image_size=160,
    onnx_sha256="cd" * 32,
    calibration_hash=None,
)


def test_engine_cache_key_is_stable_and_short_hex():
    key = engine_cache_key(**KEY_ARGS)
    assert key == engine_cache_key(**KEY_ARGS)
    assert len(key) == 24 and all(c in "0123456789abcdef" for c in key)
    assert key == engine_cache_key(**KEY_ARGS, settings=None) == engine_cache_key(**KEY_ARGS, settings={})


@pytest.mark.parametrize("field_name", sorted(KEY_CHANGES))
def test_engine_cache_key_changes_with_each_field(field_name):
    changed = dict(KEY_ARGS, **{field_name: KEY_CHANGES[field_name]})
    assert engine_cache_key(**changed) != engine_cache_key(**KEY_ARGS)


def test_engine_cache_key_changes_with_builder_settings():
    base = engine_cache_key(**KEY_ARGS, settings={"workspace": 4 << 30, "tf32": True})
    assert base == engine_cache_key(**KEY_ARGS, settings={"tf32": True, "workspace": 4 << 30})
    assert base != engine_cache_key(**KEY_ARGS, settings={"workspace": 4 << 30, "tf32": False})
    assert base != engine_cache_key(**KEY_ARGS, settings={"workspace": 1 << 30, "tf32": True})


def test_engine_cache_path_lives_under_the_deepgap_cache(tmp_path, monkeypatch):
    key = engine_cache_key(**KEY_ARGS)
    stem = engine_stem("resnet50", 224, "int8", 256, "NVIDIA H100 80GB HBM3", (9, 0), "10.3.0")
    assert stem == "resnet50-224px-int8-b256-nvidia-h100-80gb-hbm3-sm90-trt10.3.0"
    monkeypatch.setenv("DEEPGAP_CACHE", str(tmp_path / "env-cache"))
    path = engine_cache_path(None, key, stem)
    assert path == tmp_path / "env-cache" / "tensorrt" / f"{stem}-{key}.engine"
    assert engine_cache_path(tmp_path / "mine", key, stem).parent == tmp_path / "mine" / "tensorrt"
    monkeypatch.delenv("DEEPGAP_CACHE")
    assert engine_cache_path(None, key, stem).parent == Path.home() / ".cache" / "deepgap" / "tensorrt"
    # Odd characters in the stem never leave the folder.
    assert engine_cache_path(tmp_path, key, "../x y/z").parent == tmp_path / "tensorrt"
    with pytest.raises(ConfigError):
        engine_cache_path(tmp_path, "../../etc", stem)


# -- profile shapes and precisions -------------------------------------------------------


def test_profile_shapes():
    assert profile_shapes(224, 1, 256, 256) == ((1, 3, 224, 224), (256, 3, 224, 224), (256, 3, 224, 224))
    assert profile_shapes(32, 1, 1, 1, channels=1) == ((1, 1, 32, 32),) * 3
    assert profile_shapes(64, 2, 4, 8)[1] == (4, 3, 64, 64)


@pytest.mark.parametrize(
    "args",
    [(224, 2, 1, 4), (224, 1, 8, 4), (224, 0, 1, 1), (0, 1, 1, 1), (224, 1, 1, 1.5), (224, True, 1, 1)],
)
def test_profile_shapes_rejects_bad_batches(args):
    with pytest.raises(ConfigError) as exc:
        profile_shapes(*args)
    one_line(exc)


def test_onnx_graph_for_each_precision():
    assert onnx_for_precision("fp32") == FP32_EXPORT
    assert onnx_for_precision("fp16") == FP16_GRAPH
    assert onnx_for_precision("int8") == INT8_QDQ_GRAPH
    with pytest.raises(BackendError) as exc:
        onnx_for_precision("bf16")
    assert "fp32, fp16, int8" in one_line(exc)


# -- binding plan ------------------------------------------------------------------------


def good_io(**changes: Any) -> list[TensorDesc]:
    io = {
        "input": TensorDesc("input", "input", "float32", (-1, 3, 224, 224)),
        "logits": TensorDesc("logits", "output", "float32", (-1, 1000)),
    }
    io.update(changes)
    return [t for t in io.values() if t is not None]


def test_binding_plan_accepts_a_good_engine_and_sizes_buffers():
    plan = BindingPlan.from_descriptions(good_io(), num_classes=1000, image_size=224, max_batch=64)
    assert plan.input_shape(8) == (8, 3, 224, 224)
    assert plan.output_shape(8) == (8, 1000)
    assert plan.input_nbytes(8) == 8 * 3 * 224 * 224 * 4
    assert plan.output_nbytes(64) == 64 * 1000 * 4
    half = BindingPlan.from_descriptions(
        good_io(input=TensorDesc("input", "input", "float16", [-1, 3, 224, 224])), 1000, 224
    )
    assert half.input_nbytes(2) == 2 * 3 * 224 * 224 * 2
    # A dynamic spatial size is fine: the backend always sets the full shape.
    BindingPlan.from_descriptions(good_io(input=TensorDesc("input", "input", "float32", (-1, 3, -1, -1))), 1000, 224)
    with pytest.raises(BackendError) as exc:
        plan.input_shape(65)
    assert "1..64" in one_line(exc)
    with pytest.raises(BackendError):
        plan.output_shape(0)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(input=TensorDesc("images", "input", "float32", (-1, 3, 224, 224))), "['images']"),
        (dict(extra=TensorDesc("scale", "input", "float32", (1,))), "exactly one input"),
        (dict(logits=TensorDesc("output", "output", "float32", (-1, 1000))), "exactly one output"),
        (dict(extra=TensorDesc("features", "output", "float32", (-1, 512))), "exactly one output"),
        (dict(input=TensorDesc("input", "input", "int8", (-1, 3, 224, 224))), "is int8"),
        (dict(logits=TensorDesc("logits", "output", "int32", (-1, 1000))), "is int32"),
        (dict(input=TensorDesc("input", "input", "float32", (8, 3, 224, 224))), "static batch of 8"),
        (dict(input=TensorDesc("input", "input", "float32", (-1, 224, 224, 3))), "expected [-1, 3, 224, 224]"),
        (dict(input=TensorDesc("input", "input", "float32", (-1, 3, 224))), "4 dimensions"),
        (dict(logits=TensorDesc("logits", "output", "float32", (-1, 10))), "10 classes"),
        (dict(logits=TensorDesc("logits", "output", "float32", (16, 1000))), "expected [-1, 1000]"),
        (dict(extra=TensorDesc("odd", "none", "float32", (1,))), "IO mode"),
    ],
)
def test_binding_plan_rejects_mismatches_in_one_line(changes, message):
    with pytest.raises(BackendError) as exc:
        BindingPlan.from_descriptions(good_io(**changes), num_classes=1000, image_size=224)
    assert message in one_line(exc)


# -- load(): order of checks, on any machine ---------------------------------------------


@dataclass
class Calibration:
    activation_amax: dict = field(default_factory=dict)
    weight_scales: dict = field(default_factory=dict)
    cache_hash: str = "0123456789abcdef"


def backend(precision="fp32", device="cuda", **extra: Any) -> TensorRTBackend:
    return TensorRTBackend(
        ModelSpec("resnet18", precision, image_size=IMAGE_SIZE),
        BackendOptions(device=device, max_batch=16, in_flight=2, extra=extra),
    )


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` -> ImportError


@pytest.mark.parametrize("torch_cuda, wheel", [("12.8", "tensorrt-cu12"), ("13.0", "tensorrt-cu13")])
def test_missing_tensorrt_names_the_wheel_for_torchs_cuda(no_tensorrt, monkeypatch, torch_cuda, wheel):
    # `pip install tensorrt` is TensorRT 11 for CUDA 13: wrong for a CUDA 12 torch and driver.
    cuda_stack(monkeypatch, torch_cuda=torch_cuda)
    with pytest.raises(BackendError) as exc:
        backend().load()
    text = one_line(exc)
    assert f"pip install {wheel} " in text and f"CUDA {torch_cuda}" in text and "--backend torch" in text
    assert text == trt_missing(torch_cuda)


def test_missing_tensorrt_with_a_cpu_only_torch_names_both_wheels(no_tensorrt, monkeypatch):
    cuda_stack(monkeypatch, torch_cuda=None)
    with pytest.raises(BackendError) as exc:
        backend().load()
    assert "tensorrt-cu12 or tensorrt-cu13" in one_line(exc) and "CPU-only" in str(exc.value)


def test_bf16_is_refused_before_looking_for_tensorrt(no_tensorrt):
    # Precision is checked first: the user learns bf16 is unsupported on every machine.
    with pytest.raises(BackendError) as exc:
        backend("bf16").load()
    text = one_line(exc)
    assert "bf16" in text and "fp32, fp16, int8" in text and "pip install" not in text


def test_int8_without_calibration_is_refused_before_looking_for_tensorrt(no_tensorrt):
    with pytest.raises(BackendError) as exc:
        backend("int8").load()
    assert "int8 needs a calibration cache" in one_line(exc)
    half_done = types.SimpleNamespace(activation_amax={}, weight_scales={})  # no cache_hash
    with pytest.raises(BackendError, match="int8 needs a calibration cache"):
        backend("int8", calibration=half_done).load()
    # With calibration the next check is TensorRT itself.
    with pytest.raises(BackendError, match="pip install tensorrt-cu"):
        backend("int8", calibration=Calibration()).load()


def test_int8_calibration_is_read_in_either_shape():
    mine = Calibration({"x": 1.5}, {"w": np.ones(4)}, "abc")
    assert backend("int8", calibration=mine)._calibration() is mine
    # calibration.cache.CalibrationCache: ranges and scales under .activations/.weights.
    cache_like = types.SimpleNamespace(
        activations={"x": types.SimpleNamespace(amax=2.5, max=3.0)},
        weights={"w": types.SimpleNamespace(axis=0, scales=np.full(4, 0.5, dtype=np.float32))},
        cache_hash="def",
    )
    read = backend("int8", calibration=cache_like)._calibration()
    assert read.activation_amax == {"x": 2.5} and read.cache_hash == "def"
    assert np.array_equal(read.weight_scales["w"], np.full(4, 0.5))


def test_cpu_device_is_refused_before_looking_for_tensorrt(no_tensorrt):
    with pytest.raises(DeviceError) as exc:
        backend(device="cpu").load()
    assert "CUDA GPUs only" in one_line(exc)


def test_not_loaded_backend_says_so():
    with pytest.raises(BackendError, match="not loaded"):
        backend().allocate_staging(4)
    assert backend().describe()["backend"] == "tensorrt"
    backend().close()  # safe before load




def test_torch_is_imported_before_tensorrt(monkeypatch):
    # pytorch/pytorch#103852: tensorrt imported first can segfault torch's CUDA kernels.
    install_fake_trt(monkeypatch)
    order: list[str] = []
    real_import = builtins.__import__

    def recording_import(name, *args, **kwargs):
        if name in ("torch", "tensorrt"):
            order.append(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # stop right after the imports
    monkeypatch.setattr(builtins, "__import__", recording_import)
    with pytest.raises(DeviceError):
        backend().load()
    assert "tensorrt" in order and order.index("torch") < order.index("tensorrt"), order


def test_no_gpu_is_a_device_error_once_tensorrt_imports(monkeypatch):
    install_fake_trt(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError) as exc:
        backend().load()
    assert "no CUDA device" in one_line(exc)


# -- TensorRT's CUDA build against the driver (sut/trt_cuda.py) -------------------------


def test_tensorrt_cuda_build_comes_from_the_wheel_names():
    assert tensorrt_cuda_builds(["tensorrt", "tensorrt_cu13", "tensorrt-cu13-libs", "tensorrt_cu13_bindings"]) == (13,)
    assert tensorrt_cuda_builds(["tensorrt-cu12", "tensorrt-cu13-libs"]) == (12, 13)
    # Other TensorRT flavours are other modules; a tar or container install has no cu wheel.
    assert tensorrt_cuda_builds(["tensorrt-dispatch-cu13", "tensorrt-lean-cu12", "tensorrt"]) == ()


def test_cuda13_tensorrt_on_a_cuda12_driver_is_refused_before_any_builder(monkeypatch, tmp_path):
    trt, state = install_fake_trt(monkeypatch, "11.1.0")
    fake_gpu(monkeypatch)
    cuda_stack(monkeypatch, torch_cuda="12.8", driver=(12, 8), driver_version="570.86.15",
               wheels=("tensorrt", "tensorrt-cu13", "tensorrt-cu13-libs", "tensorrt-cu13-bindings"))
    with pytest.raises(BackendError) as exc:
        backend(cache_dir=tmp_path).load()
    text = one_line(exc)
    assert "570.86.15" in text and "CUDA 12.8" in text and "CUDA 13 (tensorrt-cu13)" in text
    assert "pip uninstall -y tensorrt tensorrt-cu13 " in text and "pip install tensorrt-cu12" in text
    assert "R580" in text
    assert state.loggers == [] and state.builds == 0  # stopped before TensorRT was touched


def test_a_matching_driver_passes_and_describe_names_the_stack(monkeypatch, tmp_path):
    trt, state = install_fake_trt(monkeypatch, "11.1.0")
    fake_gpu(monkeypatch)
    cuda_stack(monkeypatch, torch_cuda="13.0", driver=(13, 0), driver_version="580.65.06",
               wheels=("tensorrt-cu13",))
    trt_backend = backend(cache_dir=tmp_path)
    trt_backend.load()
    info = trt_backend.describe()
    assert info["tensorrt_cuda_build"] == ["cu13"] and info["driver"] == "580.65.06"
    assert info["driver_cuda"] == "13.0" and info["torch_cuda"] == "13.0"
    trt_backend.close()


def test_runtime_that_cannot_start_is_one_line_naming_driver_and_wheel(monkeypatch, tmp_path):
    # The build is unknown (a tar install): no check beforehand, so pybind11's TypeError is
    # what happens, and it must not reach the user as a traceback.
    trt, state = install_fake_trt(monkeypatch)
    state.cuda_init_fails = True
    fake_gpu(monkeypatch)
    cuda_stack(monkeypatch, torch_cuda="12.8", driver=(12, 8), driver_version="570.86.15")
    with pytest.raises(BackendError) as exc:
        backend(cache_dir=tmp_path).load()
    text = one_line(exc)
    assert "Runtime could not start" in text and "factory function returned nullptr" in text
    assert "570.86.15" in text and "pip install tensorrt-cu12" in text
    assert "CUDA initialization failure with error: 35" in text  # what TensorRT logged


def test_cuda_stack_advice_and_warnings():
    stack = CudaStack("12.8", Driver((13, 0), "580.65.06"), (13,))
    stack.check()  # a CUDA 13 driver runs a CUDA 13 TensorRT beside a CUDA 12 torch
    assert stack.warnings() and "tensorrt-cu12 matches torch" in stack.warnings()[0]
    assert CudaStack("13.0", Driver((13, 0), None), (13,)).warnings() == []
    CudaStack("12.8", Driver(None, None), (13,)).check()  # driver unknown: nothing to say yet
    mixed = CudaStack("12.8", Driver((12, 8), None), (12, 13)).failed_to_start("Builder", TypeError("x"), "")
    assert isinstance(mixed, BackendError) and "several CUDA builds at once" in str(mixed)
    assert "pip uninstall -y tensorrt tensorrt-cu13 tensorrt-cu13-libs tensorrt-cu13-bindings" in str(mixed)
