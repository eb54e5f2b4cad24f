"""Reduced-precision variants of the fp32 ONNX export: explicit INT8 (Q/DQ) here, float16 in
sut/onnx_fp16.py, and `precision_graph`, which makes (and caches) either.

TensorRT 10/11 strongly typed networks take their precision from the graph itself, not
from builder flags, so the precision has to be written into the ONNX file:

* `make_qdq_int8`: QuantizeLinear -> DequantizeLinear (per tensor) on the data input of
  every Conv and Gemm and after every Conv (after its Relu where one follows), int8
  weight initializers with a per-channel DequantizeLinear, and every reader of a
  quantized tensor (a residual Add, a pooling) reads the dequantized copy. Both runtimes
  get the same calibrated ranges and, but at residual Adds (`placement` below), the same
  placement; they differ in how a non-negative (post-Relu) tensor is encoded, because
  their integer kernels differ:
  - `SIGNED` (TensorRT, which only accepts int8 with zero point 0): every activation is
    int8, scale amax / 127.
  - `UNSIGNED` (ONNX Runtime): every activation is uint8. A tensor a Relu produces has
    zero point 0 and scale amax / 255 (one more bit for the same range); any other has
    zero point 128 and scale amax / 127, the int8 grid shifted by 128. ONNX Runtime then
    folds each Relu into its QuantizeLinear and fuses DQ -> Conv -> Q into QLinearConv
    (its u8s8 fast path on x86) and DQ -> Add -> Q into QLinearAdd. With int8 it cannot
    drop a Relu (the zero point is not the type's minimum), and it has no kernel for an
    int8 input with a uint8 output, so convolutions stay fp32 between conversions:
    slower than fp32 on the CPU (BENCHMARKS.md).
  `placement` (sut/qdq_placement.py) changes where residual Adds are quantized:
  ONNXRUNTIME (the default) as above; TENSORRT leaves the Conv on an Add's main branch
  unquantized and quantizes the Add's identity input, so TensorRT fuses Conv + Add. Only
  TensorRT's graph takes it: ONNX Runtime's graphs, SIGNED included, keep their bytes.
  `weight_max` bounds the int8 weights: INT8_MAX (127, full range) by default;
  REDUCED_WEIGHT_MAX (63, "reduce range", 7 bits) for x86 CPUs without VNNI, whose u8s8
  kernels sum pairs of products in saturating 16-bit arithmetic (sut/cpu_isa.py).

Pure graph transformations: nothing here imports onnxruntime or talks to a device. Inputs
are plain dicts, so any calibrator (or a test) can supply the scales.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from plumbing.errors import BackendError, ConfigError
from sut.onnx_fp16 import make_fp16
from sut.onnx_graph import (ENCODING_KEY, PRECISION_KEY, QUANTIZATION_KEY, WEIGHT_RANGE_KEY, Names, check_model,
                            copy_node, ensure_opset, load_model, require_fp32, save_atomic, set_metadata)
from sut.qdq_placement import ONNXRUNTIME, QUANTIZED_OPS, TENSORRT, targets_of
from sut.cpu_isa import INT8_MAX, REDUCED_WEIGHT_MAX

log = logging.getLogger(__name__)

QDQ_SCHEME = "qdq per-tensor activations (Conv/Gemm inputs, Conv outputs after their Relu), per-channel int8 weights"
QDQ_SCHEMES = {
    ONNXRUNTIME: QDQ_SCHEME,
    TENSORRT: ("qdq per-tensor activations (Conv/Gemm inputs, Conv outputs after their Relu except a Conv fused "
               "into a residual Add, whose identity input is quantized instead), per-channel int8 weights"),
}

SIGNED = "int8"  # every activation int8, zero point 0: TensorRT's only form
UNSIGNED = "uint8"  # every activation uint8, Relu outputs from zero: ONNX Runtime's fast path
INT8_ENCODINGS = (SIGNED, UNSIGNED)

# Symmetric int8: [-127, 127] keeps the range symmetric about the zero point 0 (TensorRT
# requires zero points of 0 and never produces -128). REDUCED_WEIGHT_MAX: sut/cpu_isa.py.
WEIGHT_MAXIMA = (INT8_MAX, REDUCED_WEIGHT_MAX)
UINT8_MAX = 255
UINT8_MIDPOINT = 128  # zero point that gives uint8 the int8 grid, for tensors with a sign
# Per-channel DequantizeLinear (the `axis` attribute) exists from opset 13.
MIN_QDQ_OPSET = 13


# -- public API ----------------------------------------------------------------------------


def make_qdq_int8(
    fp32_model_path: Path,
    activation_amax: Mapping[str, float],
    weight_scales: Mapping[str, np.ndarray],
    out_path: Path,
    encoding: str = SIGNED,
    weight_max: int = INT8_MAX,
    placement: str = ONNXRUNTIME,
) -> Path:
    """Write the explicit-quantization INT8 graph of an fp32 ONNX model to `out_path`.

    `activation_amax` maps a tensor name to the largest magnitude it takes on calibration
    data (scale = amax / 127, or amax / 255 for a uint8 Relu output). `weight_scales` maps
    a Conv/Gemm weight initializer name to its per-output-channel scales, each mapping
    int8 127 to the channel's threshold (max |w| / 127 for plain max calibration).
    `encoding` is SIGNED or UNSIGNED (see the module docstring). `weight_max` is the
    largest weight magnitude stored, INT8_MAX or REDUCED_WEIGHT_MAX: the same threshold
    then maps to `weight_max` (scales x 127 / weight_max), so the calibration stays one
    and the same whatever the range. `placement` is ONNXRUNTIME or TENSORRT (module
    docstring). Extra entries are ignored. Raises ConfigError for missing or unusable
    scales, an unknown encoding, weight range or placement, and BackendError for
    graphs this module cannot quantize.
    """
    if encoding not in INT8_ENCODINGS:
        raise ConfigError(f"unknown int8 encoding {encoding!r}; choose from {', '.join(INT8_ENCODINGS)}")
    if weight_max not in WEIGHT_MAXIMA:
        raise ConfigError(f"unknown int8 weight range +-{weight_max!r}; choose from "
                          f"{', '.join(f'+-{m}' for m in WEIGHT_MAXIMA)}")
    fp32_model_path, out_path = Path(fp32_model_path), Path(out_path)
    model = load_model(fp32_model_path)
    require_fp32(model, fp32_model_path)
    ensure_opset(model, MIN_QDQ_OPSET, fp32_model_path)
    graph = model.graph
    targets = targets_of(graph, fp32_model_path.name, placement)
    initializers = {init.name: init for init in graph.initializer}
    relu_outputs = {out for node in graph.node if node.op_type == "Relu" for out in node.output}
    graph_inputs = {info.name for info in graph.input} - set(initializers)
    names = Names(model)
    new_initializers: list[TensorProto] = []

    def qdq_pair(tensor: str, source: str, target: str) -> list[onnx.NodeProto]:
        """Q/DQ of `source` into `target`, with `tensor`'s calibrated range."""
        scale_name = names.fresh(f"{tensor}_scale")
        zero_name = names.fresh(f"{tensor}_zero_point")
        quantized = names.fresh(f"{tensor}_quantized")
        amax = _activation_amax(tensor, activation_amax)
        if encoding == SIGNED:
            scale, zero = amax / INT8_MAX, np.array(0, np.int8)
        elif tensor in relu_outputs:
            scale, zero = amax / UINT8_MAX, np.array(0, np.uint8)
        else:
            scale, zero = amax / INT8_MAX, np.array(UINT8_MIDPOINT, np.uint8)
        new_initializers.append(numpy_helper.from_array(np.array(scale, np.float32), scale_name))
        new_initializers.append(numpy_helper.from_array(zero, zero_name))
        return [
            helper.make_node("QuantizeLinear", [source, scale_name, zero_name], [quantized],
                             name=names.fresh(f"{tensor}_QuantizeLinear")),
            helper.make_node("DequantizeLinear", [quantized, scale_name, zero_name], [target],
                             name=names.fresh(f"{tensor}_DequantizeLinear")),
        ]

    # Every reader of a quantized tensor reads the dequantized value: a produced tensor's
    # producer writes a fresh name that the pair quantizes back into the original one; a
    # graph input's readers are renamed to its dequantized copy.
    input_pairs: list[onnx.NodeProto] = []
    renamed_inputs: dict[str, str] = {}
    output_pairs: dict[str, tuple[str, list[onnx.NodeProto]]] = {}
    for tensor in targets.tensors:
        if tensor in graph_inputs:
            renamed_inputs[tensor] = names.fresh(f"{tensor}_dequantized")
            input_pairs += qdq_pair(tensor, tensor, renamed_inputs[tensor])
        else:
            raw = names.fresh(f"{tensor}_float")
            output_pairs[tensor] = (raw, qdq_pair(tensor, raw, tensor))

    weight_nodes: dict[str, onnx.NodeProto] = {}
    replacement: dict[str, str] = {}
    bytes_before = bytes_after = 0
    for weight, axis in targets.weights.items():
        values = numpy_helper.to_array(initializers[weight]).astype(np.float32, copy=False)
        scales = _weight_scales(weight, values, axis, weight_scales)
        if weight_max != INT8_MAX:
            scales = (scales * np.float32(INT8_MAX / weight_max)).astype(np.float32)
        quantized = _quantize_weight(weight, values, scales, axis, weight_max)
        q_name = names.fresh(f"{weight}_int8")
        scale_name = names.fresh(f"{weight}_scale")
        zero_name = names.fresh(f"{weight}_zero_point")
        dequantized = names.fresh(f"{weight}_dequantized")
        new_initializers += [
            numpy_helper.from_array(quantized, q_name),
            numpy_helper.from_array(scales, scale_name),
            numpy_helper.from_array(np.zeros(scales.shape, np.int8), zero_name),
        ]
        weight_nodes[weight] = helper.make_node(
            "DequantizeLinear", [q_name, scale_name, zero_name], [dequantized],
            name=names.fresh(f"{weight}_DequantizeLinear"), axis=axis,
        )
        replacement[weight] = dequantized
        bytes_before += values.nbytes
        bytes_after += quantized.nbytes + scales.nbytes + scales.size

    _rebuild_nodes(graph, input_pairs, renamed_inputs, output_pairs, weight_nodes, replacement)
    dropped = _drop_unused_initializers(graph, set(targets.weights))
    graph.initializer.extend(new_initializers)
    set_metadata(model, {PRECISION_KEY: "int8", QUANTIZATION_KEY: QDQ_SCHEMES[placement], ENCODING_KEY: encoding,
                          WEIGHT_RANGE_KEY: weight_range(weight_max)})
    check_model(model, out_path)
    save_atomic(model, out_path)
    log.info(
        "int8 Q/DQ graph (%s activations, weights in %s): %d activation Q/DQ pairs, %d int8 "
        "weights (%.1f MB -> %.1f MB, %d fp32 weights dropped): %s",
        encoding, weight_range(weight_max), len(targets.tensors), len(weight_nodes),
        bytes_before / 1e6, bytes_after / 1e6, dropped, out_path,
    )
    return out_path


def _activation_amax(tensor: str, amax_by_name: Mapping[str, float]) -> float:
    if tensor not in amax_by_name:
        raise ConfigError(f"no calibration amax for tensor {tensor!r}")
    try:
        amax = float(amax_by_name[tensor])
    except (TypeError, ValueError):
        raise ConfigError(
            f"calibration amax for tensor {tensor!r} is not a number: {amax_by_name[tensor]!r}"
        ) from None
    if not math.isfinite(amax) or amax <= 0.0:
        raise ConfigError(f"calibration amax for tensor {tensor!r} must be positive, got {amax}")
    return amax


def _weight_scales(
    weight: str, values: np.ndarray, axis: int, scales_by_name: Mapping[str, np.ndarray]
) -> np.ndarray:
    if weight not in scales_by_name:
        raise ConfigError(f"no weight scales for initializer {weight!r}")
    channels = values.shape[axis]
    scales = np.asarray(scales_by_name[weight], dtype=np.float32).reshape(-1)
    if scales.size == 1:
        # A per-tensor scale is a per-channel one with every channel equal.
        scales = np.full(channels, scales[0], dtype=np.float32)
    if scales.shape != (channels,):
        raise ConfigError(
            f"weight scales for {weight!r} have {scales.size} entries; the weight has "
            f"{channels} output channels"
        )
    if not np.all(np.isfinite(scales)) or np.any(scales < 0):
        raise ConfigError(f"weight scales for {weight!r} must be finite and non-negative")
    zero = scales == 0
    if zero.any():
        channel_max = np.abs(np.moveaxis(values, axis, 0)).reshape(channels, -1).max(axis=1)
        if np.any(channel_max[zero] > 0):
            raise ConfigError(f"weight scales for {weight!r} are 0 for non-zero channels")
        # An all-zero channel quantizes to 0 under any scale; a scale of 0 would make
        # QuantizeLinear divide by zero in runtimes that re-quantize.
        scales = np.where(zero, np.float32(1.0), scales).astype(np.float32)
    return np.ascontiguousarray(scales)


def weight_range(weight_max: int) -> str:
    """How a graph's weight range is recorded: "[-127, 127]" or "[-63, 63]"."""
    return f"[-{weight_max}, {weight_max}]"


def _quantize_weight(
    weight: str, values: np.ndarray, scales: np.ndarray, axis: int, weight_max: int
) -> np.ndarray:
    shape = [1] * values.ndim
    shape[axis] = scales.size
    # np.rint rounds half to even, as QuantizeLinear does.
    scaled = np.rint(values / scales.reshape(shape))
    clipped = int(np.count_nonzero(np.abs(scaled) > weight_max))
    if clipped:
        log.debug("weight %s: %d values clipped to +-%d", weight, clipped, weight_max)
    return np.clip(scaled, -weight_max, weight_max).astype(np.int8)


def _rebuild_nodes(
    graph: onnx.GraphProto,
    input_pairs: list[onnx.NodeProto],
    renamed_inputs: Mapping[str, str],
    output_pairs: Mapping[str, tuple[str, list[onnx.NodeProto]]],
    weight_nodes: Mapping[str, onnx.NodeProto],
    replacement: Mapping[str, str],
) -> None:
    """Insert the Q/DQ nodes in topological order: graph inputs' pairs first, a weight's
    DQ right before its first reader, a produced tensor's pair right after its producer
    (which then writes the pair's float input)."""
    pending_weights = dict(weight_nodes)
    nodes = list(input_pairs)
    for original in graph.node:
        node = copy_node(original)
        for i, name in enumerate(node.input):
            node.input[i] = renamed_inputs.get(name, name)
        if node.op_type in QUANTIZED_OPS and node.domain in ("", "ai.onnx"):
            weight = node.input[1]
            if weight in pending_weights:
                nodes.append(pending_weights.pop(weight))
            node.input[1] = replacement[weight]
        pairs: list[onnx.NodeProto] = []
        for i, out in enumerate(node.output):
            if out in output_pairs:
                raw, pair = output_pairs[out]
                node.output[i] = raw
                pairs += pair
        nodes.append(node)
        nodes += pairs
    graph.ClearField("node")
    graph.node.extend(nodes)


def _drop_unused_initializers(graph: onnx.GraphProto, candidates: set[str]) -> int:
    """Remove fp32 weights nothing reads any more (their int8 copies replace them); a
    weight some other node still reads stays."""
    used = {name for node in graph.node for name in node.input}
    used |= {out.name for out in graph.output}
    unused = candidates - used
    if not unused:
        return 0
    kept = [init for init in graph.initializer if init.name not in unused]
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
    # Old IR versions also list initializers as graph inputs; a dangling one would become
    # a required input.
    inputs = [info for info in graph.input if info.name not in unused]
    graph.ClearField("input")
    graph.input.extend(inputs)
    return len(unused)


# -- a precision's graph ------------------------------------------------------------------------


def precision_graph(
    precision: str, fp32_path: Path, calibration: Any = None, int8_encoding: str = SIGNED,
    weight_max: int = INT8_MAX, placement: str = ONNXRUNTIME,
) -> Path:
    """The ONNX graph that carries `precision`, derived from the FP32 export and written
    beside it. For int8, both runtimes get the same calibrated ranges; `int8_encoding`
    picks the runtime's integer type, `weight_max` the weights' range and `placement` the
    runtime's residual-Add placement (module docstring); all are in the file name (the
    default placement adds nothing to it), beside the calibration's hash.

    `calibration` (int8 only) has `.activation_amax`, `.weight_scales` and `.cache_hash`.
    The derived graph is rewritten on every call (a quick rewrite of the FP32 graph), so a
    change in the converters never leaves a stale file; an unchanged result has the same
    bytes and so the same hash in engine cache keys.
    """
    fp32_path = Path(fp32_path)
    if precision == "fp32":
        return fp32_path
    if precision == "fp16":
        return make_fp16(fp32_path, fp32_path.with_name(f"{fp32_path.stem}-fp16.onnx"))
    if precision == "int8":
        if calibration is None:
            raise BackendError("int8 needs a calibration cache (run with calibration, see python -m calibration)")
        weights = "" if weight_max == INT8_MAX else f"-w{weight_max}"
        placed = "" if placement == ONNXRUNTIME else f"-{placement}"
        target = fp32_path.with_name(
            f"{fp32_path.stem}-int8-{int8_encoding}{weights}{placed}-{str(calibration.cache_hash)[:16]}.onnx"
        )
        return make_qdq_int8(fp32_path, calibration.activation_amax, calibration.weight_scales, target,
                             int8_encoding, weight_max, placement)
    raise BackendError(f"no ONNX graph for precision {precision!r}; supported: fp32, fp16, int8")
