"""The Triton repository writer: config.pbtxt read back with Triton's own schema, the ONNX file
loads with the names it declares, refusals in one line, and batching from a real study."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from plumbing.errors import ConfigError, OutputError, StudyError
from serving.triton_repository import (DEFAULT_QUEUE_DELAY_US, read_config_pbtxt, triton_settings_from_study,
                                       write_triton_repository)

pytest.importorskip("tritonclient.grpc.model_config_pb2")

H200_STUDY = Path(__file__).resolve().parents[2] / "docs" / "studies" / "2026-11-26" / "h200"


def test_a_written_repository_reads_back_with_the_triton_schema_and_its_onnx_runs(tmp_path):
    import onnxruntime as ort

    model_dir = write_triton_repository(tmp_path / "repo", "resnet18", image_size=32, max_batch_size=64,
                                        preferred_batch_sizes=[32, 64], max_queue_delay_us=1500, instance_count=2,
                                        kind="KIND_CPU", notes=["from a test"])
    assert model_dir == tmp_path / "repo" / "resnet18"
    assert (model_dir / "config.pbtxt").read_text().startswith("# from a test\n")
    config = read_config_pbtxt(model_dir / "config.pbtxt")
    assert (config["name"], config["platform"], config["max_batch_size"]) == ("resnet18", "onnxruntime_onnx", 64)
    (tensor,) = config["input"]
    assert (tensor["name"], tensor["data_type"], [int(d) for d in tensor["dims"]]) == ("input", "TYPE_FP32", [3, 32, 32])
    (output,) = config["output"]
    assert (output["name"], [int(d) for d in output["dims"]]) == ("logits", [1000])
    assert config["dynamic_batching"]["preferred_batch_size"] == [32, 64]
    assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == 1500
    assert config["instance_group"] == [{"count": 2, "kind": "KIND_CPU"}]
    assert "optimization" not in config

    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [tensor["name"]]
    assert output["name"] in [o.name for o in session.get_outputs()]
    logits = session.run([output["name"]], {tensor["name"]: np.zeros((2, 3, 32, 32), np.float32)})[0]
    assert logits.shape == (2, 1000)


def test_fp16_runs_the_tensorrt_provider_in_fp16_on_gpu_instances(tmp_path):
    model_dir = write_triton_repository(tmp_path, "resnet18", "fp16", image_size=32, max_batch_size=8,
                                        name="resnet18-fp16")
    config = read_config_pbtxt(model_dir / "config.pbtxt")
    assert config["name"] == "resnet18-fp16" and config["instance_group"] == [{"count": 1, "kind": "KIND_GPU"}]
    (accelerator,) = config["optimization"]["execution_accelerators"]["gpu_execution_accelerator"]
    assert accelerator == {"name": "tensorrt", "parameters": {"precision_mode": "FP16"}}
    assert "preferred_batch_size" not in config["dynamic_batching"]


@pytest.mark.parametrize("kwargs, match", [
    ({"max_batch_size": 16, "preferred_batch_sizes": [8, 32]}, r"preferred batch size 32 is not within 1\.\.max_batch_size \(16\)"),
    ({"kind": "KIND_TPU"}, "instance kind 'KIND_TPU' is not one of KIND_GPU, KIND_CPU"),
    ({"precision": "int8"}, "precision 'int8'"),
    ({"precision": "fp16", "kind": "KIND_CPU"}, "needs KIND_GPU"),
    ({"max_batch_size": 0}, "max_batch_size must be an integer of at least 1"),
    ({"model": "vgg16"}, "unknown model 'vgg16'"),
    ({"onnx_path": "/nonexistent.onnx"}, "no such file"),
])
def test_bad_requests_are_refused_before_anything_is_written(tmp_path, kwargs, match):
    values = dict(model="resnet18", image_size=32)
    values.update(kwargs)
    with pytest.raises(ConfigError, match=match) as info:
        write_triton_repository(tmp_path / "repo", **values)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "repo").exists()


def test_an_existing_model_is_kept_unless_overwritten(tmp_path):
    write_triton_repository(tmp_path, "resnet18", image_size=32, max_batch_size=4)
    with pytest.raises(OutputError, match="already holds a model"):
        write_triton_repository(tmp_path, "resnet18", image_size=32, max_batch_size=8)
    model_dir = write_triton_repository(tmp_path, "resnet18", image_size=32, max_batch_size=8, overwrite=True)
    assert read_config_pbtxt(model_dir / "config.pbtxt")["max_batch_size"] == 8


def test_an_onnx_file_with_other_names_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, 32, 32])])
    onnx.save(helper.make_model(graph), tmp_path / "other.onnx")
    with pytest.raises(ConfigError, match=r"has inputs \['x'\] and outputs \['y'\]; config\.pbtxt names 'input'"):
        write_triton_repository(tmp_path / "repo", "resnet18", image_size=32, onnx_path=tmp_path / "other.onnx")


def test_a_config_triton_would_reject_fails_to_parse(tmp_path):
    (tmp_path / "config.pbtxt").write_text('name: "m"\nmax_batch_sise: 4\n')
    with pytest.raises(ConfigError, match="is not a Triton model config"):
        read_config_pbtxt(tmp_path / "config.pbtxt")


def test_settings_from_the_h200_study_are_its_knees_and_its_server_batch_timeout():
    settings = triton_settings_from_study(H200_STUDY, model="resnet18", precision="fp16")
    assert (settings.max_batch_size, settings.preferred_batch_sizes, settings.max_queue_delay_us) == (128, (128,), 2000)
    assert settings.backend == "torch"
    assert "Offline knee_90 of resnet18 fp16 torch: batch 128" in settings.sources["max_batch_size"]
    assert "Server SLO search (p99 <= 15.0 ms)" in settings.sources["max_queue_delay_microseconds"]
    assert triton_settings_from_study(H200_STUDY / "study.json", "resnet50", "fp32").max_batch_size == 64
    assert triton_settings_from_study(H200_STUDY, "resnet50", "fp32", knee="knee_95").max_batch_size == 128


def test_a_study_without_a_server_search_gets_the_default_delay(tmp_path):
    data = json.loads((H200_STUDY / "study.json").read_text())
    data["slo_searches"] = []
    (tmp_path / "study.json").write_text(json.dumps(data))
    settings = triton_settings_from_study(tmp_path, "resnet18", "fp32")
    assert (settings.max_batch_size, settings.max_queue_delay_us) == (64, DEFAULT_QUEUE_DELAY_US)
    assert "no Server SLO search" in settings.sources["max_queue_delay_microseconds"]


def test_a_study_of_several_groups_needs_a_choice():
    with pytest.raises(StudyError, match=r"4 Offline curves for one group; its curves: resnet18 fp16 torch, "):
        triton_settings_from_study(H200_STUDY)
    with pytest.raises(StudyError, match="no Offline curve for resnet101"):
        triton_settings_from_study(H200_STUDY, model="resnet101")


def test_settings_feed_the_writer(tmp_path):
    settings = triton_settings_from_study(H200_STUDY, "resnet18", "fp32")
    model_dir = write_triton_repository(tmp_path, "resnet18", image_size=32, max_batch_size=settings.max_batch_size,
                                        preferred_batch_sizes=settings.preferred_batch_sizes,
                                        max_queue_delay_us=settings.max_queue_delay_us, notes=settings.notes())
    text = (model_dir / "config.pbtxt").read_text()
    assert text.startswith("# max_batch_size: Offline knee_90 of resnet18 fp32 torch")
    assert read_config_pbtxt(model_dir / "config.pbtxt")["dynamic_batching"]["preferred_batch_size"] == [64]
