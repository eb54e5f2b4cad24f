"""Where INT8 quantizes a graph: the data input of every Conv and Gemm, each weight with its
per-channel axis, and each Conv's result (after the Relu that alone reads it). The Q/DQ
writer (sut/onnx_precision.py) and the calibrator (calibration/collect.py) read the same
placement, so every tensor that gets a Q/DQ pair has a calibrated range.

Two placements differ only at residual Adds, where the runtimes fuse differently:
* ONNXRUNTIME quantizes every Conv's result, the Conv that a residual Add reads included:
  ONNX Runtime fuses DQ -> Conv -> Q into QLinearConv and DQ -> Add -> Q into QLinearAdd,
  and needs the Q after the Conv for either.
* TENSORRT follows NVIDIA's Q/DQ placement guide (TensorRT developer guide, "Q/DQ
  Layer-Placement Recommendations": quantize weighted operations' inputs and the residual
  input of a skip connection, by default not their outputs) and its reference ResNet
  (pytorch-quantization's residual_quantizer on the identity branch only): the Conv on
  the main branch of a residual Add keeps its output in float and the Add's other
  (identity) input is quantized, so TensorRT fuses Conv + Add (+ Relu) with an int8 output;
  a Q/DQ pair between that Conv and the Add would force them apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import helper

from plumbing.errors import BackendError, ConfigError
from sut.onnx_graph import load_model

QUANTIZED_OPS = ("Conv", "Gemm")
ONNXRUNTIME = "onnxruntime"
TENSORRT = "tensorrt"
PLACEMENTS = (ONNXRUNTIME, TENSORRT)


@dataclass(frozen=True)
class QuantizationTargets:
    """What `make_qdq_int8` needs scales for, in graph order."""

    activations: tuple[str, ...]  # data input of every Conv/Gemm, each name once
    weights: dict[str, int]  # weight initializer name -> per-channel (output channel) axis
    # Each Conv's result: the output of the Relu that alone reads it, else its own output
    # (TENSORRT: not a residual Add's fused Conv; that Add's other input instead); those
    # already in `activations` are not repeated.
    outputs: tuple[str, ...] = ()

    @property
    def tensors(self) -> tuple[str, ...]:
        """Every tensor that needs an activation range, each once, in graph order."""
        return self.activations + self.outputs


def quantization_targets(model_path: Path, placement: str = ONNXRUNTIME) -> QuantizationTargets:
    """The tensors that need an activation amax and the weights that need scales."""
    model = load_model(model_path)
    return targets_of(model.graph, Path(model_path).name, placement)


def calibrated_tensors(graph: onnx.GraphProto, label: str) -> tuple[str, ...]:
    """Every tensor either placement quantizes, each once: one calibration cache serves the
    graphs of both runtimes."""
    tensors: dict[str, None] = {}
    for placement in PLACEMENTS:
        tensors.update(dict.fromkeys(targets_of(graph, label, placement).tensors))
    return tuple(tensors)


def targets_of(graph: onnx.GraphProto, label: str, placement: str = ONNXRUNTIME) -> QuantizationTargets:
    """What an fp32 graph's INT8 version quantizes; `label` names the graph in errors."""
    if placement not in PLACEMENTS:
        raise ConfigError(f"unknown int8 Q/DQ placement {placement!r}; choose from {', '.join(PLACEMENTS)}")
    initializers = {init.name for init in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    activations: dict[str, None] = {}  # an ordered set
    outputs: dict[str, None] = {}
    weights: dict[str, int] = {}
    for node in graph.node:
        if node.op_type not in QUANTIZED_OPS or not _default_domain(node):
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
    if placement == TENSORRT:
        fused, identities = residual_adds(graph, readers)
        outputs = {name: None for name in (*outputs, *identities) if name not in fused}
    return QuantizationTargets(tuple(activations), weights, tuple(t for t in outputs if t not in activations))


def residual_adds(
    graph: onnx.GraphProto, readers: Mapping[str, list[onnx.NodeProto]]
) -> tuple[set[str], list[str]]:
    """(the Conv outputs TensorRT fuses into the residual Add that alone reads them, those
    Adds' identity inputs). An Add of two computed tensors is residual when one input lies
    on a longer path than the other: that is the main branch, the shorter one the shortcut
    (a block's input, or its downsample Conv), much as ModelOpt's ONNX quantizer picks the
    input on the longer path from the two's common ancestor (build_non_residual_input_map).
    The main input is fused only where a Conv writes it for the Add alone."""
    producers = {out: node for node in graph.node for out in node.output}
    depth = _depths(graph, producers)
    graph_outputs = {info.name for info in graph.output}
    fused: set[str] = set()
    identities: list[str] = []
    for node in graph.node:
        if node.op_type != "Add" or not _default_domain(node) or len(node.input) != 2:
            continue
        if not all(name in producers and producers[name].op_type != "Constant" for name in node.input):
            continue  # a bias, a constant or a graph input: no shortcut
        main, identity = sorted(node.input, key=lambda name: depth[name], reverse=True)
        if depth[main] == depth[identity]:  # no branch is the shortcut
            continue
        conv = producers[main]
        if conv.op_type != "Conv" or not _default_domain(conv) or main in graph_outputs:
            continue
        if len(readers.get(main, [])) != 1:  # read elsewhere too: TensorRT cannot fuse it away
            continue
        fused.add(main)
        identities.append(identity)
    return fused, identities


def _depths(graph: onnx.GraphProto, producers: Mapping[str, onnx.NodeProto]) -> dict[str, int]:
    """Each computed tensor's longest path from the graph inputs, in nodes (ONNX lists nodes
    in topological order)."""
    depth: dict[str, int] = {}
    for node in graph.node:
        level = 1 + max((depth.get(name, 0) for name in node.input if name in producers), default=0)
        for out in node.output:
            depth[out] = level
    return depth


def _default_domain(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx")


def _conv_result(conv: onnx.NodeProto, readers: Mapping[str, list[onnx.NodeProto]]) -> str:
    """Where a Conv's result is quantized: after the Relu that alone reads it (TensorRT
    fuses Conv + Relu + Q; ONNX Runtime folds a Relu into a uint8 Q), else at its output."""
    users = readers.get(conv.output[0], [])
    if len(users) == 1 and users[0].op_type == "Relu" and _default_domain(users[0]):
        return users[0].output[0]
    return conv.output[0]


def weight_axis(node: onnx.NodeProto) -> int:
    """The output-channel axis of the weight: Conv W is (M, C/g, k...); Gemm B is (K, N)
    unless transB=1 makes it (N, K)."""
    if node.op_type == "Conv":
        return 0
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return 0 if attrs.get("transB", 0) else 1
