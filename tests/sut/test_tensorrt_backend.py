"""TensorRT backend: the TensorRT-free planning module (sut/trt_plan.py), the order of
load()'s checks, the engine build/cache plumbing against a small fake `tensorrt` module,
the CUDA execution path (slots, per-bucket contexts, CUDA graphs) against the same fake
where a GPU is visible, and a real engine where TensorRT is installed.

TensorRT cannot be installed on this project's machines, so the real-engine tests skip
here; the fake follows the TensorRT 10 Python API surface the backend uses, and checks the
calls it receives (flags, shapes, addresses, stream handles), not TensorRT's behaviour.
"""

from __future__ import annotations

import enum
import importlib.util
import json
import logging
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
from sut.backends.tensorrt_backend import TRT_MISSING, TensorRTBackend
from sut.trt_engine import build_serialized_engine, io_descriptions, load_or_build_engine, make_logger, profile_max_batch
from sut.data import SyntheticDataset
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

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
needs_trt = pytest.mark.skipif(
    not HAVE_TRT, reason="TensorRT is not installed (not installable on this project's machines)"
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")

IMAGE_SIZE = 32
COUNT = 40


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


def test_missing_tensorrt_is_one_line_with_the_install_command(no_tensorrt):
    with pytest.raises(BackendError) as exc:
        backend().load()
    text = one_line(exc)
    assert "pip install tensorrt" in text and "--backend torch" in text
    assert text == TRT_MISSING


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
    with pytest.raises(BackendError, match="pip install tensorrt"):
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


# -- a fake `tensorrt` module: the API surface the backend uses --------------------------


class FakeState:
    """Knobs and records of one fake TensorRT."""

    def __init__(self) -> None:
        self.parse_errors: list[str] = []
        self.fail_build = False
        self.builds = 0
        self.compute = None  # callable(x NCHW float32 CUDA tensor) -> logits, for execution
        self.network_flags: list[int] = []
        self.profiles: list[tuple] = []
        self.workspace: list[int] = []
        self.cleared_flags: list[Any] = []
        self.contexts: list[Any] = []  # FakeContext, defined inside make_fake_trt


def make_fake_trt(state: FakeState) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.99.0"

    class Severity(enum.Enum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self) -> None:
            pass

    ILogger.Severity = Severity
    trt.ILogger = ILogger
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1})
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", {"WORKSPACE": 0})
    trt.BuilderFlag = enum.Enum("BuilderFlag", {"TF32": 7})
    trt.TensorIOMode = enum.Enum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    trt.DataType = enum.Enum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3})
    trt.ExecutionContextAllocationStrategy = enum.Enum(
        "ExecutionContextAllocationStrategy", {"STATIC": 0, "ON_PROFILE_CHANGE": 1, "USER_MANAGED": 2}
    )

    class Network:
        def __init__(self) -> None:
            self.inputs: list[Any] = []
            self.outputs: list[dict] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Any:
            return self.inputs[i]

    class ParserError:
        def __init__(self, text: str) -> None:
            self.text = text

        def __str__(self) -> str:
            return self.text

    class OnnxParser:
        def __init__(self, network: Network, logger: Any) -> None:
            self.network, self.logger, self.errors = network, logger, []

        def parse_from_file(self, path: str) -> bool:
            if state.parse_errors:
                self.errors = [ParserError(e) for e in state.parse_errors]
                return False
            import onnx

            graph = onnx.load(path, load_external_data=False).graph

            def desc(value_info):
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim]
                return {"name": value_info.name, "shape": dims}

            initializers = {i.name for i in graph.initializer}
            self.network.inputs = [
                types.SimpleNamespace(name=v.name, desc=desc(v)) for v in graph.input if v.name not in initializers
            ]
            self.network.outputs = [desc(v) for v in graph.output]
            return True

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> ParserError:
            return self.errors[i]

    class Profile:
        def set_shape(self, name, min_shape, opt_shape, max_shape) -> None:
            self.shape = (name, tuple(min_shape), tuple(opt_shape), tuple(max_shape))

    class Config:
        def __init__(self) -> None:
            self.profiles: list[Profile] = []

        def set_memory_pool_limit(self, pool, size) -> None:
            assert pool is trt.MemoryPoolType.WORKSPACE
            state.workspace.append(size)

        def clear_flag(self, flag) -> None:
            state.cleared_flags.append(flag)

        def add_optimization_profile(self, profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> Network:
            state.network_flags.append(flags)
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config):
            state.builds += 1
            if state.fail_build:
                self.logger.log(Severity.ERROR, "fake build failure:\n  out of tactics")
                return None
            (profile,) = config.profiles
            state.profiles.append(profile.shape)
            name, min_shape, opt_shape, max_shape = profile.shape
            plan = {
                "inputs": [dict(i.desc, dtype="FLOAT", profile=[min_shape, opt_shape, max_shape]) for i in network.inputs],
                "outputs": [dict(o, dtype="FLOAT") for o in network.outputs],
            }
            return bytearray(json.dumps(plan).encode())  # IHostMemory supports the buffer protocol

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data) -> Any:
            try:
                return Engine(json.loads(bytes(data)))
            except ValueError:
                self.logger.log(Severity.ERROR, "fake: serialization version mismatch")
                return None

    class Engine:
        def __init__(self, plan: dict) -> None:
            self.tensors = {t["name"]: ("input", t) for t in plan["inputs"]}
            self.tensors.update({t["name"]: ("output", t) for t in plan["outputs"]})
            self.device_memory_size_v2 = 1 << 20

        @property
        def num_io_tensors(self) -> int:
            return len(self.tensors)

        def get_tensor_name(self, i: int) -> str:
            return list(self.tensors)[i]

        def get_tensor_mode(self, name: str):
            return trt.TensorIOMode.INPUT if self.tensors[name][0] == "input" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str):
            return trt.DataType[self.tensors[name][1]["dtype"]]

        def get_tensor_shape(self, name: str) -> tuple:
            return tuple(self.tensors[name][1]["shape"])

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list:
            assert profile_index == 0
            return [tuple(s) for s in self.tensors[name][1]["profile"]]

        def create_execution_context(self, strategy=None) -> "FakeContext":
            context = FakeContext(self, strategy)  # None: TensorRT's default (STATIC)
            state.contexts.append(context)
            return context

    class FakeContext:
        def __init__(self, engine: Engine, strategy) -> None:
            self.engine, self.strategy = engine, strategy
            self.addresses: dict[str, int] = {}
            self.shape: tuple | None = None
            self.memory: tuple | None = None
            self.runs = 0

        def set_device_memory(self, ptr: int, size: int) -> None:
            assert size >= self.engine.device_memory_size_v2
            self.memory = (ptr, size)

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addresses[name] = int(ptr)
            return name in self.engine.tensors

        def set_input_shape(self, name: str, shape) -> bool:
            low, _, high = self.engine.get_tensor_profile_shape(name, 0)
            shape = tuple(shape)
            if len(shape) != len(low) or any(not lo <= s <= hi for s, lo, hi in zip(shape, low, high)):
                return False
            self.shape = shape
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            user_managed = getattr(self.strategy, "name", None) == "USER_MANAGED"
            if self.shape is None or (user_managed and self.memory is None):
                return False
            if stream_handle != torch.cuda.current_stream().cuda_stream:
                return False  # the fake runs on the current stream, so it must be the one asked for
            self.runs += 1
            batch = self.shape[0]
            classes = self.engine.tensors["logits"][1]["shape"][1]
            images = _device_view(self.addresses["input"], self.shape)
            logits = _device_view(self.addresses["logits"], (batch, classes))
            with torch.no_grad():
                logits.copy_(state.compute(images))
            return True

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


class _CudaArray:
    def __init__(self, ptr: int, shape: tuple) -> None:
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": "<f4", "data": (ptr, False), "version": 2}


def _device_view(ptr: int, shape: tuple) -> torch.Tensor:
    """A float32 CUDA tensor over memory the backend owns (what TensorRT reads and writes)."""
    return torch.as_tensor(_CudaArray(ptr, shape), device="cuda")


@pytest.fixture
def fake_trt(monkeypatch):
    state = FakeState()
    module = make_fake_trt(state)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module, state


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    from sut.onnx_export import export_onnx

    return export_onnx(ModelSpec("resnet18", "fp32", image_size=IMAGE_SIZE), tmp_path_factory.mktemp("onnx"))


# -- engine build and cache, against the fake --------------------------------------------


def test_build_uses_a_strongly_typed_network_and_one_profile(fake_trt, onnx_file):
    trt, state = fake_trt
    logger = make_logger(trt)
    shapes = profile_shapes(IMAGE_SIZE, 1, 16, 16)
    data = build_serialized_engine(trt, logger, onnx_file, shapes, 1 << 30, tf32=False)
    assert state.network_flags == [1 << 1]
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


def test_no_gpu_is_a_device_error_once_tensorrt_imports(fake_trt):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(DeviceError) as exc:
        backend().load()
    assert "no CUDA device" in one_line(exc)


# -- the CUDA execution path, against the fake (GPU machine) -----------------------------


@pytest.fixture(scope="module")
def torch_reference():
    """Top-1 of every staged sample from the fp32 network on the GPU, one at a time."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from sut.models import build_model

    net = build_model(ModelSpec("resnet18", "fp32", image_size=IMAGE_SIZE)).cuda()
    samples = SyntheticDataset(count=COUNT, image_size=IMAGE_SIZE).load(np.arange(COUNT))
    with torch.inference_mode():
        logits = torch.cat([net(torch.from_numpy(samples[i : i + 1]).cuda()) for i in range(COUNT)])
    return net, samples, logits.cpu()


def loaded(tmp_path, staging="device", cuda_graphs=True, **extra) -> TensorRTBackend:
    model = ModelSpec("resnet18", "fp32", image_size=IMAGE_SIZE)
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


@needs_cuda
@pytest.mark.parametrize("staging, cuda_graphs", [("device", True), ("device", False), ("host", True)])
def test_fake_engine_execution_path(fake_trt, tmp_path, torch_reference, staging, cuda_graphs):
    trt, state = fake_trt
    net, _, reference = torch_reference
    state.compute = net
    trt_backend = loaded(tmp_path, staging=staging, cuda_graphs=cuda_graphs)
    info = trt_backend.describe()
    assert info["engine_cache"] == "built" and info["tensorrt"] == "10.99.0"
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
    seconds = trt_backend.time_tight_loop(8, 5)
    assert seconds > 0
    assert trt_backend.time_tight_loop(3, 2) > 0  # not a bucket: the free-shape context
    trt_backend.close()
    trt_backend.close()

    # A second backend finds the engine in the cache.
    again = loaded(tmp_path, staging=staging, cuda_graphs=cuda_graphs)
    assert again.describe()["engine_cache"] == "hit" and state.builds == 1
    again.close()


@needs_cuda
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


# -- a real engine (wherever TensorRT is installed) --------------------------------------


@needs_trt
@needs_cuda
@pytest.mark.parametrize("cuda_graphs", [True, False])
def test_real_fp32_engine_matches_the_torch_backend(tmp_path, torch_reference, cuda_graphs):
    from sut.backends.torch_backend import TorchBackend

    _, samples, reference = torch_reference
    torch_backend = TorchBackend(
        ModelSpec("resnet18", "fp32", image_size=IMAGE_SIZE), BackendOptions(device="cuda", max_batch=16)
    )
    torch_backend.load()
    torch_backend.allocate_staging(COUNT)
    torch_backend.stage(np.arange(COUNT), samples)
    torch_top1 = answers(torch_backend, np.arange(16))
    torch_backend.close()

    trt_backend = loaded(tmp_path, cuda_graphs=cuda_graphs)
    info = trt_backend.describe()
    assert info["engine_cache"] == "built" and Path(info["engine_path"]).is_file()
    trt_top1 = answers(trt_backend, np.arange(16))
    # TF32 on both sides: rare near-ties may flip, nothing else.
    assert (trt_top1 == torch_top1).mean() >= 0.9, (trt_top1, torch_top1)
    check_mixed_batches(trt_backend, reference, margin=0.05)
    assert trt_backend.time_tight_loop(16, 10) > 0
    trt_backend.close()
    assert loaded(tmp_path, cuda_graphs=cuda_graphs).describe()["engine_cache"] == "hit"
