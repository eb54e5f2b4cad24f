"""Where INT8 quantizes a graph: the data input of every Conv and Gemm, each Conv's result
(after the Relu that alone reads it), and each weight with its per-channel axis. The Q/DQ
writer (sut/onnx_precision.py) and the calibrator (calibration/collect.py) read the same
placement, so every tensor that gets a Q/DQ pair has a calibrated range."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import helper

from plumbing.errors import BackendError
from sut.onnx_graph import load_model

QUANTIZED_OPS = ("Conv", "Gemm")


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


def quantization_targets(model_path: Path) -> QuantizationTargets:
    """The tensors that need an activation amax and the weights that need scales."""
    model = load_model(model_path)
    return targets_of(model.graph, Path(model_path).name)


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
        if node.op_type not in QUANTIZED_OPS or node.domain not in ("", "ai.onnx"):
            continue
        node_label = node.name or node.output[0]
        if len(node.input) < 2 or node.input[1] not in initializers:
            raise BackendError(
                f"{label}: {node.op_type} {node_label} has no weight initializer to quantize"
            )
        activations[node.input[0]] = None
        if node.op_type == "Conv":
            outputs[_conv_result(node, readers)] = None
        axis = weight_axis(node)
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


def weight_axis(node: onnx.NodeProto) -> int:
    """The output-channel axis of the weight: Conv W is (M, C/g, k...); Gemm B is (K, N)
    unless transB=1 makes it (N, K)."""
    if node.op_type == "Conv":
        return 0
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return 0 if attrs.get("transB", 0) else 1
