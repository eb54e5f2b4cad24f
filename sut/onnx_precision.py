"""Reduced-precision variants of the fp32 ONNX export: explicit INT8 (Q/DQ) and float16.

TensorRT 10/11 strongly typed networks take their precision from the graph itself, not
from builder flags, so the precision has to be written into the ONNX file:

* `make_qdq_int8`: QuantizeLinear -> DequantizeLinear (per tensor) on the data input of
  every Conv and Gemm and after every Conv (after its Relu where one follows), int8
  weight initializers with a per-channel DequantizeLinear, and every reader of a
  quantized tensor (a residual Add, a pooling) reads the dequantized copy. Both runtimes
  get the same placement and the same calibrated ranges; they differ only in how a
  non-negative (post-Relu) tensor is encoded, because their integer kernels differ:
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
  `weight_max` bounds the int8 weights: INT8_MAX (127, full range) by default;
  REDUCED_WEIGHT_MAX (63, "reduce range", 7 bits) for x86 CPUs without VNNI, whose u8s8
  kernels sum pairs of products in saturating 16-bit arithmetic (sut/cpu_isa.py).
* `make_fp16`: every float32 initializer and tensor type becomes float16; the graph's
  input and output can stay float32 behind Cast nodes.

Pure graph transformations: nothing here imports onnxruntime or talks to a device. Inputs
are plain dicts, so any calibrator (or a test) can supply the scales.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from plumbing.errors import BackendError, ConfigError, first_line
from plumbing.files import atomic_path
from sut.cpu_isa import INT8_MAX, REDUCED_WEIGHT_MAX

log = logging.getLogger(__name__)

PRECISION_KEY = "deepgap.precision"
QUANTIZATION_KEY = "deepgap.quantization"
IO_DTYPE_KEY = "deepgap.io_dtype"
ENCODING_KEY = "deepgap.int8_encoding"
WEIGHT_RANGE_KEY = "deepgap.int8_weight_range"
QDQ_SCHEME = "qdq per-tensor activations (Conv/Gemm inputs, Conv outputs after their Relu), per-channel int8 weights"

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
FP16_MAX = float(np.finfo(np.float16).max)  # 65504

_QUANTIZED_OPS = ("Conv", "Gemm")
# Ops whose ONNX type constraints admit float16 for every float input and which carry no
# float32-only side input (unlike e.g. Resize's scales). Anything else is refused rather
# than converted into a graph that fails later inside a runtime.
_FP16_OPS = frozenset(
    {
        "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant",
        "Conv", "Div", "Flatten", "Gather", "Gemm", "GlobalAveragePool", "HardSigmoid",
        "HardSwish", "Identity", "MatMul", "MaxPool", "Mul", "Pad", "ReduceMean", "Relu",
        "Reshape", "Shape", "Sigmoid", "Slice", "Softmax", "Squeeze", "Sub", "Transpose",
        "Unsqueeze",
    }
)


@dataclass(frozen=True)
class QuantizationTargets:
    """What `make_qdq_int8` needs scales for, in graph order."""

    activations: tuple[str, ...]  # data input of every Conv/Gemm, each name once
    weights: dict[str, int]  # weight initializer name -> per-channel (output channel) axis
    # Each Conv's result: the output of the Relu that alone reads it, else its own output;
    # those already in `activations` are not repeated.
    outputs: tuple[str, ...] = ()

    @property
    def tensors(self) -> tuple[str, ...]:
        """Every tensor that needs an activation range, each once, in graph order."""
        return self.activations + self.outputs


# -- public API ----------------------------------------------------------------------------


def quantization_targets(model_path: Path) -> QuantizationTargets:
    """The tensors that need an activation amax and the weights that need scales."""
    model = _load(model_path)
    return targets_of(model.graph, Path(model_path).name)


def make_qdq_int8(
    fp32_model_path: Path,
    activation_amax: Mapping[str, float],
    weight_scales: Mapping[str, np.ndarray],
    out_path: Path,
    encoding: str = SIGNED,
    weight_max: int = INT8_MAX,
) -> Path:
    """Write the explicit-quantization INT8 graph of an fp32 ONNX model to `out_path`.

    `activation_amax` maps a tensor name to the largest magnitude it takes on calibration
    data (scale = amax / 127, or amax / 255 for a uint8 Relu output). `weight_scales` maps
    a Conv/Gemm weight initializer name to its per-output-channel scales, each mapping
    int8 127 to the channel's threshold (max |w| / 127 for plain max calibration).
    `encoding` is SIGNED or UNSIGNED (see the module docstring). `weight_max` is the
    largest weight magnitude stored, INT8_MAX or REDUCED_WEIGHT_MAX: the same threshold
    then maps to `weight_max` (scales x 127 / weight_max), so the calibration stays one
    and the same whatever the range. Extra entries are ignored. Raises ConfigError for
    missing or unusable scales, an unknown encoding or weight range, and BackendError for
    graphs this module cannot quantize.
    """
    if encoding not in INT8_ENCODINGS:
        raise ConfigError(f"unknown int8 encoding {encoding!r}; choose from {', '.join(INT8_ENCODINGS)}")
    if weight_max not in WEIGHT_MAXIMA:
        raise ConfigError(f"unknown int8 weight range +-{weight_max!r}; choose from "
                          f"{', '.join(f'+-{m}' for m in WEIGHT_MAXIMA)}")
    fp32_model_path, out_path = Path(fp32_model_path), Path(out_path)
    model = _load(fp32_model_path)
    _require_fp32(model, fp32_model_path)
    _ensure_opset(model, MIN_QDQ_OPSET, fp32_model_path)
    graph = model.graph
    targets = targets_of(graph, fp32_model_path.name)
    initializers = {init.name: init for init in graph.initializer}
    relu_outputs = {out for node in graph.node if node.op_type == "Relu" for out in node.output}
    graph_inputs = {info.name for info in graph.input} - set(initializers)
    names = _Names(model)
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
    _set_metadata(model, {PRECISION_KEY: "int8", QUANTIZATION_KEY: QDQ_SCHEME, ENCODING_KEY: encoding,
                          WEIGHT_RANGE_KEY: weight_range(weight_max)})
    _check(model, out_path)
    _save_atomic(model, out_path)
    log.info(
        "int8 Q/DQ graph (%s activations, weights in %s): %d activation Q/DQ pairs, %d int8 "
        "weights (%.1f MB -> %.1f MB, %d fp32 weights dropped): %s",
        encoding, weight_range(weight_max), len(targets.tensors), len(weight_nodes),
        bytes_before / 1e6, bytes_after / 1e6, dropped, out_path,
    )
    return out_path


def make_fp16(fp32_model_path: Path, out_path: Path, keep_io_fp32: bool = True) -> Path:
    """Write a float16 copy of an fp32 ONNX model to `out_path`.

    Every float32 initializer, constant and tensor type becomes float16. With
    `keep_io_fp32` the graph input and output stay float32, with a Cast after the input
    and before the output, so callers keep feeding and reading float32. Without it they
    become float16 too, and the caller (the TensorRT backend) must feed float16 input and
    read float16 logits, which saves the two Casts and halves the input copy.
    Initializer values beyond the float16 range are clipped to +-65504 (logged).
    """
    fp32_model_path, out_path = Path(fp32_model_path), Path(out_path)
    model = _load(fp32_model_path)
    _require_fp32(model, fp32_model_path)
    graph = model.graph
    unsupported = sorted(
        {
            node.op_type
            for node in graph.node
            if node.domain not in ("", "ai.onnx") or node.op_type not in _FP16_OPS
        }
    )
    if unsupported:
        raise BackendError(
            f"{fp32_model_path.name}: make_fp16 does not convert {', '.join(unsupported)} nodes"
        )

    clipped = 0
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            converted, count = _to_fp16_tensor(init)
            init.CopyFrom(converted)
            clipped += count
    for node in graph.node:
        clipped += _convert_node_to_fp16(node)
    if clipped:
        # Folded batch-norm can push weights past fp16's range; clipping keeps the graph
        # finite, but this many clipped values is worth knowing about.
        log.warning(
            "%s: %d initializer values beyond the float16 range were clipped to +-%g",
            fp32_model_path.name, clipped, FP16_MAX,
        )

    for info in graph.value_info:
        _retype(info, TensorProto.FLOAT, TensorProto.FLOAT16)
    initializer_names = {init.name for init in graph.initializer}
    names = _Names(model)
    head: list[onnx.NodeProto] = []
    tail: list[onnx.NodeProto] = []
    for info in graph.input:
        if info.name in initializer_names or not keep_io_fp32:
            # Old IR versions list initializers as inputs; their type follows the data.
            _retype(info, TensorProto.FLOAT, TensorProto.FLOAT16)
        elif _elem_type(info) == TensorProto.FLOAT:
            inner = names.fresh(f"{info.name}_fp16")
            _rename_uses(graph, info.name, inner)
            head.append(
                helper.make_node(
                    "Cast", [info.name], [inner], name=names.fresh(f"{info.name}_Cast"),
                    to=TensorProto.FLOAT16,
                )
            )
    for info in graph.output:
        if not keep_io_fp32:
            _retype(info, TensorProto.FLOAT, TensorProto.FLOAT16)
        elif _elem_type(info) == TensorProto.FLOAT:
            inner = names.fresh(f"{info.name}_fp16")
            _rename_producer_and_uses(graph, info.name, inner)
            tail.append(
                helper.make_node(
                    "Cast", [inner], [info.name], name=names.fresh(f"{info.name}_Cast"),
                    to=TensorProto.FLOAT,
                )
            )
    nodes = head + [_copy_node(n) for n in graph.node] + tail
    graph.ClearField("node")
    graph.node.extend(nodes)

    io_dtype = "float32" if keep_io_fp32 else "float16"
    _set_metadata(model, {PRECISION_KEY: "fp16", IO_DTYPE_KEY: io_dtype})
    _check(model, out_path)
    _save_atomic(model, out_path)
    log.info("fp16 graph (%s input/output): %s", io_dtype, out_path)
    return out_path


def graph_precision(model_path: Path) -> str:
    """"int8", "fp16", ... as recorded by this module; "fp32" for a plain export."""
    model = _load(model_path, external_data=False)
    return _metadata(model).get(PRECISION_KEY, "fp32")


def count_ops(model_path: Path) -> dict[str, int]:
    """Node count per op type in the main graph, sorted by op type."""
    model = _load(model_path, external_data=False)
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))


# -- int8 internals ------------------------------------------------------------------------


def targets_of(graph: onnx.GraphProto, label: str) -> QuantizationTargets:
    """What an fp32 graph's INT8 version quantizes; `label` names the graph in errors."""
    initializers = {init.name for init in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    activations: dict[str, None] = {}  # an ordered set
    outputs: dict[str, None] = {}
    weights: dict[str, int] = {}
    for node in graph.node:
        if node.op_type not in _QUANTIZED_OPS or node.domain not in ("", "ai.onnx"):
            continue
        node_label = node.name or node.output[0]
        if len(node.input) < 2 or node.input[1] not in initializers:
            raise BackendError(
                f"{label}: {node.op_type} {node_label} has no weight initializer to quantize"
            )
        activations[node.input[0]] = None
        if node.op_type == "Conv":
            outputs[_conv_result(node, readers)] = None
        axis = _weight_axis(node)
        weight = node.input[1]
        if weights.setdefault(weight, axis) != axis:
            raise BackendError(
                f"{label}: weight {weight} is shared by nodes that need different "
                "quantization axes"
            )
    if not weights:
        raise BackendError(f"{label}: no Conv or Gemm nodes to quantize")
    return QuantizationTargets(tuple(activations), weights, tuple(t for t in outputs if t not in activations))


def _conv_result(conv: onnx.NodeProto, readers: Mapping[str, list[onnx.NodeProto]]) -> str:
    """Where a Conv's result is quantized: after the Relu that alone reads it (TensorRT
    fuses Conv + Relu + Q; ONNX Runtime folds a Relu into a uint8 Q), else at its output."""
    users = readers.get(conv.output[0], [])
    if len(users) == 1 and users[0].op_type == "Relu" and users[0].domain in ("", "ai.onnx"):
        return users[0].output[0]
    return conv.output[0]


def _weight_axis(node: onnx.NodeProto) -> int:
    """The output-channel axis of the weight: Conv W is (M, C/g, k...); Gemm B is (K, N)
    unless transB=1 makes it (N, K)."""
    if node.op_type == "Conv":
        return 0
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return 0 if attrs.get("transB", 0) else 1


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
        node = _copy_node(original)
        for i, name in enumerate(node.input):
            node.input[i] = renamed_inputs.get(name, name)
        if node.op_type in _QUANTIZED_OPS and node.domain in ("", "ai.onnx"):
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


# -- fp16 internals ------------------------------------------------------------------------


def _to_fp16_tensor(tensor: TensorProto) -> tuple[TensorProto, int]:
    values = numpy_helper.to_array(tensor)
    overflow = int(np.count_nonzero(np.isfinite(values) & (np.abs(values) > FP16_MAX)))
    converted = np.clip(values, -FP16_MAX, FP16_MAX).astype(np.float16)
    return numpy_helper.from_array(converted, tensor.name), overflow


def _convert_node_to_fp16(node: onnx.NodeProto) -> int:
    """Retype float32 constants and casts inside one node; returns clipped value count."""
    clipped = 0
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
            attr.i = TensorProto.FLOAT16
        elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
            converted, count = _to_fp16_tensor(attr.t)
            attr.t.CopyFrom(converted)
            clipped += count
    if node.op_type == "Constant":
        # value_float(s) always produce float32; restate them as a float16 tensor.
        for attr in list(node.attribute):
            if attr.name in ("value_float", "value_floats"):
                values = np.asarray(helper.get_attribute_value(attr), dtype=np.float32)
                clipped += int(np.count_nonzero(np.abs(values) > FP16_MAX))
                tensor = numpy_helper.from_array(
                    np.clip(values, -FP16_MAX, FP16_MAX).astype(np.float16)
                )
                node.attribute.remove(attr)
                node.attribute.append(helper.make_attribute("value", tensor))
    return clipped


def _elem_type(info: onnx.ValueInfoProto) -> int:
    return info.type.tensor_type.elem_type if info.type.HasField("tensor_type") else 0


def _retype(info: onnx.ValueInfoProto, old: int, new: int) -> None:
    if _elem_type(info) == old:
        info.type.tensor_type.elem_type = new


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _rename_producer_and_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
    _rename_uses(graph, old, new)


# -- shared internals ----------------------------------------------------------------------


class _Names:
    """Every tensor and node name in the model, so inserted ones never collide."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self._taken: set[str] = set()
        self._taken.update(init.name for init in graph.initializer)
        for infos in (graph.input, graph.output, graph.value_info):
            self._taken.update(info.name for info in infos)
        for node in graph.node:
            self._taken.add(node.name)
            self._taken.update(node.input)
            self._taken.update(node.output)

    def fresh(self, base: str) -> str:
        name, suffix = base, 1
        while name in self._taken:
            name = f"{base}_{suffix}"
            suffix += 1
        self._taken.add(name)
        return name


def _copy_node(node: onnx.NodeProto) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy


def _load(path: Path, external_data: bool = True) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ONNX model {path}: no such file")
    try:
        return onnx.load(str(path), load_external_data=external_data)
    except Exception as exc:
        raise BackendError(f"cannot read ONNX model {path}: {first_line(exc)}") from exc


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def _require_fp32(model: onnx.ModelProto, path: Path) -> None:
    precision = _metadata(model).get(PRECISION_KEY, "fp32")
    if precision != "fp32":
        raise ConfigError(f"{path.name} is already a {precision} graph; start from the fp32 export")


def _set_metadata(model: onnx.ModelProto, values: Mapping[str, str]) -> None:
    merged = {**_metadata(model), **values}
    model.ClearField("metadata_props")
    helper.set_model_props(model, merged)


def _ensure_opset(model: onnx.ModelProto, minimum: int, path: Path) -> None:
    """Keep the model's opset when it is new enough, else convert up to `minimum`."""
    versions = [op.version for op in model.opset_import if op.domain in ("", "ai.onnx")]
    if not versions:
        raise BackendError(f"{path.name} imports no default-domain opset")
    if versions[0] >= minimum:
        return
    log.info("%s: converting opset %d -> %d for per-channel Q/DQ", path.name, versions[0], minimum)
    try:
        from onnx import version_converter

        converted = version_converter.convert_version(model, minimum)
    except Exception as exc:
        raise BackendError(
            f"{path.name}: opset {versions[0]} cannot be converted to {minimum} for "
            f"per-channel Q/DQ: {first_line(exc)}"
        ) from exc
    model.CopyFrom(converted)


def _check(model: onnx.ModelProto, out_path: Path) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise BackendError(
            f"converted graph for {out_path.name} fails the ONNX checker: {first_line(exc)}"
        ) from exc


def _save_atomic(model: onnx.ModelProto, out_path: Path) -> None:
    # Same folder as the target, so the rename is atomic and readers never see a partial
    # file, even with concurrent writers.
    try:
        with atomic_path(out_path) as tmp:
            onnx.save(model, str(tmp))
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot write {out_path}: {first_line(exc)}") from exc



def precision_graph(
    precision: str, fp32_path: Path, calibration: Any = None, int8_encoding: str = SIGNED,
    weight_max: int = INT8_MAX,
) -> Path:
    """The ONNX graph that carries `precision`, derived from the FP32 export and written
    beside it. For int8, both runtimes get the same placement and calibrated ranges;
    `int8_encoding` picks the runtime's integer type and `weight_max` the weights' range
    (module docstring); both are in the file name, beside the calibration's hash.

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
        target = fp32_path.with_name(
            f"{fp32_path.stem}-int8-{int8_encoding}{weights}-{str(calibration.cache_hash)[:16]}.onnx"
        )
        return make_qdq_int8(fp32_path, calibration.activation_amax, calibration.weight_scales, target,
                             int8_encoding, weight_max)
    raise BackendError(f"no ONNX graph for precision {precision!r}; supported: fp32, fp16, int8")
