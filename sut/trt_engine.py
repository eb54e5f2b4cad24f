"""The TensorRT engine: an ONNX graph parsed into a strongly typed network, built with one
optimization profile and a timing cache kept on disk, cached on disk with a JSON sidecar,
deserialised, and the calls that make its execution contexts. Each function takes the
`tensorrt` module (or the strict stand-in, tests/sut/fake_tensorrt.py) as an argument.

TensorRT 10.x and 11.x Python API used here (checked against NVIDIA/TensorRT
python/src/infer/pyCore.cpp, python/docstrings/infer/pyCoreDoc.h and include/NvInfer.h at
the v10.3.0, v10.16, v11.0 and v11.1 tags):
  trt.__version__
  trt.ILogger (subclassed; base __init__ called explicitly, or pybind11 raises TypeError;
      log(severity, msg)), trt.ILogger.Severity.{INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE}.
      TensorRT keeps one logger pointer per process: a second logger given to a Builder or
      Runtime is ignored, so `make_logger` hands out one per `tensorrt` module.
  trt.Builder(logger), trt.Runtime(logger): pybind11 factories that raise TypeError
      ("factory function returned nullptr") where TensorRT cannot start CUDA (sut/trt_cuda.py)
  builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)):
      STRONGLY_TYPED is 1 in TensorRT 10 (EXPLICIT_BATCH 0, deprecated) and 0 in TensorRT 11
      (deprecated there and ignored: every network is strongly typed), so the bit is always
      taken from the enum, never written as a number
  trt.OnnxParser(network, logger); parser.parse_from_file(path) -> bool;
      parser.num_errors; parser.get_error(i) (str() of an IParserError is one message)
  network.num_inputs; network.get_input(i).name
  builder.create_builder_config()
  config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, n)
  config.clear_flag(trt.BuilderFlag.TF32)            (only when asked: extra["trt_tf32"]=False)
  config.create_timing_cache(bytes) (b"": a new cache) -> ITimingCache;
      config.set_timing_cache(cache, ignore_mismatch) -> bool (False: made on another device);
      config.get_timing_cache() -> ITimingCache or None; cache.serialize() -> IHostMemory
  builder.create_optimization_profile(); profile.set_shape(name, min, opt, max)
  config.add_optimization_profile(profile)
  builder.build_serialized_network(network, config) -> IHostMemory or None (buffer protocol)
  runtime.deserialize_cuda_engine(bytes) -> ICudaEngine or None
  engine.num_io_tensors; engine.get_tensor_name(i); engine.get_tensor_mode(name)
      (== trt.TensorIOMode.INPUT / OUTPUT); engine.get_tensor_dtype(name) (trt.DataType.*);
      engine.get_tensor_shape(name) (Dims, -1 for dynamic); engine.get_tensor_profile_shape(name, 0)
  engine.create_execution_context()                      (default STATIC allocation)
  engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
      (TensorRT 10.0+; falls back to engine.create_runtime_config() +
      runtime_config.set_execution_context_allocation_strategy(...) +
      engine.create_execution_context(runtime_config) where the first form is refused)
  engine.device_memory_size_v2 (10.1+; the only one in 11), else engine.device_memory_size
  context.set_device_memory(ptr, size) (10.1+), else context.device_memory = ptr
  context.set_input_shape(name, shape) -> bool
  context.set_tensor_address(name, ptr) -> bool
  context.execute_async_v3(stream_handle) -> bool
Not used: BuilderFlag.FP16/INT8 and the INT8 calibrators (removed in TensorRT 11).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plumbing.errors import BackendError, one_line
from plumbing.files import write_atomic
from sut.onnx_export import INPUT_NAME
from sut.trt_cuda import start
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


# id(tensorrt module) -> (module, logger). The module is kept so that its id is never reused
# by another (the tests' stand-ins come and go); the lock makes two threads share one logger.
_LOGGERS: dict[int, tuple[Any, Any]] = {}
_LOGGERS_LOCK = threading.Lock()


def make_logger(trt: Any) -> Any:
    """The process's ILogger for `trt`, made on first use: it forwards to Python logging and
    keeps the last errors, so a failed build or deserialisation can say why in its one-line
    error. TensorRT keeps a single logger pointer per process and ignores any later one
    (its own warning says so), so a second logger would never hear of an error."""
    with _LOGGERS_LOCK:
        held = _LOGGERS.get(id(trt))
        if held is None or held[0] is not trt:
            held = (trt, _new_logger(trt))
            _LOGGERS[id(trt)] = held
        return held[1]


def _new_logger(trt: Any) -> Any:
    severity = trt.ILogger.Severity
    levels = [
        (severity.INTERNAL_ERROR, logging.ERROR),
        (severity.ERROR, logging.ERROR),
        (severity.WARNING, logging.WARNING),
        (severity.INFO, logging.DEBUG),
    ]

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # pybind11: a subclass that skips it cannot be made
            self.errors: deque[tuple[int, str]] = deque(maxlen=8)
            self.count = 0

        def log(self, sev: Any, msg: str) -> None:  # called by TensorRT, maybe off-thread
            level = next((lvl for s, lvl in levels if s == sev), None)
            if level is None:  # VERBOSE
                return
            text = " ".join(str(msg).split())
            if level >= logging.ERROR:
                self.count += 1
                self.errors.append((self.count, text))
            log.log(level, "TensorRT: %s", text)

        def error_count(self) -> int:
            """A mark: errors_since(mark) gives the errors logged after it."""
            return self.count

        def errors_since(self, mark: int) -> str:
            # The logger is shared by every build and backend: an operation reports its own.
            return " | ".join(text for n, text in list(self.errors) if n > mark)

        def recent_errors(self) -> str:
            return self.errors_since(0)

    return _Logger()


@dataclass
class TimingCache:
    """A TensorRT timing cache on disk (tactic timings: a rebuild, for another batch range or
    precision on the same GPU, skips re-timing what it has seen). Valid only for one GPU
    model and TensorRT version, which its file name carries; TensorRT also checks the device
    itself (set_timing_cache with ignore_mismatch=False refuses another device's cache)."""

    path: Path | None
    status: str = "not used (no engine build)"
    live: Any = None  # the ITimingCache of the build under way: it must outlive the build

    @property
    def loaded(self) -> bool:
        return self.status == "loaded"

    def attach(self, config: Any) -> None:
        """Set the cache on `config` before a build: the file's, else a new one."""
        data = b""
        if self.path is not None and self.path.is_file():
            try:
                data = self.path.read_bytes()
            except OSError as exc:
                log.warning("tensorrt: cannot read the timing cache %s: %s", self.path, exc)
        if data:
            cache = config.create_timing_cache(data)
            if cache is not None and config.set_timing_cache(cache, False):
                self.status, self.live = "loaded", cache
                return
            log.warning("tensorrt: timing cache %s refused (other device or corrupt); starting a new one", self.path)
            self.status = "refused (other device or corrupt): started new"
        else:
            self.status = "new"
        cache = config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, False):
            self.status = "unavailable"
            return
        self.live = cache

    def save(self, config: Any) -> None:
        """Write the build's timing cache back, atomically (a concurrent reader sees the old
        file or the new one)."""
        cache = config.get_timing_cache() if self.path is not None else None
        self.live = None
        if cache is None:
            return
        try:
            write_atomic(self.path, bytes(cache.serialize()))
        except OSError as exc:
            log.warning("tensorrt: could not save the timing cache %s: %s", self.path, exc)


def build_serialized_engine(
    trt: Any,
    logger: Any,
    onnx_path: Path,
    shapes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]],
    workspace_bytes: int,
    tf32: bool = True,
    timing_cache: TimingCache | None = None,
) -> bytes:
    """Parse `onnx_path` into a strongly typed network and build a serialized engine with
    one optimization profile for the input, with `timing_cache` (saved after a successful
    build). Raises BackendError with TensorRT's reasons."""
    mark = logger.error_count()
    builder = start(trt.Builder, logger, "Builder")
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [one_line(str(parser.get_error(i))) for i in range(parser.num_errors)]
        raise BackendError(
            f"TensorRT could not parse {onnx_path.name}: "
            + ("; ".join(errors) or logger.errors_since(mark) or "no parser error reported")
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
    if timing_cache is not None:
        timing_cache.attach(config)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *shapes)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(
            f"TensorRT engine build failed for {onnx_path.name}: "
            + (logger.errors_since(mark) or "no error reported (see the TensorRT log)")
        )
    if timing_cache is not None:
        timing_cache.save(config)
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
    mark = logger.error_count()
    if engine_path.is_file():
        engine = deserialize_engine(trt, runtime, engine_path.read_bytes())
        if engine is not None:
            log.info("tensorrt: loaded cached engine %s", engine_path)
            return engine, "hit"
        log.warning(
            "tensorrt: cached engine %s does not deserialise (%s); rebuilding",
            engine_path,
            logger.errors_since(mark) or "no reason given",
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
    mark = logger.error_count()
    engine = deserialize_engine(trt, runtime, data)
    if engine is None:
        raise BackendError(
            "TensorRT could not deserialise the engine it just built: "
            + (logger.errors_since(mark) or "no reason given")
        )
    return engine, status
