"""A strict stand-in for the `tensorrt` module (TensorRT 10.x or 11.x Python API) for machines
without TensorRT. It refuses what real TensorRT refuses:
- an ILogger subclass that skips the base __init__ cannot be made (pybind11's TypeError);
- one logger per process: each distinct logger given to a Builder, Runtime or parser is
  recorded (`FakeState.loggers`) and, as in TensorRT, only the first one hears anything;
- NetworkDefinitionCreationFlag numbered as each version's NvInfer.h (10: EXPLICIT_BATCH=0,
  STRONGLY_TYPED=1; 11: STRONGLY_TYPED=0), the bits create_network gets decoded by it;
- the parser takes IO dtypes and precision from the ONNX graph as a strongly typed network
  does: float16 weights make fp16, Q/DQ nodes int8 (int8 zero point 0 only), FLOAT/FLOAT16
  graph IO becomes FLOAT/HALF engine IO;
- execute_async_v3 fails before set_input_shape; set_input_shape fails inside a CUDA graph
  capture, and so does the first enqueue after a shape change (TensorRT's shape-dependent
  setup, which its CUDA-graph guidance says to run before capturing);
- trt.Builder / trt.Runtime raise pybind11's "factory function returned nullptr" TypeError
  where `cuda_init_fails` stands for a driver too old for TensorRT's CUDA build;
- a timing cache carries its device and version and is refused elsewhere unless asked.
Execution (GPU machines) runs `FakeState.compute` on the bound device buffers.
"""

from __future__ import annotations

import enum
import importlib.machinery
import json
import sys
import types
from typing import Any

import numpy as np
import torch

from tests.sut.trt_helpers import device_view

# NvInfer.h's NetworkDefinitionCreationFlag of each major version (v10.16 and v11.1 tags).
CREATION_FLAGS = {
    10: {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1, "PREFER_JIT_PYTHON_PLUGINS": 2, "PREFER_AOT_PYTHON_PLUGINS": 3},
    11: {"STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1, "PREFER_AOT_PYTHON_PLUGINS": 2},
}
VERSIONS = ("10.16.0", "11.1.0")
NULLPTR = "pybind11::init(): factory function returned nullptr"
_ONNX_IO = {1: "FLOAT", 10: "HALF"}  # onnx.TensorProto.FLOAT, FLOAT16


class FakeState:
    """Knobs and records of one fake TensorRT."""

    def __init__(self) -> None:
        self.parse_errors: list[str] = []
        self.fail_build = False
        self.cuda_init_fails = False  # Builder/Runtime: the driver cannot run TensorRT's CUDA
        self.device = "NVIDIA Fake GPU"  # what a timing cache's header must match
        self.builds = 0
        self.compute: Any = None  # callable(images CUDA tensor) -> logits, for execution
        self.network_flags: list[int] = []
        self.network_flag_names: list[list[str]] = []
        self.precisions: list[str] = []  # the precision of each parsed graph
        self.profiles: list[tuple] = []
        self.workspace: list[int] = []
        self.cleared_flags: list[Any] = []
        self.contexts: list[Any] = []
        self.loggers: list[Any] = []  # every distinct logger TensorRT was given
        self.timing_hits: list[bool] = []  # per build: did the timing cache know the build
        self.capturing = False  # stands for a CUDA graph capture where there is no CUDA
        self.violations: list[str] = []  # calls real TensorRT refuses


def _capturing(state: FakeState) -> bool:
    """A real capture on this thread's current stream, or the flag a test sets for one."""
    if state.capturing:
        return True
    return torch.cuda.is_available() and torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing()


class _PybindMeta(type):
    """pybind11's metaclass: a Python subclass whose __init__ skips the bound base
    __init__ raises TypeError when made (pybind/pybind11#2152)."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        obj = super().__call__(*args, **kwargs)
        if not getattr(obj, "_base_initialised", False):
            raise TypeError(f"{cls.__name__}.__init__() must be called when overriding __init__")
        return obj


def make_fake_trt(state: FakeState, version: str = VERSIONS[0]) -> types.ModuleType:
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # find_spec (torch._dynamo) needs one

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger(metaclass=_PybindMeta):
        def __init__(self) -> None:
            self._base_initialised = True

        def log(self, severity: Any, msg: str) -> None:  # pure virtual in TensorRT
            raise RuntimeError("Tried to call pure virtual function ILogger::log")

    def take_logger(logger: Any, who: str) -> Any:
        """The logger TensorRT will use: the first one it ever got."""
        if not isinstance(logger, ILogger) or not getattr(logger, "_base_initialised", False):
            raise TypeError(f"{who}(): incompatible constructor arguments (an initialised trt.ILogger)")
        if not any(known is logger for known in state.loggers):
            state.loggers.append(logger)
        first = state.loggers[0]
        if logger is not first:
            first.log(Severity.WARNING, "The logger passed into createInferRuntime differs from one already provided; "
                      "TensorRT maintains only a single logger pointer, so the existing one will be used instead")
        if state.cuda_init_fails and who in ("Builder", "Runtime"):
            first.log(Severity.ERROR, "CUDA initialization failure with error: 35")
            raise TypeError(NULLPTR)
        return first

    def error(logger: Any, text: str) -> None:
        state.violations.append(text)
        logger.log(Severity.ERROR, text)

    ILogger.Severity = Severity
    trt.ILogger = ILogger
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", CREATION_FLAGS[major])
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", {"WORKSPACE": 0})
    # TensorRT 11 dropped FP16 and INT8: networks are strongly typed (NvInfer.h v11.1).
    trt.BuilderFlag = enum.Enum("BuilderFlag", {"FP16": 0, "INT8": 1, "TF32": 7} if major == 10 else {"TF32": 7})
    trt.TensorIOMode = enum.Enum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    trt.DataType = enum.Enum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BF16": 7})
    trt.ExecutionContextAllocationStrategy = enum.Enum(
        "ExecutionContextAllocationStrategy", {"STATIC": 0, "ON_PROFILE_CHANGE": 1, "USER_MANAGED": 2})

    class Network:
        def __init__(self, names: list[str]) -> None:
            self.flags, self.inputs, self.outputs, self.precision = names, [], [], "fp32"

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Any:
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: Any) -> None:
            if not isinstance(network, Network):
                raise TypeError("OnnxParser(): incompatible constructor arguments (an INetworkDefinition)")
            self.network, self.logger, self.errors = network, take_logger(logger, "OnnxParser"), []

        def parse_from_file(self, path: str) -> bool:
            import onnx
            from onnx import numpy_helper

            self.errors = list(state.parse_errors)
            model = onnx.load(path, load_external_data=False)
            graph = model.graph
            inits = {i.name: i for i in graph.initializer}
            for node in graph.node:
                if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
                    zero = numpy_helper.to_array(inits[node.input[2]])
                    if zero.dtype != np.int8 or zero.any():
                        self.errors.append(f"{node.name or node.output[0]}: only int8 zero point 0 is supported")
            if self.errors:
                return False
            ops = {node.op_type for node in graph.node}
            if "QuantizeLinear" in ops:
                self.network.precision = "int8"
            elif any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer):
                self.network.precision = "fp16"
            state.precisions.append(self.network.precision)

            def desc(info: Any) -> dict:
                tensor = info.type.tensor_type
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
                return {"name": info.name, "shape": dims, "dtype": _ONNX_IO.get(tensor.elem_type, "INT32")}

            self.network.inputs = [types.SimpleNamespace(name=v.name, desc=desc(v))
                                   for v in graph.input if v.name not in inits]
            self.network.outputs = [desc(v) for v in graph.output]
            return True

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> str:
            return self.errors[i]  # str() of the error is its message, as with IParserError

    class Profile:
        def set_shape(self, name: str, min_shape: Any, opt_shape: Any, max_shape: Any) -> None:
            self.shape = (name, tuple(min_shape), tuple(opt_shape), tuple(max_shape))

    class TimingCache:
        def __init__(self, header: dict, entries: list[str]) -> None:
            self.header, self.entries = header, set(entries)

        def serialize(self) -> bytearray:  # IHostMemory: the buffer protocol
            return bytearray(json.dumps({"header": self.header, "entries": sorted(self.entries)}).encode())

    class Config:
        def __init__(self, logger: Any) -> None:
            self.logger = logger
            self.profiles: list[Profile] = []
            self.flags: set[Any] = set()
            self.timing_cache: TimingCache | None = None

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            assert pool is trt.MemoryPoolType.WORKSPACE
            state.workspace.append(pool_size)

        def set_flag(self, flag: Any) -> None:
            self.flags.add(flag)

        def clear_flag(self, flag: Any) -> None:
            state.cleared_flags.append(flag)

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, serialized_timing_cache: Any) -> TimingCache | None:
            data = bytes(memoryview(serialized_timing_cache))
            if not data:
                return TimingCache({"device": state.device, "tensorrt": version}, [])
            try:
                raw = json.loads(data)
                return TimingCache(raw["header"], raw["entries"])
            except (ValueError, KeyError, TypeError):
                self.logger.log(Severity.ERROR, "fake: timing cache blob is corrupt")
                return None

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:  # both required
            if cache.header != {"device": state.device, "tensorrt": version} and not ignore_mismatch:
                self.logger.log(Severity.ERROR, "fake: timing cache was made on another device or TensorRT")
                return False
            self.timing_cache = cache
            return True

        def get_timing_cache(self) -> TimingCache | None:
            return self.timing_cache

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger = take_logger(logger, "Builder")

        def create_network(self, flags: int = 0) -> Network | None:
            table = CREATION_FLAGS[major]
            if flags >> len(table):
                self.logger.log(Severity.ERROR, f"fake: invalid network creation flags {flags:#x}")
                return None
            names = [name for name, bit in table.items() if flags >> bit & 1]
            state.network_flags.append(flags)
            state.network_flag_names.append(names)
            return Network(names)

        def create_builder_config(self) -> Config:
            return Config(self.logger)

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytearray | None:
            state.builds += 1
            typed = major >= 11 or "STRONGLY_TYPED" in network.flags
            if state.fail_build:
                self.logger.log(Severity.ERROR, "fake build failure:\n  out of tactics")
                return None
            if typed and config.flags & {getattr(trt.BuilderFlag, "FP16", None), getattr(trt.BuilderFlag, "INT8", None)}:
                error(self.logger, "FP16/INT8 builder flags are not allowed for a strongly typed network")
                return None
            (profile,) = config.profiles
            state.profiles.append(profile.shape)
            name, low, opt, high = profile.shape
            if config.timing_cache is not None:
                key = f"{network.precision}:{low}:{high}"
                state.timing_hits.append(key in config.timing_cache.entries)
                config.timing_cache.entries.add(key)
            plan = {
                "inputs": [dict(i.desc, profile=[low, opt, high]) for i in network.inputs],
                "outputs": list(network.outputs),
                "precision": network.precision,
            }
            return bytearray(json.dumps(plan).encode())

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = take_logger(logger, "Runtime")

        def deserialize_cuda_engine(self, serialized_engine: Any) -> Engine | None:
            try:
                return Engine(json.loads(bytes(serialized_engine)), self.logger)
            except ValueError:
                self.logger.log(Severity.ERROR, "fake: serialization version mismatch")
                return None

    class Engine:
        def __init__(self, plan: dict, logger: Any) -> None:
            self.logger = logger
            self.tensors = {t["name"]: ("input", t) for t in plan["inputs"]}
            self.tensors.update({t["name"]: ("output", t) for t in plan["outputs"]})
            self.device_memory_size_v2 = 1 << 20
            if major == 10:  # gone in TensorRT 11
                self.device_memory_size = 1 << 20

        @property
        def num_io_tensors(self) -> int:
            return len(self.tensors)

        def get_tensor_name(self, index: int) -> str:
            return list(self.tensors)[index]

        def get_tensor_mode(self, name: str) -> Any:
            return trt.TensorIOMode.INPUT if self.tensors[name][0] == "input" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> Any:
            return trt.DataType[self.tensors[name][1]["dtype"]]

        def get_tensor_shape(self, name: str) -> tuple:
            return tuple(self.tensors[name][1]["shape"])

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list:
            assert profile_index == 0
            return [tuple(s) for s in self.tensors[name][1]["profile"]]

        def create_execution_context(self, strategy: Any = None) -> FakeContext:
            context = FakeContext(self, strategy)  # None: TensorRT's default (STATIC)
            state.contexts.append(context)
            return context

    class FakeContext:
        def __init__(self, engine: Engine, strategy: Any) -> None:
            self.engine, self.strategy, self.logger = engine, strategy, engine.logger
            self.addresses: dict[str, int] = {}
            self.shape: tuple | None = None
            self.shape_changed = False  # since the last enqueue
            self.memory: tuple | None = None
            self.runs = 0

        def set_device_memory(self, memory: int, size: int) -> None:
            assert size >= self.engine.device_memory_size_v2
            self.memory = (memory, size)

        def set_tensor_address(self, name: str, memory: int) -> bool:
            self.addresses[name] = int(memory)
            return name in self.engine.tensors

        def set_input_shape(self, name: str, shape: Any) -> bool:
            if _capturing(state):
                error(self.logger, "set_input_shape during a CUDA graph capture")
                return False
            low, _, high = self.engine.get_tensor_profile_shape(name, 0)
            shape = tuple(shape)
            if len(shape) != len(low) or any(not lo <= s <= hi for s, lo, hi in zip(shape, low, high)):
                return False
            self.shape_changed = self.shape_changed or shape != self.shape
            self.shape = shape
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            user_managed = getattr(self.strategy, "name", None) == "USER_MANAGED"
            if self.shape is None:
                error(self.logger, "execute_async_v3 before set_input_shape: the input shape is not specified")
                return False
            if user_managed and self.memory is None:
                error(self.logger, "execute_async_v3 on a user-managed context without device memory")
                return False
            if _capturing(state) and self.shape_changed:
                error(self.logger, "first enqueue after a shape change inside a CUDA graph capture")
                return False
            if stream_handle != torch.cuda.current_stream().cuda_stream:
                return False  # the fake runs on the current stream, so it must be the one asked for
            self.shape_changed = False
            self.runs += 1
            classes = self.engine.tensors["logits"][1]["shape"][1]
            images = device_view(self.addresses["input"], self.shape, self.engine.tensors["input"][1]["dtype"])
            logits = device_view(self.addresses["logits"], (self.shape[0], classes),
                                  self.engine.tensors["logits"][1]["dtype"])
            with torch.no_grad():
                logits.copy_(state.compute(images.float()))
            return True

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


def install_fake_trt(monkeypatch: Any, version: str = VERSIONS[0]) -> tuple[types.ModuleType, FakeState]:
    """The fake as `tensorrt` for one test."""
    state = FakeState()
    monkeypatch.setitem(sys.modules, "tensorrt", module := make_fake_trt(state, version))
    return module, state
