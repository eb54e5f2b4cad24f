"""A TensorRT engine made ready for the backend: the int8 calibration read, the ONNX graph
for the precision chosen, the engine cache key and path, the engine loaded from the cache
or built (sut/trt_engine.py, with the GPU's timing cache) and checked against the run's
batch range, and what the backend's describe() reports of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plumbing.errors import BackendError, DeepgapError, one_line
from sut.backends.base import ModelSpec
from sut.onnx_export import export_onnx
from sut.trt_cuda import start
from sut.trt_engine import (TimingCache, activation_bytes, build_serialized_engine, io_descriptions,
                            load_or_build_engine, make_logger, profile_max_batch)
from sut.trt_plan import (FP32_EXPORT, BindingPlan, engine_cache_key, engine_cache_path, engine_stem, file_sha256,
                          profile_shapes, timing_cache_path)

log = logging.getLogger(__name__)

INT8_NEEDS_CALIBRATION = (
    "int8 needs a calibration cache (activation_amax, weight_scales and cache_hash from the "
    "calibration step on the MLPerf calibration set), passed to the tensorrt backend as "
    "options.extra['calibration']; run calibration first, or use fp16/fp32"
)
DEFAULT_WORKSPACE_BYTES = 4 << 30


@dataclass(frozen=True)
class _Calibration:
    activation_amax: dict[str, float]
    weight_scales: dict[str, Any]
    cache_hash: str


@dataclass(frozen=True)
class PreparedEngine:
    engine: Any
    plan: BindingPlan
    logger: Any
    runtime: Any
    info: dict[str, Any]


def read_calibration(extra: dict[str, Any]) -> Any:
    """extra["calibration"] (the backend's options.extra) as an object with .activation_amax (tensor name ->
    amax), .weight_scales (initializer name -> per-channel scales) and .cache_hash.
    calibration.cache.CalibrationCache (.activations[name].amax, .weights[name].scales,
    .cache_hash) is accepted too and read into that shape."""
    calibration = extra.get("calibration")
    if calibration is None or not hasattr(calibration, "cache_hash"):
        raise BackendError(INT8_NEEDS_CALIBRATION)
    if hasattr(calibration, "activation_amax") and hasattr(calibration, "weight_scales"):
        return calibration
    if hasattr(calibration, "activations") and hasattr(calibration, "weights"):
        return _Calibration(
            activation_amax={name: float(r.amax) for name, r in calibration.activations.items()},
            weight_scales={name: w.scales for name, w in calibration.weights.items()},
            cache_hash=str(calibration.cache_hash),
        )
    raise BackendError(INT8_NEEDS_CALIBRATION)

def onnx_graph_for(model: ModelSpec, graph_kind: str, fp32_path: Path, calibration: Any) -> Path:
    """The ONNX file TensorRT parses: for int8, the calibrated ranges with every activation
    int8 (TensorRT accepts no other Q/DQ encoding) in TensorRT's placement, which leaves each
    residual Add's main-branch input unquantized so the Conv fuses with the Add
    (sut/qdq_placement.py)."""
    if graph_kind == FP32_EXPORT:
        return fp32_path
    from sut.onnx_precision import SIGNED, precision_graph
    from sut.qdq_placement import TENSORRT

    try:
        return precision_graph(model.precision, fp32_path, calibration, SIGNED, placement=TENSORRT)
    except DeepgapError:  # the converters' own ConfigError/BackendError say it best
        raise
    except Exception as exc:
        raise BackendError(
            f"making the {graph_kind} ONNX graph from {fp32_path.name} failed: "
            f"{one_line(str(exc)) or type(exc).__name__}"
        ) from exc


def prepare_engine(trt: Any, model: ModelSpec, extra: dict[str, Any], max_batch: int, gpu: str,
                   capability: tuple[int, ...], graph_kind: str, calibration: Any) -> PreparedEngine:
    """The engine for `model` at batches 1..max_batch on this GPU, from the cache or built."""
    precision = model.precision
    # opt = max: TensorRT tunes its tactics for the opt shape, and Offline runs full batches.
    # Whether a smaller opt would serve Server's partial batches better is not measured (no
    # TensorRT on this project's machines), so the profile stays as it was.
    shapes = profile_shapes(model.image_size, 1, max_batch, max_batch)
    cache_dir = extra.get("cache_dir")
    workspace = int(extra.get("trt_workspace_bytes", DEFAULT_WORKSPACE_BYTES))
    tf32 = bool(extra.get("trt_tf32", True))

    # TensorRT first: where it cannot start (sut/trt_cuda.py), say so before the exports.
    logger = make_logger(trt)  # the process's one TensorRT logger
    runtime = start(trt.Runtime, logger, "Runtime")

    fp32_path = export_onnx(model, cache_dir)
    onnx_path = onnx_graph_for(model, graph_kind, fp32_path, calibration)
    onnx_sha = file_sha256(onnx_path)
    calibration_hash = str(calibration.cache_hash) if calibration is not None else None
    settings = {"workspace": workspace, "tf32": tf32, "strongly_typed": True}
    key = engine_cache_key(
        gpu, capability, trt.__version__, model.name, precision,
        1, max_batch, max_batch, model.image_size, onnx_sha, calibration_hash,
        settings=settings,
    )
    stem = engine_stem(
        model.name, model.image_size, precision, max_batch, gpu, capability,
        trt.__version__,
    )
    engine_path = engine_cache_path(cache_dir, key, stem)
    metadata = {
        "key": key, "gpu": gpu, "compute_capability": list(capability),
        "tensorrt": trt.__version__, "model": model.name, "precision": precision,
        "image_size": model.image_size, "profile": [list(s) for s in shapes],
        "onnx": str(onnx_path), "onnx_sha256": onnx_sha, "calibration_hash": calibration_hash,
        "settings": settings,
    }

    timing = TimingCache(timing_cache_path(cache_dir, gpu, capability, trt.__version__))
    engine, status = load_or_build_engine(
        trt, logger, runtime, engine_path,
        lambda: build_serialized_engine(trt, logger, onnx_path, shapes, workspace, tf32, timing),
        metadata,
    )
    plan = BindingPlan.from_descriptions(
        io_descriptions(trt, engine), model.num_classes, model.image_size,
        max_batch=profile_max_batch(engine),
    )
    if plan.max_batch is not None and plan.max_batch < max_batch:
        raise BackendError(
            f"engine {engine_path.name} allows batches up to {plan.max_batch}, not "
            f"{max_batch}; delete it to rebuild"
        )
    info = {
        "tensorrt": trt.__version__,
        "engine_path": str(engine_path),
        "engine_cache": status,
        "engine_key": key,
        "onnx_graph": graph_kind,
        "onnx_path": str(onnx_path),
        "calibration_hash": calibration_hash,
        "gpu": gpu,
        "compute_capability": f"{capability[0]}.{capability[1]}",
        "profile": {"min": list(shapes[0]), "opt": list(shapes[1]), "max": list(shapes[2])},
        "input_dtype": plan.input.dtype,
        "output_dtype": plan.output.dtype,
        "strongly_typed": True,
        "workspace_bytes": workspace,
        "builder_tf32": tf32,
        "activation_bytes": activation_bytes(engine),
        "timing_cache_path": str(timing.path),
        "timing_cache": timing.status,
        "timing_cache_loaded": timing.loaded,
    }
    log.info(
        "tensorrt %s: %s engine (%s) on %s, input %s, batches 1..%d",
        trt.__version__, precision, "cache hit" if status == "hit" else status, gpu,
        plan.input.dtype, max_batch,
    )
    return PreparedEngine(engine, plan, logger, runtime, info)
