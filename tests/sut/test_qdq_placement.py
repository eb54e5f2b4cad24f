"""Q/DQ placement at residual Adds (sut/qdq_placement.py): TensorRT's placement leaves the
Conv on an Add's main branch unquantized and quantizes the Add's identity input, so
TensorRT fuses Conv + Add (NVIDIA's placement guide: a Q/DQ pair between them forces the
convolution apart from the addition); ONNX Runtime's placement, which fuses QLinearConv
and QLinearAdd, keeps a Q/DQ pair on every Conv's result. Then the accuracy gate on both
placements, both run by ONNX Runtime in the signed (TensorRT) encoding."""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from plumbing.errors import ConfigError  # noqa: E402
from sut.onnx_graph import QUANTIZATION_KEY  # noqa: E402
from sut.onnx_precision import QDQ_SCHEME, SIGNED, UNSIGNED, make_qdq_int8, precision_graph  # noqa: E402
from tests.sut.test_onnx_precision import _producers, _readers  # noqa: E402
from sut.qdq_placement import (  # noqa: E402
    ONNXRUNTIME, TENSORRT, calibrated_tensors, residual_adds, targets_of,
)

SIZE, CHANNELS, CLASSES = 8, 4, 5
# The residual blocks' Adds: (main branch, identity). r0 is the stem's output (read by
# block 1's first Conv too), d the downsample Conv, s a Sigmoid that nothing else reads,
# so only TensorRT's placement quantizes it. Block 1's Add lists its identity first.
RESIDUALS = {"a1": ("c2", "r0"), "a2": ("c4", "d"), "a3": ("c7", "s")}


def _conv(name: str, source: str, out: str, kernel: int = 3) -> Any:
    return helper.make_node("Conv", [source, f"W_{name}", f"B_{name}"], [out], name=name,
                            pads=[kernel // 2] * 4)


def _residual_model(path: Path) -> Path:
    """A stem and three residual blocks (identity, downsample Conv, a non-Conv shortcut),
    then pooling and a Gemm: the shapes of a ResNet's blocks at 8 px, 4 channels."""
    rng = np.random.default_rng(3)
    convs = {"stem": 3, "k1": 3, "k2": 3, "k3": 3, "k4": 3, "ds": 1, "k6": 3, "k7": 3}
    inits = []
    for name, kernel in convs.items():
        fan_in = (3 if name == "stem" else CHANNELS) * kernel * kernel
        weight = rng.normal(0, np.sqrt(2 / fan_in), (CHANNELS, 3 if name == "stem" else CHANNELS, kernel, kernel))
        inits += [numpy_helper.from_array(weight.astype(np.float32), f"W_{name}"),
                  numpy_helper.from_array(rng.normal(0, 0.1, CHANNELS).astype(np.float32), f"B_{name}")]
    inits += [numpy_helper.from_array(rng.normal(0, 0.5, (CLASSES, CHANNELS)).astype(np.float32), "W_fc"),
              numpy_helper.from_array(np.zeros(CLASSES, np.float32), "B_fc")]
    nodes = [
        _conv("stem", "x", "c0"), helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        _conv("k1", "r0", "c1"), helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        _conv("k2", "r1", "c2"), helper.make_node("Add", ["r0", "c2"], ["a1"], name="add1"),
        helper.make_node("Relu", ["a1"], ["r2"], name="relu2"),
        _conv("k3", "r2", "c3"), helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        _conv("k4", "r3", "c4"), _conv("ds", "r2", "d", kernel=1),
        helper.make_node("Add", ["c4", "d"], ["a2"], name="add2"),
        helper.make_node("Relu", ["a2"], ["r4"], name="relu4"),
        helper.make_node("Sigmoid", ["r4"], ["s"], name="sigmoid"),
        _conv("k6", "r4", "c6"), helper.make_node("Relu", ["c6"], ["r6"], name="relu6"),
        _conv("k7", "r6", "c7"), helper.make_node("Add", ["c7", "s"], ["a3"], name="add3"),
        helper.make_node("GlobalAveragePool", ["a3"], ["g"], name="pool"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "W_fc", "B_fc"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def _calibration(path: Path, images: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """max |x| of every tensor the graph computes, max |w| / 127 per output channel."""
    model = onnx.load(str(path))
    names = [out for node in model.graph.node for out in node.output]
    model.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n != "logits")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": images})))
    amax = {name: float(np.abs(v).max()) for name, v in values.items()} | {"x": float(np.abs(images).max())}
    scales = {i.name: np.abs(w).reshape(w.shape[0], -1).max(1) / 127
              for i in model.graph.initializer if (w := numpy_helper.to_array(i)).ndim >= 2}
    return amax, scales


@pytest.fixture(scope="module")
def residual(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("residual")
    path = _residual_model(folder / "residual.onnx")
    images = np.random.default_rng(0).normal(0, 1, (16, 3, SIZE, SIZE)).astype(np.float32)
    amax, scales = _calibration(path, images)
    return SimpleNamespace(path=path, folder=folder, images=images, amax=amax, scales=scales,
                           graph=onnx.load(str(path)).graph)


def _quantized(residual: SimpleNamespace, encoding: str, placement: str) -> Any:
    out = residual.folder / f"{encoding}-{placement}.onnx"
    return onnx.load(str(make_qdq_int8(residual.path, residual.amax, residual.scales, out, encoding,
                                       placement=placement)))


def test_residual_adds_tell_the_main_branch_from_the_shortcut(residual) -> None:
    readers: dict[str, list[Any]] = {}
    for node in residual.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    fused, identities = residual_adds(residual.graph, readers)
    assert fused == {main for main, _ in RESIDUALS.values()}
    assert identities == [identity for _, identity in RESIDUALS.values()]


def test_adds_that_are_no_fusible_residual_are_left_alone() -> None:
    """Two Convs of the same depth (no shortcut), a Conv plus a Constant (a bias), and a
    Conv output that something besides the Add reads: none is fused, nothing is added."""
    nodes = [
        _conv("p", "x", "p"), _conv("q", "x", "q"), helper.make_node("Add", ["p", "q"], ["pq"], name="even"),
        helper.make_node("Constant", [], ["k"], name="k", value=numpy_helper.from_array(np.ones(1, np.float32))),
        _conv("r", "pq", "r"), helper.make_node("Add", ["r", "k"], ["rk"], name="bias"),
        _conv("t", "rk", "t"), helper.make_node("Relu", ["t"], ["u"], name="relu"),
        _conv("v", "u", "v"), helper.make_node("Add", ["v", "rk"], ["w"], name="shared"),
        helper.make_node("Mul", ["v", "w"], ["y"], name="also_reads_v"),
    ]
    inits = [numpy_helper.from_array(np.ones((3, 3, 3, 3), np.float32), f"W_{n}") for n in "pqrtv"]
    inits += [numpy_helper.from_array(np.zeros(3, np.float32), f"B_{n}") for n in "pqrtv"]
    graph = helper.make_graph(nodes, "adds", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])], initializer=inits)
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    assert residual_adds(graph, readers) == (set(), [])
    assert targets_of(graph, "adds", TENSORRT) == targets_of(graph, "adds", ONNXRUNTIME)


@pytest.mark.parametrize("encoding", [SIGNED, UNSIGNED])
def test_tensorrt_placement_fuses_each_residual_conv_into_its_add(residual, encoding: str) -> None:
    model = _quantized(residual, encoding, TENSORRT)
    producers, readers = _producers(model), _readers(model)
    for add, (main, identity) in RESIDUALS.items():
        node = producers[add]
        assert node.op_type == "Add"
        # The main branch's Conv writes the Add's input itself, and nothing else reads it:
        # no QuantizeLinear between them.
        assert main in node.input and producers[main].op_type == "Conv", add
        assert [n.op_type for n in readers[main]] == ["Add"], add
        # The identity input is read dequantized: int8 into the fused Conv + Add.
        (other,) = [name for name in node.input if name != main]
        assert producers[other].op_type == "DequantizeLinear", add
        assert producers[producers[other].input[0]].op_type == "QuantizeLinear", add
        assert other == identity  # the pair quantizes back into the original name
    quantized = {q.input[0] for q in model.graph.node if q.op_type == "QuantizeLinear"}
    assert not quantized & {main for main, _ in RESIDUALS.values()}
    # Every other Conv still ends in a Q, after the Relu that alone reads it.
    for conv in (n for n in model.graph.node if n.op_type == "Conv" and n.output[0] not in
                 {m for m, _ in RESIDUALS.values()}):
        (user,) = readers[conv.output[0]]
        if user.op_type == "Relu":
            (user,) = readers[user.output[0]]
        assert user.op_type == "QuantizeLinear", conv.name
    assert dict((m.key, m.value) for m in model.metadata_props)[QUANTIZATION_KEY] != QDQ_SCHEME


@pytest.mark.parametrize("encoding", [SIGNED, UNSIGNED])
def test_onnx_runtime_placement_quantizes_every_conv_result_and_both_add_inputs(residual, encoding) -> None:
    model = _quantized(residual, encoding, ONNXRUNTIME)
    producers, readers = _producers(model), _readers(model)
    for add, (main, identity) in RESIDUALS.items():
        assert producers[main].op_type == "DequantizeLinear", add  # Conv -> Q -> DQ -> Add
        if identity != "s":
            assert producers[identity].op_type == "DequantizeLinear", add
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        (user,) = readers[conv.output[0]]
        if user.op_type == "Relu":
            (user,) = readers[user.output[0]]
        assert user.op_type == "QuantizeLinear", conv.name
    # The shortcut that is no Conv's input or result is left in float: nothing fuses it.
    assert producers["s"].op_type == "Sigmoid"
    assert dict((m.key, m.value) for m in model.metadata_props)[QUANTIZATION_KEY] == QDQ_SCHEME
    assert targets_of(residual.graph, "residual") == targets_of(residual.graph, "residual", ONNXRUNTIME)


def test_calibration_covers_both_placements(residual, tmp_path: Path) -> None:
    """The calibrator calibrates every tensor either placement quantizes, so the TensorRT
    graph finds a range for the identity input ONNX Runtime's placement leaves in float."""
    from calibration.collect import collect_statistics
    from calibration.subset import synthetic_subset

    ours = set(targets_of(residual.graph, "residual", ONNXRUNTIME).tensors)
    theirs = set(targets_of(residual.graph, "residual", TENSORRT).tensors)
    assert theirs - ours == {"s"} and ours - theirs == {"c2", "c4", "c7"}
    assert set(calibrated_tensors(residual.graph, "residual")) == ours | theirs
    stats = collect_statistics(residual.path, synthetic_subset(count=4, image_size=SIZE), "max", batch_size=4)
    assert set(stats.activations) == ours | theirs
    only_ours = {name: residual.amax[name] for name in ours}
    with pytest.raises(ConfigError, match="^no calibration amax for tensor 's'$"):
        make_qdq_int8(residual.path, only_ours, residual.scales, tmp_path / "x.onnx", placement=TENSORRT)


def test_precision_graph_names_only_the_tensorrt_placement(residual) -> None:
    calibration = SimpleNamespace(activation_amax=residual.amax, weight_scales=residual.scales,
                                  cache_hash="0123456789abcdef0123")
    ours = precision_graph("int8", residual.path, calibration, SIGNED)
    theirs = precision_graph("int8", residual.path, calibration, SIGNED, placement=TENSORRT)
    assert ours.name == "residual-int8-int8-0123456789abcdef.onnx"  # as before placements existed
    assert theirs.name == "residual-int8-int8-tensorrt-0123456789abcdef.onnx"
    with pytest.raises(ConfigError, match="^unknown int8 Q/DQ placement 'tpu'; choose from onnxruntime, tensorrt$"):
        precision_graph("int8", residual.path, calibration, SIGNED, placement="tpu")


def test_the_tensorrt_backend_parses_the_tensorrt_placement(residual) -> None:
    from sut.backends.base import ModelSpec
    from sut.trt_plan import INT8_QDQ_GRAPH
    from sut.trt_prepare import onnx_graph_for

    calibration = SimpleNamespace(activation_amax=residual.amax, weight_scales=residual.scales,
                                  cache_hash="0123456789abcdef0123")
    spec = ModelSpec("resnet18", "int8")
    graph = onnx_graph_for(spec, INT8_QDQ_GRAPH, residual.path, calibration)
    assert graph.name == "residual-int8-int8-tensorrt-0123456789abcdef.onnx"


def test_onnx_runtime_runs_the_tensorrt_placement_close_to_fp32(residual) -> None:
    def logits(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": residual.images})[0]

    reference = logits(residual.path)
    for placement in (ONNXRUNTIME, TENSORRT):
        out = residual.folder / f"run-{placement}.onnx"
        make_qdq_int8(residual.path, residual.amax, residual.scales, out, SIGNED, placement=placement)
        error = np.linalg.norm(logits(out) - reference) / np.linalg.norm(reference)
        assert error < 0.05, placement


# -- the accuracy gate on both placements -------------------------------------------------------


def test_tensorrt_placement_gates_as_well_as_the_current_one(tiny_request, monkeypatch) -> None:
    """resnet18 fine-tuned on digits at 64 px, calibrated and checked as the run's gate does,
    run by ONNX Runtime in TensorRT's signed encoding: leaving the residual Convs' outputs in
    float (one rounding fewer per block) agrees with FP32 at least as well."""
    import sut.backends.onnxruntime_backend as ort_backend
    from runs.config import resolve
    from runs.gating import run_gate
    from runs.runner import backend_options

    config = resolve(tiny_request(precision="int8", image_size=64, gate_samples=400, calibration_count=64))
    options = backend_options(config, {"int8_encoding": SIGNED, "int8_cpu_path": "auto"})
    current = run_gate(config, options)
    monkeypatch.setattr(ort_backend, "precision_graph", functools.partial(precision_graph, placement=TENSORRT))
    tensorrt = run_gate(config, options)
    assert current.passed and tensorrt.passed, (current.line(), tensorrt.line())
    ours, theirs = current.figures, tensorrt.figures
    assert theirs.samples == ours.samples > 300 and "64 px" in theirs.measured_on
    assert theirs.agreement >= ours.agreement, (current.line(), tensorrt.line())
    assert theirs.cosine >= ours.cosine - 1e-5, (current.line(), tensorrt.line())
