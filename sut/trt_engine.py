"""The TensorRT engine: an ONNX graph parsed into a strongly typed network, built with one
optimization profile, cached on disk with a JSON sidecar, deserialised, and the calls that
make its execution contexts. Each function takes the `tensorrt` module (or a strict
stand-in, tests/sut/test_tensorrt_backend.py) as an argument.

TensorRT 10 Python API used here (names as in NVIDIA's TensorRT 10 Python API reference;
checked against the binding sources python/src/infer/pyCore.cpp and
python/src/parsers/pyOnnx.cpp of NVIDIA/TensorRT 10.x):
  trt.__version__
  trt.ILogger (subclassed; base __init__ called explicitly; log(severity, msg)),
      trt.ILogger.Severity.{INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE}
  trt.Builder(logger)
  builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
  trt.OnnxParser(network, logger); parser.parse_from_file(path) -> bool;
      parser.num_errors; parser.get_error(i) (str() of an IParserError is one message)
  network.num_inputs; network.get_input(i).name
  builder.create_builder_config()
  config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, n)
  config.clear_flag(trt.BuilderFlag.TF32)            (only when asked: extra["trt_tf32"]=False)
  builder.create_optimization_profile(); profile.set_shape(name, min, opt, max)
  config.add_optimization_profile(profile)
  builder.build_serialized_network(network, config) -> IHostMemory or None (buffer protocol)
  trt.Runtime(logger); runtime.deserialize_cuda_engine(bytes) -> ICudaEngine or None
  engine.num_io_tensors; engine.get_tensor_name(i); engine.get_tensor_mode(name)
      (== trt.TensorIOMode.INPUT / OUTPUT); engine.get_tensor_dtype(name) (trt.DataType.*);
      engine.get_tensor_shape(name) (Dims, -1 for dynamic); engine.get_tensor_profile_shape(name, 0)
  engine.create_execution_context()                      (default STATIC allocation)
  engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
      (TensorRT 10.0+; falls back to engine.create_runtime_config() +
      runtime_config.set_execution_context_allocation_strategy(...) +
      engine.create_execution_context(runtime_config) where the first form is refused)
  engine.device_memory_size_v2 (10.1+), else engine.device_memory_size
  context.set_device_memory(ptr, size) (10.1+), else context.device_memory = ptr
  context.set_input_shape(name, shape) -> bool
  context.set_tensor_address(name, ptr) -> bool
  context.execute_async_v3(stream_handle) -> bool
Not used: BuilderFlag.FP16/INT8 and the INT8 calibrators (removed in TensorRT 11).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

from plumbing.errors import BackendError, one_line
from plumbing.files import write_atomic
from sut.onnx_export import INPUT_NAME
from sut.trt_plan import TensorDesc

log = logging.getLogger(__name__)

# trt.DataType member name -> numpy-style name used by sut.trt_plan.
_TRT_DTYPE_NAMES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "UINT8": "uint8",
    "BOOL": "bool",
    "FP8": "float8",
    "INT4": "int4",
    "FP4": "float4",
}


# -- TensorRT plumbing (takes the `tensorrt` module as an argument: testable with a fake) --


def make_logger(trt: Any) -> Any:
    """An ILogger that forwards to Python logging and keeps the last errors, so a failed
    build or deserialisation can say why in its one-line error."""

    severity = trt.ILogger.Severity
    levels = [
        (severity.INTERNAL_ERROR, logging.ERROR),
        (severity.ERROR, logging.ERROR),
        (severity.WARNING, logging.WARNING),
        (severity.INFO, logging.DEBUG),
    ]

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: deque[str] = deque(maxlen=8)

        def log(self, sev: Any, msg: str) -> None:  # called by TensorRT, maybe off-thread
            level = next((lvl for s, lvl in levels if s == sev), None)
            if level is None:  # VERBOSE
                return
            text = " ".join(str(msg).split())
            if level >= logging.ERROR:
                self.errors.append(text)
            log.log(level, "TensorRT: %s", text)

        def recent_errors(self) -> str:
            return " | ".join(self.errors)

    return _Logger()


def build_serialized_engine(
    trt: Any,
    logger: Any,
    onnx_path: Path,
    shapes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]],
    workspace_bytes: int,
    tf32: bool = True,
) -> bytes:
    """Parse `onnx_path` into a strongly typed network and build a serialized engine with
    one optimization profile for the input. Raises BackendError with TensorRT's reasons."""
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [one_line(str(parser.get_error(i))) for i in range(parser.num_errors)]
        raise BackendError(
            f"TensorRT could not parse {onnx_path.name}: "
            + ("; ".join(errors) or logger.recent_errors() or "no parser error reported")
        )
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if inputs != [INPUT_NAME]:
        raise BackendError(
            f"{onnx_path.name} has inputs {inputs}; expected exactly one input {INPUT_NAME!r}"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if not tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *shapes)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(
            f"TensorRT engine build failed for {onnx_path.name}: "
            + (logger.recent_errors() or "no error reported (see the TensorRT log)")
        )
    return bytes(serialized)


def deserialize_engine(trt: Any, runtime: Any, data: bytes) -> Any:
    """The engine, or None where TensorRT refuses the bytes (other version, other GPU)."""
    return runtime.deserialize_cuda_engine(data)


def io_descriptions(trt: Any, engine: Any) -> list[TensorDesc]:
    """The engine's IO tensors as plain data for sut.trt_plan.BindingPlan."""
    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        if mode == trt.TensorIOMode.INPUT:
            mode_name = "input"
        elif mode == trt.TensorIOMode.OUTPUT:
            mode_name = "output"
        else:
            mode_name = str(mode)
        shape = engine.get_tensor_shape(name)
        dims = tuple(int(shape[d]) for d in range(len(shape)))
        tensors.append(TensorDesc(name, mode_name, _dtype_name(engine.get_tensor_dtype(name)), dims))
    return tensors


def profile_max_batch(engine: Any) -> int:
    """Largest batch of the engine's first optimization profile."""
    shapes = engine.get_tensor_profile_shape(INPUT_NAME, 0)
    return int(shapes[2][0])


def _dtype_name(dtype: Any) -> str:
    name = getattr(dtype, "name", None) or str(dtype).rsplit(".", 1)[-1]
    return _TRT_DTYPE_NAMES.get(name, name.lower())


def user_managed_context(trt: Any, engine: Any) -> Any:
    strategy = trt.ExecutionContextAllocationStrategy.USER_MANAGED
    try:
        return engine.create_execution_context(strategy)
    except TypeError:
        runtime_config = engine.create_runtime_config()
        runtime_config.set_execution_context_allocation_strategy(strategy)
        return engine.create_execution_context(runtime_config)


def attach_device_memory(context: Any, ptr: int, size: int) -> None:
    setter = getattr(context, "set_device_memory", None)
    if setter is not None:
        setter(ptr, size)
    else:  # TensorRT 10.0
        context.device_memory = ptr


def activation_bytes(engine: Any) -> int:
    size = getattr(engine, "device_memory_size_v2", None)
    if size is None:
        size = engine.device_memory_size
    return int(size)


def load_or_build_engine(
    trt: Any,
    logger: Any,
    runtime: Any,
    engine_path: Path,
    build: Any,
    metadata: dict[str, Any],
) -> tuple[Any, str]:
    """(engine, "hit" | "built" | "rebuilt"): load `engine_path` if it deserialises, else
    call `build()` for the serialized bytes, cache them with a JSON sidecar, and load them."""
    if engine_path.is_file():
        engine = deserialize_engine(trt, runtime, engine_path.read_bytes())
        if engine is not None:
            log.info("tensorrt: loaded cached engine %s", engine_path)
            return engine, "hit"
        log.warning(
            "tensorrt: cached engine %s does not deserialise (%s); rebuilding",
            engine_path,
            logger.recent_errors() or "no reason given",
        )
        status = "rebuilt"
    else:
        status = "built"
    log.info("tensorrt: building engine %s (takes a while; cached for later runs)", engine_path.name)
    start = time.perf_counter()
    data = build()
    seconds = time.perf_counter() - start
    try:
        write_atomic(engine_path, data)
        sidecar = dict(metadata, build_seconds=round(seconds, 1), engine_bytes=len(data))
        write_atomic(engine_path.with_suffix(".json"), json.dumps(sidecar, indent=2).encode())
    except OSError as exc:
        log.warning("tensorrt: could not cache the engine at %s: %s", engine_path, exc)
    log.info("tensorrt: engine built in %.1f s (%.1f MB)", seconds, len(data) / 1e6)
    engine = deserialize_engine(trt, runtime, data)
    if engine is None:
        raise BackendError(
            "TensorRT could not deserialise the engine it just built: "
            + (logger.recent_errors() or "no reason given")
        )
    return engine, status
