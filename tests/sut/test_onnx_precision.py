"""INT8 (Q/DQ) and fp16 ONNX graphs built from the fp32 export of a small ResNet-18 (32 px).

The scales come from a plain max calibration computed here, independently of the
calibration package: run the fp32 graph with every quantized tensor exposed as an output
and take max |x| per tensor, and max |w| / 127 per weight output channel.

Tests that run an INT8 graph through ONNX Runtime name the CPU path they exercise
(sut/cpu_isa.py): reduce-range and u8u8 are exact on any x86 CPU and run everywhere; the
full-range vnni path is exact only on a CPU with VNNI or AMX and is skipped elsewhere,
saying so (tests/sut/test_cpu_isa.py shows it saturating there).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from onnx import TensorProto, helper, numpy_helper, shape_inference  # noqa: E402

from plumbing.errors import BackendError, ConfigError  # noqa: E402
from sut.backends.base import ModelSpec  # noqa: E402
from sut.data import SyntheticDataset  # noqa: E402
from sut.cpu_isa import REDUCE_RANGE, U8U8, VNNI, Int8CpuPath  # noqa: E402
from sut.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx  # noqa: E402
from tests.sut.test_cpu_isa import exact_cpu_path  # noqa: E402
from sut.onnx_fp16 import FP16_MAX, make_fp16  # noqa: E402
from sut.onnx_graph import (  # noqa: E402
    ENCODING_KEY, PRECISION_KEY, QUANTIZATION_KEY, WEIGHT_RANGE_KEY, count_ops, graph_precision,
)
from sut.onnx_precision import (  # noqa: E402
    INT8_MAX,
    REDUCED_WEIGHT_MAX,
    QDQ_SCHEME,
    SIGNED,
    UNSIGNED,
    make_qdq_int8,
    precision_graph,
)
from sut.qdq_placement import quantization_targets  # noqa: E402

IMAGE_SIZE = 32
CALIBRATION_IMAGES = 16
EVAL_IMAGES = 32


# -- helpers -------------------------------------------------------------------------------


def _conv_gemm(model: Any) -> list[Any]:
    return [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]


def _output_channel_axis(node: Any) -> int:
    if node.op_type == "Conv":
        return 0
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return 0 if trans_b else 1


def _max_calibration(
    model_path: Path, images: np.ndarray
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Activation amax per tensor the graph quantizes, per-channel weight scales per weight."""
    model = onnx.load(str(model_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = _conv_gemm(model)
    tensors = list(quantization_targets(model_path).tensors)
    inferred = shape_inference.infer_shapes(model)
    infos = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    existing = {o.name for o in model.graph.output}
    model.graph.output.extend(infos[t] for t in tensors if t not in existing)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(tensors, {session.get_inputs()[0].name: images})
    amax = {t: float(np.abs(x).max()) for t, x in zip(tensors, outputs)}
    scales = {}
    for node in nodes:
        weight = inits[node.input[1]]
        axis = _output_channel_axis(node)
        per_channel = np.abs(np.moveaxis(weight, axis, 0)).reshape(weight.shape[axis], -1)
        scales[node.input[1]] = per_channel.max(axis=1) / 127.0
    return amax, scales


def _logits(model_path: Path, images: np.ndarray, cpu_path: Int8CpuPath | None = None) -> np.ndarray:
    return _session(model_path, cpu_path).run([OUTPUT_NAME], {INPUT_NAME: images})[0]


def _session(model_path: Path, cpu_path: Int8CpuPath | None = None) -> Any:
    """A CPU session, with `cpu_path`'s session options (u8u8's precision mode)."""
    options = ort.SessionOptions()
    for key, value in (cpu_path.session_config if cpu_path is not None else {}).items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


# Every path, each run where ONNX Runtime computes it exactly on this CPU.
CPU_PATHS = (REDUCE_RANGE, U8U8, VNNI)


def _int8_graph(fp32_path: Path, calibration, out: Path, encoding: str, path: Int8CpuPath) -> Path:
    amax, scales = calibration
    return make_qdq_int8(fp32_path, amax, scales, out, encoding, path.weight_max)


def _agreement(reference: np.ndarray, other: np.ndarray) -> tuple[float, float, float]:
    """(top-1 agreement, mean cosine similarity, share of reference top-1 in other's top-5)."""
    top1 = float(np.mean(reference.argmax(1) == other.argmax(1)))
    cosine = np.sum(reference * other, axis=1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(other, axis=1)
    )
    top5 = np.argsort(other, axis=1)[:, -5:]
    in_top5 = float(np.mean([r in t for r, t in zip(reference.argmax(1), top5)]))
    return top1, float(np.mean(cosine)), in_top5


def _producers(model: Any) -> dict[str, Any]:
    return {out: node for node in model.graph.node for out in node.output}


def _readers(model: Any) -> dict[str, list[Any]]:
    readers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _conv_results(model: Any) -> set[str]:
    """Each Conv's result as the graph quantizes it: after a Relu that alone reads it."""
    readers = _readers(model)
    results = set()
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        users = readers.get(conv.output[0], [])
        alone_relu = len(users) == 1 and users[0].op_type == "Relu"
        results.add(users[0].output[0] if alone_relu else conv.output[0])
    return results


def _tiny_model(
    nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any], opset: int = 17
) -> Any:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fp32_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("precision-cache")
    return export_onnx(ModelSpec("resnet18", "fp32", image_size=IMAGE_SIZE), cache_dir=cache)


@pytest.fixture(scope="module")
def calibration(fp32_path: Path) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    images = SyntheticDataset(count=CALIBRATION_IMAGES, image_size=IMAGE_SIZE).load(
        np.arange(CALIBRATION_IMAGES)
    )
    return _max_calibration(fp32_path, images)


@pytest.fixture(scope="module")
def int8_path(fp32_path: Path, calibration, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TensorRT's encoding (every activation int8, zero point 0), the default."""
    amax, scales = calibration
    return make_qdq_int8(fp32_path, amax, scales, tmp_path_factory.mktemp("int8") / "r18.onnx")


@pytest.fixture(scope="module")
def unsigned_path(fp32_path: Path, calibration, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ONNX Runtime's encoding (every activation uint8)."""
    amax, scales = calibration
    return make_qdq_int8(fp32_path, amax, scales, tmp_path_factory.mktemp("int8") / "r18-u8.onnx", UNSIGNED)


@pytest.fixture(scope="module")
def eval_images() -> np.ndarray:
    # A different seed from the calibration images: agreement is measured on unseen data.
    return SyntheticDataset(count=EVAL_IMAGES, image_size=IMAGE_SIZE, seed=99).load(
        np.arange(EVAL_IMAGES)
    )


@pytest.fixture(scope="module")
def fp32_logits(fp32_path: Path, eval_images: np.ndarray) -> np.ndarray:
    return _logits(fp32_path, eval_images)


# -- INT8: graph structure -----------------------------------------------------------------


def test_qdq_graph_passes_checker_and_records_precision(fp32_path: Path, int8_path: Path) -> None:
    onnx.checker.check_model(str(int8_path), full_check=True)
    model = onnx.load(str(int8_path))
    props = {p.key: p.value for p in model.metadata_props}
    assert props[PRECISION_KEY] == "int8"
    assert props[QUANTIZATION_KEY] == QDQ_SCHEME
    assert props[ENCODING_KEY] == SIGNED
    assert graph_precision(int8_path) == "int8"
    assert graph_precision(fp32_path) == "fp32"
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    # Weights are stored as int8: the file shrinks to about a quarter.
    assert int8_path.stat().st_size < 0.3 * fp32_path.stat().st_size


def test_quantization_targets_of_resnet18(fp32_path: Path) -> None:
    fp32 = onnx.load(str(fp32_path))
    inputs = {n.input[0] for n in _conv_gemm(fp32)}
    shared = [t for t, k in Counter(n.input[0] for n in _conv_gemm(fp32)).items() if k > 1]
    assert shared, "resnet18's downsample blocks should feed one tensor to two convs"
    targets = quantization_targets(fp32_path)
    assert set(targets.activations) == inputs
    results = _conv_results(fp32)
    assert set(targets.outputs) == results - inputs
    producers = _producers(fp32)
    # The stem's Relu (read by MaxPool), each block's last Conv and each downsample Conv
    # (read by the residual Add) are quantized there; the other Relus feed a Conv anyway.
    assert Counter(producers[t].op_type for t in targets.outputs) == {"Relu": 1, "Conv": 8 + 3}
    assert len(targets.tensors) == len(set(targets.tensors))


@pytest.mark.parametrize("encoding", [SIGNED, UNSIGNED])
def test_every_reader_of_a_quantized_tensor_reads_it_dequantized(
    fp32_path: Path, int8_path: Path, unsigned_path: Path, calibration, encoding: str
) -> None:
    model = onnx.load(str(int8_path if encoding == SIGNED else unsigned_path))
    targets = quantization_targets(fp32_path)
    producers, readers = _producers(model), _readers(model)
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantize) == len(targets.tensors)  # one pair per tensor, however many readers
    for tensor in targets.tensors:
        if tensor == INPUT_NAME:
            (q,) = readers[tensor]
            (dq,) = readers[q.output[0]]
        else:
            dq = producers[tensor]
            assert dq.op_type == "DequantizeLinear", tensor
            q = producers[dq.input[0]]
            # The producer writes a float tensor that only the Q reads.
            assert [n.op_type for n in readers[q.input[0]]] == ["QuantizeLinear"], tensor
        assert q.op_type == "QuantizeLinear" and dq.op_type == "DequantizeLinear"
        assert list(q.input[1:]) == list(dq.input[1:])  # one scale and zero point per pair
    # Every Conv is followed by a Q, directly or through the Relu that alone reads it:
    # the DQ -> Conv (-> Relu) -> Q pattern integer kernels are fused from.
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        (user,) = readers[conv.output[0]]
        if user.op_type == "Relu":
            (user,) = readers[user.output[0]]
        assert user.op_type == "QuantizeLinear", conv.name
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            assert not set(node.input) & {q.input[0] for q in quantize}, node.name

    amax, _ = calibration
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    relu_outputs = {n.output[0] for n in onnx.load(str(fp32_path)).graph.node if n.op_type == "Relu"}
    for q in quantize:
        dq = readers[q.output[0]][0]
        tensor = INPUT_NAME if q.input[0] == INPUT_NAME else dq.output[0]
        scale, zero = inits[q.input[1]], inits[q.input[2]]
        assert scale.shape == () and scale.dtype == np.float32 and zero.shape == ()
        if encoding == SIGNED:
            assert zero.dtype == np.int8 and zero == 0, tensor
            assert scale == pytest.approx(amax[tensor] / 127, rel=1e-6), tensor
        elif tensor in relu_outputs:  # non-negative: the whole uint8 range from 0
            assert zero.dtype == np.uint8 and zero == 0, tensor
            assert scale == pytest.approx(amax[tensor] / 255, rel=1e-6), tensor
        else:  # signed: int8's grid shifted by 128
            assert zero.dtype == np.uint8 and zero == 128, tensor
            assert scale == pytest.approx(amax[tensor] / 127, rel=1e-6), tensor

    names = [n.name for n in model.graph.node]
    assert len(names) == len(set(names)) and all(names)
    outputs = [o for n in model.graph.node for o in n.output]
    assert len(outputs) == len(set(outputs))


def test_unknown_encoding(fp32_path: Path, calibration, tmp_path: Path) -> None:
    amax, scales = calibration
    with pytest.raises(ConfigError, match="unknown int8 encoding 'uint4'"):
        make_qdq_int8(fp32_path, amax, scales, tmp_path / "x.onnx", "uint4")


def test_reduced_weight_range_keeps_the_threshold_at_seven_bits(
    fp32_path: Path, calibration, int8_path: Path, tmp_path: Path
) -> None:
    """Reduce range maps each channel's calibrated threshold to 63 instead of 127: scales
    x 127 / 63, every weight inside [-63, 63], the range recorded in the graph."""
    amax, scales = calibration
    path = make_qdq_int8(fp32_path, amax, scales, tmp_path / "w63.onnx", UNSIGNED, REDUCED_WEIGHT_MAX)
    model = onnx.load(str(path))
    assert {p.key: p.value for p in model.metadata_props}[WEIGHT_RANGE_KEY] == "[-63, 63]"
    assert {p.key: p.value for p in onnx.load(str(int8_path)).metadata_props}[WEIGHT_RANGE_KEY] == "[-127, 127]"
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = _producers(model)
    for original, node in zip(_conv_gemm(onnx.load(str(fp32_path))), _conv_gemm(model), strict=True):
        dq = producers[node.input[1]]
        # Max calibration: each channel's largest |w| lands on the range's end.
        assert np.abs(inits[dq.input[0]].astype(np.int32)).max() == REDUCED_WEIGHT_MAX
        np.testing.assert_allclose(inits[dq.input[1]], scales[original.input[1]] * INT8_MAX / REDUCED_WEIGHT_MAX,
                                   rtol=1e-6)
    with pytest.raises(ConfigError, match=r"unknown int8 weight range \+-100"):
        make_qdq_int8(fp32_path, amax, scales, tmp_path / "x.onnx", UNSIGNED, 100)


def test_precision_graph_names_encoding_and_weight_range(fp32_path: Path, calibration) -> None:
    amax, scales = calibration
    cache = type("Calibration", (), {"activation_amax": amax, "weight_scales": scales, "cache_hash": "ab" * 32})()
    full = precision_graph("int8", fp32_path, cache, UNSIGNED)
    reduced = precision_graph("int8", fp32_path, cache, UNSIGNED, REDUCED_WEIGHT_MAX)
    assert full.name == f"{fp32_path.stem}-int8-uint8-{'ab' * 8}.onnx"
    assert reduced.name == f"{fp32_path.stem}-int8-uint8-w63-{'ab' * 8}.onnx"
    assert full.read_bytes() != reduced.read_bytes()


def test_weights_are_int8_with_per_channel_dq(fp32_path: Path, int8_path: Path) -> None:
    model = onnx.load(str(int8_path))
    inits = {i.name: i for i in model.graph.initializer}
    producers = _producers(model)
    for node in _conv_gemm(model):
        dq = producers[node.input[1]]
        assert dq.op_type == "DequantizeLinear"
        weight = inits[dq.input[0]]
        assert weight.data_type == TensorProto.INT8
        axis = _output_channel_axis(node)
        assert helper.get_attribute_value(next(a for a in dq.attribute if a.name == "axis")) == axis
        scale = numpy_helper.to_array(inits[dq.input[1]])
        zero = numpy_helper.to_array(inits[dq.input[2]])
        channels = weight.dims[axis]
        assert scale.dtype == np.float32 and scale.shape == (channels,) and np.all(scale > 0)
        assert zero.dtype == np.int8 and zero.shape == (channels,) and not zero.any()
        q = numpy_helper.to_array(weight)
        assert np.abs(q.astype(np.int32)).max() <= 127
        if len(node.input) > 2:
            assert inits[node.input[2]].data_type == TensorProto.FLOAT  # biases stay fp32
    # No fp32 weight tensor survives: the only float initializers left are biases and scales.
    float_dims = [len(i.dims) for i in model.graph.initializer if i.data_type == TensorProto.FLOAT]
    assert max(float_dims) <= 1
    assert set(quantization_targets(fp32_path).weights.values()) == {0}  # Conv and transB=1


def test_count_ops(int8_path: Path, fp32_path: Path) -> None:
    fp32_ops = count_ops(fp32_path)
    int8_ops = count_ops(int8_path)
    layers = fp32_ops["Conv"] + fp32_ops["Gemm"]
    assert int8_ops["DequantizeLinear"] == int8_ops["QuantizeLinear"] + layers
    assert {k: v for k, v in int8_ops.items() if "Linear" not in k} == fp32_ops
    assert list(int8_ops) == sorted(int8_ops)


# -- INT8: running it ----------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 5])
def test_qdq_graph_runs_with_dynamic_batch(
    int8_path: Path, eval_images: np.ndarray, batch: int
) -> None:
    logits = _logits(int8_path, eval_images[:batch])
    assert logits.shape == (batch, 1000) and logits.dtype == np.float32
    assert np.isfinite(logits).all()


@pytest.mark.parametrize("cpu_path", CPU_PATHS)
@pytest.mark.parametrize("encoding", [SIGNED, UNSIGNED])
def test_int8_logits_agree_with_fp32(
    fp32_path: Path, calibration, fp32_logits: np.ndarray, eval_images: np.ndarray,
    record_property: Any, encoding: str, cpu_path: str, tmp_path: Path,
) -> None:
    path = exact_cpu_path(cpu_path)
    graph = _int8_graph(fp32_path, calibration, tmp_path / "r18.onnx", encoding, path)
    top1, cosine, in_top5 = _agreement(fp32_logits, _logits(graph, eval_images, path))
    record_property("int8_top1_agreement", top1)
    record_property("int8_cosine", cosine)
    record_property("int8_fp32_top1_in_int8_top5", in_top5)
    logging.getLogger(__name__).info(
        "int8 (%s, %s) vs fp32: top-1 %.3f cosine %.4f top-5 %.3f", encoding, cpu_path, top1, cosine, in_top5
    )
    assert cosine > 0.95
    # Seeded weights leave many near-ties among 1000 logits, so top-1 flips with noise a
    # trained network would not notice; the fp32 winner must stay among the top 5.
    assert in_top5 >= 0.9
    assert top1 >= 0.5


def test_wrong_scales_break_agreement(
    fp32_path: Path, calibration, fp32_logits: np.ndarray, eval_images: np.ndarray, tmp_path: Path,
) -> None:
    amax, scales = calibration
    wrong = {name: value * 1000 for name, value in amax.items()}
    broken = make_qdq_int8(fp32_path, wrong, scales, tmp_path / "broken.onnx")
    top1, cosine, _ = _agreement(fp32_logits, _logits(broken, eval_images))
    # Activations collapse onto a handful of int8 steps: what the accuracy gate must catch.
    assert cosine < 0.5
    assert top1 <= 0.2


# -- INT8: errors and edge cases -----------------------------------------------------------


def test_missing_amax_names_the_tensor(fp32_path: Path, calibration, tmp_path: Path) -> None:
    amax, scales = calibration
    partial = dict(amax)
    del partial[INPUT_NAME]
    out = tmp_path / "never.onnx"
    with pytest.raises(ConfigError, match=f"'{INPUT_NAME}'"):
        make_qdq_int8(fp32_path, partial, scales, out)
    assert not out.exists()


@pytest.mark.parametrize("bad", [float("nan"), 0.0, -1.0, float("inf")])
def test_unusable_amax_is_refused(fp32_path: Path, calibration, tmp_path: Path, bad: float) -> None:
    amax, scales = calibration
    with pytest.raises(ConfigError, match="must be positive"):
        make_qdq_int8(fp32_path, {**amax, INPUT_NAME: bad}, scales, tmp_path / "x.onnx")


def test_weight_scale_errors(fp32_path: Path, calibration, tmp_path: Path) -> None:
    amax, scales = calibration
    weight = next(iter(scales))
    missing = {k: v for k, v in scales.items() if k != weight}
    with pytest.raises(ConfigError, match="no weight scales"):
        make_qdq_int8(fp32_path, amax, missing, tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match="output channels"):
        make_qdq_int8(fp32_path, amax, {**scales, weight: scales[weight][:-1]}, tmp_path / "x.onnx")
    nan = scales[weight].copy()
    nan[0] = np.nan
    with pytest.raises(ConfigError, match="finite"):
        make_qdq_int8(fp32_path, amax, {**scales, weight: nan}, tmp_path / "x.onnx")


def test_refuses_to_requantize(int8_path: Path, calibration, tmp_path: Path) -> None:
    amax, scales = calibration
    with pytest.raises(ConfigError, match="already a int8 graph"):
        make_qdq_int8(int8_path, amax, scales, tmp_path / "x.onnx")


@pytest.mark.parametrize("cpu_path", CPU_PATHS)
def test_gemm_without_transb_and_old_opset(tmp_path: Path, cpu_path: str) -> None:
    """Gemm B of shape (K, N) is quantized along axis 1, and an opset 11 model is
    converted to 13 (per-channel DequantizeLinear needs it)."""
    path = exact_cpu_path(cpu_path)
    rng = np.random.default_rng(0)
    conv_w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    gemm_b = rng.normal(size=(4 * 4 * 4, 6)).astype(np.float32)  # (K, N)
    model = _tiny_model(
        [
            helper.make_node("Conv", ["x", "cw"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("Flatten", ["c"], ["f"], name="flatten"),
            helper.make_node("Gemm", ["f", "gb"], ["y"], name="gemm"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6])],
        [numpy_helper.from_array(conv_w, "cw"), numpy_helper.from_array(gemm_b, "gb")],
        opset=11,
    )
    src = tmp_path / "tiny.onnx"
    onnx.save(model, str(src))
    targets = quantization_targets(src)
    assert targets.weights == {"cw": 0, "gb": 1}

    x = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    amax, scales = _max_calibration(src, x)
    out = make_qdq_int8(src, amax, scales, tmp_path / "tiny-int8.onnx", weight_max=path.weight_max)
    quantized = onnx.load(str(out))
    assert [o.version for o in quantized.opset_import if o.domain in ("", "ai.onnx")] == [13]
    dq = {n.output[0]: n for n in quantized.graph.node if n.op_type == "DequantizeLinear"}
    gemm = next(n for n in quantized.graph.node if n.op_type == "Gemm")
    assert dq[gemm.input[1]].attribute[0].i == 1
    got, want = _session(out, path).run(None, {"x": x})[0], _session(src).run(None, {"x": x})[0]
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.05


def test_rewrites_in_place_atomically(fp32_path: Path, calibration, tmp_path: Path) -> None:
    amax, scales = calibration
    out = tmp_path / "model.onnx"
    out.write_bytes(b"stale")
    make_qdq_int8(fp32_path, amax, scales, out)
    assert graph_precision(out) == "int8"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temp files left


# -- fp16 ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fp16_path(fp32_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fp16(fp32_path, tmp_path_factory.mktemp("fp16") / "r18.onnx")


def test_fp16_graph_structure(fp16_path: Path, fp32_path: Path) -> None:
    onnx.checker.check_model(str(fp16_path), full_check=True)
    model = onnx.load(str(fp16_path))
    assert graph_precision(fp16_path) == "fp16"
    assert {i.data_type for i in model.graph.initializer} == {TensorProto.FLOAT16}
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [TensorProto.FLOAT]
    # The dynamic batch dimension survives.
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    first, last = model.graph.node[0], model.graph.node[-1]
    assert first.op_type == "Cast" and first.input[0] == INPUT_NAME
    assert last.op_type == "Cast" and last.output[0] == OUTPUT_NAME
    assert count_ops(fp16_path) == {**count_ops(fp32_path), "Cast": 2}
    assert fp16_path.stat().st_size < 0.6 * fp32_path.stat().st_size


def test_fp16_logits_close_to_fp32(
    fp16_path: Path, fp32_logits: np.ndarray, eval_images: np.ndarray, record_property: Any
) -> None:
    logits = _logits(fp16_path, eval_images)
    assert logits.dtype == np.float32
    relative = float(np.linalg.norm(logits - fp32_logits) / np.linalg.norm(fp32_logits))
    record_property("fp16_relative_error", relative)
    assert relative < 1e-2


def test_fp16_with_fp16_io(
    fp32_path: Path, fp32_logits: np.ndarray, eval_images: np.ndarray, tmp_path: Path
) -> None:
    path = make_fp16(fp32_path, tmp_path / "io16.onnx", keep_io_fp32=False)
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert "Cast" not in count_ops(path)
    logits = _logits(path, eval_images[:5].astype(np.float16))
    assert logits.dtype == np.float16
    reference = fp32_logits[:5]
    assert np.linalg.norm(logits.astype(np.float32) - reference) / np.linalg.norm(reference) < 1e-2


def test_fp16_clips_out_of_range_initializers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = _tiny_model(
        [helper.make_node("Mul", ["x", "k"], ["y"], name="mul")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(np.array([1e6, -1e6, 0.5], np.float32), "k")],
    )
    src = tmp_path / "big.onnx"
    onnx.save(model, str(src))
    with caplog.at_level(logging.WARNING, logger="sut.onnx_precision"):
        out = make_fp16(src, tmp_path / "big16.onnx")
    assert "2 initializer values" in caplog.text
    k = numpy_helper.to_array(onnx.load(str(out)).graph.initializer[0])
    assert k.dtype == np.float16 and list(k) == [FP16_MAX, -FP16_MAX, 0.5]


def test_fp16_refuses_unknown_ops(tmp_path: Path) -> None:
    model = _tiny_model(
        [helper.make_node("Resize", ["x", "", "s"], ["y"], name="resize")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")],
    )
    src = tmp_path / "resize.onnx"
    onnx.save(model, str(src))
    with pytest.raises(BackendError, match="Resize"):
        make_fp16(src, tmp_path / "resize16.onnx")


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        make_fp16(tmp_path / "absent.onnx", tmp_path / "out.onnx")


def _optimized_ops(path: Path, tmp_path: Path) -> Counter:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / f"{path.stem}-optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


def test_onnx_runtime_runs_the_unsigned_graph_as_integer_kernels(
    fp32_path: Path, int8_path: Path, unsigned_path: Path, calibration, tmp_path: Path
) -> None:
    """uint8 activations let ONNX Runtime fold every Relu into its QuantizeLinear and fuse
    every convolution and residual Add into integer kernels. Symmetric int8 (TensorRT's
    encoding) keeps the Relus in fp32 and with them most convolutions: slower than fp32 on
    the CPU (BENCHMARKS.md)."""
    convs, adds = count_ops(fp32_path)["Conv"], count_ops(fp32_path)["Add"]
    unsigned = _optimized_ops(unsigned_path, tmp_path)
    assert unsigned["QLinearConv"] == convs and unsigned["Conv"] == 0, unsigned
    # Only the last block's Add and Relu stay float: they feed the pooling before the
    # classifier, which is quantized after the pooling.
    assert unsigned["QLinearAdd"] == adds - 1 and unsigned["Relu"] == 1, unsigned
    signed = _optimized_ops(int8_path, tmp_path)
    assert signed["Relu"] > 0 and signed["QLinearConv"] < convs, signed
    # Reduce range changes only the weights' values: the same integer kernels.
    reduced = make_qdq_int8(fp32_path, *calibration, tmp_path / "w63.onnx", UNSIGNED, REDUCED_WEIGHT_MAX)
    assert _optimized_ops(reduced, tmp_path) == unsigned


def test_u8u8_path_turns_every_integer_convolutions_weights_unsigned(
    unsigned_path: Path, tmp_path: Path
) -> None:
    """u8u8 relies on ONNX Runtime's session.x64quantprecision rewriting the int8 weights
    of each QLinearConv (and QGemm) to uint8 for its U8U8 kernels: check it does, in the
    installed version, for this graph."""
    path = exact_cpu_path(U8U8)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "u8u8-optimized.onnx")
    for key, value in path.session_config.items():
        options.add_session_config_entry(key, value)
    ort.InferenceSession(str(unsigned_path), options, providers=["CPUExecutionProvider"])
    model = onnx.load(options.optimized_model_filepath)
    types = {i.name: i.data_type for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "QLinearConv"]
    assert convs and {types[n.input[3]] for n in convs} == {TensorProto.UINT8}
