"""Activation and weight statistics of the FP32 ONNX graph, collected with ONNX Runtime.

The tensors calibrated are exactly those the INT8 graphs quantize, under either runtime's
placement (`sut.qdq_placement.calibrated_tensors`): the data input of every Conv and Gemm,
each Conv's result (after its Relu where one follows) and each residual Add's identity
input get an activation range, and each weight initializer gets per-output-channel scales.
The tensors are exposed as extra graph outputs on a copy of the model, so one session run
returns them all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calibration.algorithms import (
    DEFAULT_ALGORITHM,
    DEFAULT_PERCENTILE,
    HistogramCollector,
    amax_entropy,
    amax_percentile,
    weight_scales_per_channel,
)
from calibration.subset import CalibrationSubset
from plumbing.errors import BackendError, ConfigError, one_line
from sut.qdq_placement import calibrated_tensors, targets_of

log = logging.getLogger(__name__)

ALGORITHMS = ("max", "percentile", "entropy")
DEFAULT_BATCH_SIZE = 16  # bounds memory: every calibrated activation of a batch is held at once
_PROGRESS_STEPS = 4


@dataclass(frozen=True)
class WeightScales:
    """Per-channel scales of one weight initializer; `axis` is its output-channel axis."""

    axis: int
    scales: np.ndarray  # float32, one per output channel


@dataclass
class CalibrationStats:
    """What a calibration pass measured: activation amax per tensor, weight scales per
    initializer, and how it was measured."""

    activations: dict[str, float]  # the chosen amax
    activation_max: dict[str, float]  # the largest |x| seen, for comparison with amax
    weights: dict[str, WeightScales]
    samples: int
    seconds: float


def collect_statistics(
    onnx_path: Path | str,
    subset: CalibrationSubset,
    algorithm: str = DEFAULT_ALGORITHM,
    percentile: float = DEFAULT_PERCENTILE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
) -> CalibrationStats:
    """Run `subset` through the FP32 graph at `onnx_path` and calibrate every quantized
    layer: activation amax by `algorithm`, weight scales per output channel.

    max needs one pass over the subset; percentile and entropy need a second pass to
    histogram |x| over the range the first pass found.
    """
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"unknown calibration algorithm {algorithm!r}; choose from {', '.join(ALGORITHMS)}")
    if algorithm == "percentile" and not 0.0 < percentile <= 100.0:
        raise ConfigError(f"percentile must be in (0, 100], got {percentile}")
    import onnx

    started = time.monotonic()
    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ... for unreadable files
        raise BackendError(f"calibration: cannot load {onnx_path}: {one_line(exc)}") from exc
    label = f"calibration: {Path(onnx_path).name}"
    targets = targets_of(model.graph, label)
    input_name = _data_input(model, onnx_path)
    tensors = list(calibrated_tensors(model.graph, label))
    if input_name not in tensors:
        tensors.insert(0, input_name)
    weights = _weight_scales(model, targets.weights)
    run = _session_runner(model, tensors, input_name, threads)
    del model  # the session holds its own copy; the proto can be large

    collectors = {name: HistogramCollector() for name in tensors}
    log.info(
        "calibration: %s over %s, %d activation tensors, %d weights",
        algorithm, subset.description, len(tensors), len(weights),
    )
    passes = 1 if algorithm == "max" else 2
    for batch in _progress(subset, batch_size, f"pass 1/{passes} (max |x|)"):
        for name, values in run(batch).items():
            collectors[name].observe_max(values)
    _check_finite(collectors)
    if passes == 2:
        for batch in _progress(subset, batch_size, "pass 2/2 (histograms)"):
            for name, values in run(batch).items():
                collectors[name].observe_histogram(values)

    activations = {name: _amax(collector, algorithm, percentile) for name, collector in collectors.items()}
    seconds = time.monotonic() - started
    log.info("calibration: %d images in %.1f s", subset.count, seconds)
    return CalibrationStats(
        activations=activations,
        weights=weights,
        samples=subset.count,
        seconds=seconds,
        activation_max={name: c.amax for name, c in collectors.items()},
    )


def _progress(subset: CalibrationSubset, batch_size: int, label: str) -> Iterator[np.ndarray]:
    """The subset's batches, logging progress about every quarter (a CPU pass over 500
    ResNet50 images takes minutes)."""
    step = max(1, subset.count // _PROGRESS_STEPS)
    done, logged = 0, 0
    for batch in subset.batches(batch_size):
        yield batch
        done += len(batch)
        if done - logged >= step or done == subset.count:
            log.info("calibration: %s: %d/%d images", label, done, subset.count)
            logged = done


def _amax(collector: HistogramCollector, algorithm: str, percentile: float) -> float:
    if algorithm == "max":
        return collector.amax
    hist, edges = collector.histogram
    if algorithm == "percentile":
        return amax_percentile(hist, edges, percentile)
    return amax_entropy(hist, edges)


def _data_input(model: Any, onnx_path: Path | str) -> str:
    # Older exporters list initializers among the graph inputs; the data input is the one
    # that is not an initializer.
    initializers = {init.name for init in model.graph.initializer}
    inputs = [value.name for value in model.graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise BackendError(
            f"calibration: {onnx_path} has {len(inputs)} data inputs ({', '.join(inputs)}); expected one image input"
        )
    return inputs[0]


def _weight_scales(model: Any, axes: dict[str, int]) -> dict[str, WeightScales]:
    from onnx import numpy_helper

    by_name = {init.name: init for init in model.graph.initializer}
    return {
        name: WeightScales(axis=axis, scales=weight_scales_per_channel(numpy_helper.to_array(by_name[name]), axis))
        for name, axis in axes.items()
    }


def _session_runner(
    model: Any, tensors: list[str], input_name: str, threads: int | None
) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A function batch -> {tensor: values} over a session that outputs every tensor."""
    import onnx
    import onnxruntime as ort

    probed = onnx.ModelProto()
    probed.CopyFrom(model)
    existing = {value.name for value in probed.graph.output}
    # Types of intermediate tensors come from shape inference; ONNX Runtime needs at least
    # the element type of every graph output. The exports here are all float32 anyway.
    inferred = {value.name: value for value in onnx.shape_inference.infer_shapes(model).graph.value_info}
    for name in tensors:
        if name == input_name or name in existing:
            continue
        value = inferred.get(name) or onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        probed.graph.output.append(value)

    options = ort.SessionOptions()
    # The basic level (constant folding, no fusions or layout changes) runs the graph as
    # exported, so every tensor read is exactly the FP32 model's, with no doubt about how a
    # fused kernel would expose an intermediate output.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(
            probed.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise BackendError(f"calibration: onnxruntime could not load the graph: {one_line(exc)}") from exc
    outputs = [name for name in tensors if name != input_name]

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        try:
            values = session.run(outputs, {input_name: batch})
        except Exception as exc:
            raise BackendError(f"calibration: onnxruntime failed on a batch: {one_line(exc)}") from exc
        result = dict(zip(outputs, values))
        if input_name in tensors:
            result[input_name] = batch
        return result

    return run


def _check_finite(collectors: dict[str, HistogramCollector]) -> None:
    for name, collector in collectors.items():
        if not np.isfinite(collector.amax):
            raise BackendError(
                f"calibration: tensor {name} holds non-finite values (max |x| = {collector.amax}); "
                "the FP32 model overflows on the calibration images"
            )
