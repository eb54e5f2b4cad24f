"""Statistics of resnet18's real FP32 ONNX graph (32 px, 16 calibration images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.algorithms import weight_scales_per_channel
from calibration.collect import CalibrationStats, collect_statistics
from calibration.subset import CalibrationSubset, synthetic_subset
from plumbing.errors import BackendError, ConfigError
from sut.backends.base import ModelSpec
from sut.onnx_export import INPUT_NAME, export_onnx
from sut.qdq_placement import targets_of

SPEC = ModelSpec("resnet18", "fp32", image_size=32)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The session's cache folder (tests/conftest.py): other tests reuse this export.
    return export_onnx(SPEC, tmp_path_factory.getbasetemp() / "cache")


@pytest.fixture(scope="module")
def subset() -> CalibrationSubset:
    return synthetic_subset(count=16, image_size=SPEC.image_size)


@pytest.fixture(scope="module")
def by_max(onnx_file: Path, subset: CalibrationSubset) -> CalibrationStats:
    return collect_statistics(onnx_file, subset, "max", batch_size=6)


def test_every_conv_and_gemm_input_and_weight_is_calibrated(
    onnx_file: Path, by_max: CalibrationStats
) -> None:
    model = onnx.load(str(onnx_file))
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    nodes = [node for node in model.graph.node if node.op_type in ("Conv", "Gemm")]
    assert len(nodes) == 21
    for node in nodes:
        assert by_max.activations[node.input[0]] > 0, node.name
        weight = initializers[node.input[1]]
        scales = by_max.weights[node.input[1]]
        assert scales.axis == 0
        assert scales.scales.shape == (weight.shape[0],), node.name
        np.testing.assert_array_equal(scales.scales, weight_scales_per_channel(weight, 0))
    # Exactly the tensors the Q/DQ graph quantizes: Conv/Gemm inputs (downsample
    # convolutions share a block's input) and each Conv's result, after its Relu if any.
    targets = targets_of(model.graph, "resnet18")
    assert set(by_max.activations) == set(targets.tensors)
    assert len(targets.outputs) == 12 and all(by_max.activations[t] > 0 for t in targets.outputs)
    assert by_max.samples == 16


def test_max_of_the_graph_input_is_the_largest_pixel(
    subset: CalibrationSubset, by_max: CalibrationStats
) -> None:
    pixels = subset.load(slice(None))
    assert by_max.activations[INPUT_NAME] == float(np.abs(pixels).max())
    assert by_max.activation_max == by_max.activations


@pytest.mark.parametrize("algorithm", ["percentile", "entropy"])
def test_histogram_algorithms_stay_within_the_observed_range(
    onnx_file: Path, subset: CalibrationSubset, by_max: CalibrationStats, algorithm: str
) -> None:
    stats = collect_statistics(onnx_file, subset, algorithm, percentile=99.9, batch_size=16)
    # The first pass sees the same values whatever the batch size.
    assert stats.activation_max == pytest.approx(by_max.activations, rel=1e-6)
    assert set(stats.activations) == set(by_max.activations)
    for name, amax in stats.activations.items():
        assert 0 < amax <= stats.activation_max[name] * (1 + 1e-9), name
    # Post-ReLU activations have long tails: both algorithms clip some of them.
    assert any(amax < stats.activation_max[name] for name, amax in stats.activations.items())


def test_unknown_algorithm(onnx_file: Path, subset: CalibrationSubset) -> None:
    with pytest.raises(ConfigError, match="unknown calibration algorithm"):
        collect_statistics(onnx_file, subset, "mse")


# -- hand-made graphs ---------------------------------------------------------------------


def _gemm_model(trans_b: int, weight_as_input: bool = False) -> onnx.ModelProto:
    weight = np.arange(12, dtype=np.float32).reshape((3, 4) if trans_b else (4, 3))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])]
    initializers = [numpy_helper.from_array(weight, "w")]
    if weight_as_input:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, list(weight.shape)))
        initializers = []
    node = helper.make_node("Gemm", ["x", "w"], ["y"], transB=trans_b)
    graph = helper.make_graph(
        [node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        initializer=initializers,
    )
    # A fixed opset and IR version: the installed onnx's defaults can be newer than the
    # installed onnxruntime reads (onnx 1.23 writes IR 14, onnxruntime 1.30 reads up to 13).
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("trans_b, axis", [(1, 0), (0, 1)])
def test_gemm_output_channel_axis_follows_trans_b(
    trans_b: int, axis: int, tmp_path: Path, subset: CalibrationSubset
) -> None:
    path = tmp_path / "gemm.onnx"
    onnx.save(_gemm_model(trans_b), str(path))
    flat = synthetic_subset(count=2, image_size=2)  # 3x2x2 = 12 values; Gemm reads 4
    stats = collect_statistics(path, _FirstFour(flat), "max")
    assert stats.weights["w"].axis == axis
    assert stats.weights["w"].scales.shape == (3,)


class _FirstFour:
    """A subset whose images are flattened to the Gemm's 4 inputs."""

    def __init__(self, subset: CalibrationSubset) -> None:
        self.subset, self.count, self.description = subset, subset.count, "first four values"

    def batches(self, batch_size: int):
        for batch in self.subset.batches(batch_size):
            yield batch.reshape(len(batch), -1)[:, :4]


def test_weight_that_is_not_an_initializer(tmp_path: Path, subset: CalibrationSubset) -> None:
    path = tmp_path / "gemm.onnx"
    onnx.save(_gemm_model(1, weight_as_input=True), str(path))
    with pytest.raises(BackendError, match="no weight initializer"):
        collect_statistics(path, subset, "max")


def test_unreadable_onnx_file(tmp_path: Path, subset: CalibrationSubset) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(BackendError, match="cannot load"):
        collect_statistics(broken, subset, "max")
