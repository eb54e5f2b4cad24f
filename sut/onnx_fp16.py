"""The float16 variant of the fp32 ONNX export (`make_fp16`): every float32 initializer and
tensor type becomes float16; the graph's input and output can stay float32 behind Casts."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from plumbing.errors import BackendError
from sut.onnx_graph import (IO_DTYPE_KEY, PRECISION_KEY, Names, check_model, copy_node, elem_type, load_model,
                            rename_producer_and_uses, rename_uses, require_fp32, retype, save_atomic, set_metadata)

log = logging.getLogger(__name__)

FP16_MAX = float(np.finfo(np.float16).max)  # 65504

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
    model = load_model(fp32_model_path)
    require_fp32(model, fp32_model_path)
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
        retype(info, TensorProto.FLOAT, TensorProto.FLOAT16)
    initializer_names = {init.name for init in graph.initializer}
    names = Names(model)
    head: list[onnx.NodeProto] = []
    tail: list[onnx.NodeProto] = []
    for info in graph.input:
        if info.name in initializer_names or not keep_io_fp32:
            # Old IR versions list initializers as inputs; their type follows the data.
            retype(info, TensorProto.FLOAT, TensorProto.FLOAT16)
        elif elem_type(info) == TensorProto.FLOAT:
            inner = names.fresh(f"{info.name}_fp16")
            rename_uses(graph, info.name, inner)
            head.append(
                helper.make_node(
                    "Cast", [info.name], [inner], name=names.fresh(f"{info.name}_Cast"),
                    to=TensorProto.FLOAT16,
                )
            )
    for info in graph.output:
        if not keep_io_fp32:
            retype(info, TensorProto.FLOAT, TensorProto.FLOAT16)
        elif elem_type(info) == TensorProto.FLOAT:
            inner = names.fresh(f"{info.name}_fp16")
            rename_producer_and_uses(graph, info.name, inner)
            tail.append(
                helper.make_node(
                    "Cast", [inner], [info.name], name=names.fresh(f"{info.name}_Cast"),
                    to=TensorProto.FLOAT,
                )
            )
    nodes = head + [copy_node(n) for n in graph.node] + tail
    graph.ClearField("node")
    graph.node.extend(nodes)

    io_dtype = "float32" if keep_io_fp32 else "float16"
    set_metadata(model, {PRECISION_KEY: "fp16", IO_DTYPE_KEY: io_dtype})
    check_model(model, out_path)
    save_atomic(model, out_path)
    log.info("fp16 graph (%s input/output): %s", io_dtype, out_path)
    return out_path


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
