"""The ONNX plumbing deepgap's graph rewrites share: the metadata keys a rewritten graph
carries (its precision, IO dtype, INT8 encoding), loading, checking and atomic saving,
opset and dtype checks, renaming a tensor's uses, fresh node names. sut/onnx_precision.py
(INT8 Q/DQ) and sut/onnx_fp16.py (float16) are built on it."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import onnx
from onnx import helper

from plumbing.errors import BackendError, ConfigError, first_line
from plumbing.files import atomic_path

log = logging.getLogger(__name__)

PRECISION_KEY = "deepgap.precision"
QUANTIZATION_KEY = "deepgap.quantization"
IO_DTYPE_KEY = "deepgap.io_dtype"
ENCODING_KEY = "deepgap.int8_encoding"
WEIGHT_RANGE_KEY = "deepgap.int8_weight_range"


def graph_precision(model_path: Path) -> str:
    """"int8", "fp16", ... as recorded by this module; "fp32" for a plain export."""
    model = load_model(model_path, external_data=False)
    return metadata(model).get(PRECISION_KEY, "fp32")


def count_ops(model_path: Path) -> dict[str, int]:
    """Node count per op type in the main graph, sorted by op type."""
    model = load_model(model_path, external_data=False)
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))


def elem_type(info: onnx.ValueInfoProto) -> int:
    return info.type.tensor_type.elem_type if info.type.HasField("tensor_type") else 0


def retype(info: onnx.ValueInfoProto, old: int, new: int) -> None:
    if elem_type(info) == old:
        info.type.tensor_type.elem_type = new


def rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def rename_producer_and_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
    rename_uses(graph, old, new)


class Names:
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


def copy_node(node: onnx.NodeProto) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy


def load_model(path: Path, external_data: bool = True) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ONNX model {path}: no such file")
    try:
        return onnx.load(str(path), load_external_data=external_data)
    except Exception as exc:
        raise BackendError(f"cannot read ONNX model {path}: {first_line(exc)}") from exc


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def require_fp32(model: onnx.ModelProto, path: Path) -> None:
    precision = metadata(model).get(PRECISION_KEY, "fp32")
    if precision != "fp32":
        raise ConfigError(f"{path.name} is already a {precision} graph; start from the fp32 export")


def set_metadata(model: onnx.ModelProto, values: Mapping[str, str]) -> None:
    merged = {**metadata(model), **values}
    model.ClearField("metadata_props")
    helper.set_model_props(model, merged)


def ensure_opset(model: onnx.ModelProto, minimum: int, path: Path) -> None:
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


def check_model(model: onnx.ModelProto, out_path: Path) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise BackendError(
            f"converted graph for {out_path.name} fails the ONNX checker: {first_line(exc)}"
        ) from exc


def save_atomic(model: onnx.ModelProto, out_path: Path) -> None:
    # Same folder as the target, so the rename is atomic and readers never see a partial
    # file, even with concurrent writers.
    try:
        with atomic_path(out_path) as tmp:
            onnx.save(model, str(tmp))
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot write {out_path}: {first_line(exc)}") from exc
