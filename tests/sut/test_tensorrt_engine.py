"""The TensorRT engine build, its caches and its logger (sut/trt_engine.py,
sut/trt_prepare.py) against the strict stand-in (tests/sut/fake_tensorrt.py), for the
TensorRT 10 and 11 Python APIs; load() runs on any machine (tests/sut/trt_helpers.fake_gpu),
for every precision. The stand-in's own refusals are tested at the end.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from plumbing.errors import BackendError
from sut.backends.base import BackendOptions, ModelSpec
from sut.backends.tensorrt_backend import TensorRTBackend
from sut.onnx_export import export_onnx
from sut.trt_engine import (TimingCache, build_serialized_engine, io_descriptions, load_or_build_engine, make_logger,
                            profile_max_batch)
from sut.trt_plan import FP16_GRAPH, INT8_QDQ_GRAPH, BindingPlan, TensorDesc, profile_shapes, timing_cache_path
from tests.sut.fake_tensorrt import VERSIONS, FakeState, install_fake_trt, make_fake_trt
from tests.sut.trt_helpers import calibration_for, cuda_stack, fake_gpu

IMAGE_SIZE = 32
# The bit create_network must get for a strongly typed network, from each version's
# NvInfer.h: 1 << kSTRONGLY_TYPED, kSTRONGLY_TYPED = 1 in TensorRT 10 and 0 in 11.
STRONGLY_TYPED_BIT = {"10": 1 << 1, "11": 1 << 0}


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.strip() == text and text, repr(text)
    return text


@pytest.fixture(params=VERSIONS)
def fake_trt(request, monkeypatch):
    cuda_stack(monkeypatch, torch_cuda="13.0")  # no wheels, no driver known: the check stays out of the way
    return install_fake_trt(monkeypatch, request.param)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    return export_onnx(ModelSpec("resnet18", "fp32", image_size=IMAGE_SIZE), tmp_path_factory.mktemp("onnx"))


def load_only(tmp_path: Path, monkeypatch, precision: str = "fp32", max_batch: int = 16, **extra: Any):
    """A loaded backend (engine built or found), nothing staged: runs without a GPU."""
    fake_gpu(monkeypatch)
    model = ModelSpec("resnet18", precision, image_size=IMAGE_SIZE)
    if precision == "int8":
        extra.setdefault("calibration", calibration_for(export_onnx(model, tmp_path / "cache")))
    options = BackendOptions(device="cuda", max_batch=max_batch, in_flight=2,
                             extra=dict(cache_dir=tmp_path / "cache", **extra))
    trt_backend = TensorRTBackend(model, options)
    trt_backend.load()
    return trt_backend


# -- build and engine cache --------------------------------------------------------------


def test_build_uses_a_strongly_typed_network_and_one_profile(fake_trt, onnx_file):
    trt, state = fake_trt
    logger = make_logger(trt)
    shapes = profile_shapes(IMAGE_SIZE, 1, 16, 16)
    data = build_serialized_engine(trt, logger, onnx_file, shapes, 1 << 30, tf32=False)
    # The bit is STRONGLY_TYPED's in this version's numbering, whatever that number is.
    assert state.network_flag_names == [["STRONGLY_TYPED"]]
    assert state.network_flags == [STRONGLY_TYPED_BIT[trt.__version__.split(".")[0]]]
    assert state.profiles == [("input", *shapes)]
    assert state.workspace == [1 << 30] and state.cleared_flags == [trt.BuilderFlag.TF32]
    engine = trt.Runtime(logger).deserialize_cuda_engine(data)
    descs = io_descriptions(trt, engine)
    assert descs == [
        TensorDesc("input", "input", "float32", (-1, 3, IMAGE_SIZE, IMAGE_SIZE)),
        TensorDesc("logits", "output", "float32", (-1, 1000)),
    ]
    assert profile_max_batch(engine) == 16
    plan = BindingPlan.from_descriptions(descs, 1000, IMAGE_SIZE, max_batch=16)
    assert plan.input_shape(16) == (16, 3, IMAGE_SIZE, IMAGE_SIZE)


def test_parse_errors_are_joined_into_one_line(fake_trt, onnx_file):
    trt, state = fake_trt
    state.parse_errors = ["In node 3 (Conv): UNSUPPORTED_NODE:\n bad pads", "In node 9: INVALID_GRAPH"]
    with pytest.raises(BackendError) as exc:
        build_serialized_engine(trt, make_logger(trt), onnx_file, profile_shapes(32, 1, 4, 4), 1 << 30)
    text = one_line(exc)
    assert "could not parse" in text and "bad pads; In node 9: INVALID_GRAPH" in text


def test_failed_build_reports_tensorrt_errors_in_one_line(fake_trt, onnx_file, caplog):
    trt, state = fake_trt
    state.fail_build = True
    with caplog.at_level(logging.ERROR), pytest.raises(BackendError) as exc:
        build_serialized_engine(trt, make_logger(trt), onnx_file, profile_shapes(32, 1, 4, 4), 1 << 30)
    assert "engine build failed" in one_line(exc) and "fake build failure: out of tactics" in str(exc.value)
    assert "fake build failure" in caplog.text


def test_engine_cache_builds_once_then_hits_and_rebuilds_a_bad_file(fake_trt, onnx_file, tmp_path):
    trt, state = fake_trt
    logger = make_logger(trt)
    runtime = trt.Runtime(logger)
    path = tmp_path / "tensorrt" / "resnet18-test-0123abcd.engine"
    shapes = profile_shapes(IMAGE_SIZE, 1, 8, 8)

    def build() -> bytes:
        return build_serialized_engine(trt, logger, onnx_file, shapes, 1 << 30)

    engine, status = load_or_build_engine(trt, logger, runtime, path, build, {"key": "0123abcd"})
    assert status == "built" and engine is not None and state.builds == 1
    assert path.is_file() and json.loads(path.with_suffix(".json").read_text())["key"] == "0123abcd"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temporary files left behind"
    _, status = load_or_build_engine(trt, logger, runtime, path, build, {})
    assert status == "hit" and state.builds == 1
    path.write_bytes(b"engine from another TensorRT version")
    _, status = load_or_build_engine(trt, logger, runtime, path, build, {})
    assert status == "rebuilt" and state.builds == 2
    assert path.read_bytes().startswith(b"{")


# -- one logger per process --------------------------------------------------------------


def test_one_logger_per_tensorrt_module(fake_trt, tmp_path, monkeypatch):
    trt, state = fake_trt
    assert make_logger(trt) is make_logger(trt)
    other = make_fake_trt(FakeState(), trt.__version__)
    assert make_logger(other) is not make_logger(trt)  # another module: its own logger
    # Two backends, two builds, a cache hit: TensorRT only ever sees one logger.
    first = load_only(tmp_path, monkeypatch)
    second = load_only(tmp_path, monkeypatch, max_batch=8)
    third = load_only(tmp_path, monkeypatch, max_batch=8)
    assert [b.describe()["engine_cache"] for b in (first, second, third)] == ["built", "built", "hit"]
    assert len(state.loggers) == 1 and state.loggers[0] is make_logger(trt)


def test_each_failure_reports_its_own_errors_through_the_shared_logger(fake_trt, onnx_file):
    trt, state = fake_trt
    state.parse_errors = []
    state.fail_build = True
    shapes = profile_shapes(32, 1, 4, 4)
    with pytest.raises(BackendError, match="out of tactics"):
        build_serialized_engine(trt, make_logger(trt), onnx_file, shapes, 1 << 30)
    make_logger(trt).log(trt.ILogger.Severity.ERROR, "something unrelated, later")
    state.fail_build = False
    engine_path = Path(onnx_file).parent / "tensorrt" / "bad.engine"
    engine_path.parent.mkdir(exist_ok=True)
    engine_path.write_bytes(b"not an engine")

    def build() -> bytes:
        return b"still not an engine"

    with pytest.raises(BackendError) as exc:
        load_or_build_engine(trt, make_logger(trt), trt.Runtime(make_logger(trt)), engine_path, build, {})
    text = one_line(exc)
    assert "serialization version mismatch" in text  # heard: the logger TensorRT uses is ours
    assert "out of tactics" not in text and "unrelated" not in text  # and only this call's errors


# -- timing cache ------------------------------------------------------------------------


def test_timing_cache_is_saved_after_a_build_and_loaded_by_the_next(fake_trt, tmp_path, monkeypatch):
    trt, state = fake_trt
    first = load_only(tmp_path, monkeypatch)
    info = first.describe()
    path = Path(info["timing_cache_path"])
    capability = tuple(int(part) for part in info["compute_capability"].split("."))
    assert path == timing_cache_path(tmp_path / "cache", info["gpu"], capability, trt.__version__)
    assert path.parent == Path(info["engine_path"]).parent  # beside the engines
    assert path.is_file() and trt.__version__ in path.name and "sm" in path.name
    assert info["timing_cache"] == "new" and info["timing_cache_loaded"] is False
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temporary files left behind"
    # The same build again (its engine deleted): the timing cache is read and knows it.
    Path(info["engine_path"]).unlink()
    again = load_only(tmp_path, monkeypatch).describe()
    assert again["timing_cache"] == "loaded" and again["timing_cache_loaded"] is True
    assert state.timing_hits == [False, True]
    # An engine cache hit builds nothing: the timing cache is not needed.
    hit = load_only(tmp_path, monkeypatch).describe()
    assert hit["engine_cache"] == "hit" and hit["timing_cache_loaded"] is False
    assert hit["timing_cache"].startswith("not used")


@pytest.mark.parametrize("blob", ["other device", b"\x00 not a timing cache"])
def test_timing_cache_of_another_device_or_corrupt_is_replaced(fake_trt, tmp_path, monkeypatch, blob):
    trt, state = fake_trt
    fake_gpu(monkeypatch)
    import torch

    gpu = torch.cuda.get_device_name(0)
    path = timing_cache_path(tmp_path / "cache", gpu, tuple(torch.cuda.get_device_capability(0)), trt.__version__)
    path.parent.mkdir(parents=True)
    if blob == "other device":
        blob = json.dumps({"header": {"device": "NVIDIA Other", "tensorrt": trt.__version__}, "entries": []}).encode()
    path.write_bytes(blob)
    info = load_only(tmp_path, monkeypatch).describe()
    assert info["timing_cache"].startswith("refused") and info["timing_cache_loaded"] is False
    assert json.loads(path.read_bytes())["header"]["device"] == state.device  # rewritten for this device


def test_timing_cache_file_is_keyed_by_gpu_capability_and_version(tmp_path):
    base = timing_cache_path(tmp_path, "NVIDIA H100 80GB HBM3", (9, 0), "10.16.0")
    assert base == tmp_path / "tensorrt" / "timing-nvidia-h100-80gb-hbm3-sm90-trt10.16.0.cache"
    others = {timing_cache_path(tmp_path, "NVIDIA L4", (9, 0), "10.16.0"),
              timing_cache_path(tmp_path, "NVIDIA H100 80GB HBM3", (8, 9), "10.16.0"),
              timing_cache_path(tmp_path, "NVIDIA H100 80GB HBM3", (9, 0), "11.1.0")}
    assert base not in others and len(others) == 3
    assert timing_cache_path(tmp_path, "../x", (9, 0), "1").parent == tmp_path / "tensorrt"
    assert TimingCache(None).loaded is False


# -- every precision through load() ------------------------------------------------------


@pytest.mark.parametrize("precision, graph", [("fp16", FP16_GRAPH), ("int8", INT8_QDQ_GRAPH)])
def test_reduced_precisions_build_from_their_own_graphs(fake_trt, tmp_path, monkeypatch, precision, graph):
    trt, state = fake_trt
    info = load_only(tmp_path, monkeypatch, precision).describe()
    assert info["precision"] == precision and info["onnx_graph"] == graph and info["engine_cache"] == "built"
    assert state.precisions == [precision]  # the network TensorRT got carries the precision itself
    # Both graphs keep float32 IO (make_fp16's keep_io_fp32; Q/DQ inside the graph only).
    assert info["input_dtype"] == "float32" and info["output_dtype"] == "float32"
    assert state.network_flag_names == [["STRONGLY_TYPED"]] and info["strongly_typed"] is True
    if precision == "int8":
        assert info["calibration_hash"] == "fa4e" * 4


# -- the stand-in refuses what TensorRT refuses ------------------------------------------


def test_stand_in_refuses_a_logger_that_skips_the_base_init(fake_trt):
    trt, state = fake_trt

    class Forgetful(trt.ILogger):
        def __init__(self) -> None:
            self.errors = []

        def log(self, severity, msg) -> None:
            pass

    with pytest.raises(TypeError, match="must be called when overriding __init__"):
        Forgetful()
    with pytest.raises(TypeError):
        trt.Runtime(object())
    assert state.loggers == []


def test_stand_in_hears_only_the_first_logger(fake_trt, onnx_file):
    trt, state = fake_trt
    heard: list[str] = []

    class Mine(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg) -> None:
            heard.append(msg)

    first, second = Mine(), Mine()
    trt.Runtime(first)
    runtime = trt.Runtime(second)
    assert runtime.deserialize_cuda_engine(b"junk") is None
    assert len(state.loggers) == 2 and any("single logger" in m for m in heard)
    assert runtime.logger is first  # the second logger never hears the error


def test_stand_in_execution_rules(fake_trt, onnx_file):
    trt, state = fake_trt
    logger = make_logger(trt)
    data = build_serialized_engine(trt, logger, onnx_file, profile_shapes(IMAGE_SIZE, 1, 4, 4), 1 << 30)
    context = trt.Runtime(logger).deserialize_cuda_engine(data).create_execution_context()
    assert context.execute_async_v3(0) is False  # no input shape yet
    state.capturing = True
    assert context.set_input_shape("input", (2, 3, IMAGE_SIZE, IMAGE_SIZE)) is False
    state.capturing = False
    assert context.set_input_shape("input", (2, 3, IMAGE_SIZE, IMAGE_SIZE)) is True
    state.capturing = True
    assert context.execute_async_v3(0) is False  # the first enqueue after a shape change
    assert context.set_input_shape("input", (5, 3, IMAGE_SIZE, IMAGE_SIZE)) is False
    assert len(state.violations) == 4
    assert trt.Builder(logger).create_network(1 << 5) is None  # no such flag in either version
    if trt.__version__.startswith("11"):
        assert not hasattr(trt.BuilderFlag, "FP16") and not hasattr(trt.NetworkDefinitionCreationFlag,
                                                                     "EXPLICIT_BATCH")
        assert not hasattr(trt.Runtime(logger).deserialize_cuda_engine(data), "device_memory_size")
