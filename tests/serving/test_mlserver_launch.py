"""The MLServer launcher and runtime: exact metadata, requests checked against it, and a
server that cannot start reported in one line within a bounded wait, its process gone."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from plumbing.errors import BackendError, ConfigError
from serving.mlserver_launch import ServedModel, free_port, main, start_mlserver, write_mlserver_folder
from sut.backends.base import ModelSpec
from tests.serving.conftest import IMAGE_SIZE, INSTANT_MODEL, MODEL, SPEC, needs_kserve


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_metadata_declares_what_the_runtime_takes(mlserver):
    assert get(f"http://{mlserver.http}/v2")["name"] == "mlserver"
    metadata = get(f"http://{mlserver.http}/v2/models/{MODEL}")
    assert metadata["platform"] == "deepgap-onnxruntime"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, IMAGE_SIZE, IMAGE_SIZE]}]
    assert metadata["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}]


def test_a_request_unlike_the_metadata_is_refused_with_a_message(mlserver):
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 16, 16], "data": [0.0] * 768}]}
    request = urllib.request.Request(f"http://{mlserver.http}/v2/models/{INSTANT_MODEL}/infer",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 400
    assert "takes input 'input' FP32 [-1,3,32,32], got FP32 [1, 3, 16, 16]" in info.value.read().decode()


def test_served_models_are_checked_before_anything_starts():
    with pytest.raises(ConfigError, match="runs fp32"):
        ServedModel(ModelSpec("resnet18", "fp16"))
    with pytest.raises(ConfigError, match="input datatype 'UINT8'"):
        ServedModel(SPEC, input_datatype="UINT8")  # only an instant model may declare what it cannot run


def test_a_model_that_fails_to_load_stops_the_server_with_one_line(tmp_path):
    needs_kserve()
    grpc, http = free_port(), free_port()
    folder = write_mlserver_folder(tmp_path, [ServedModel(SPEC, name="broken", instant=True)], grpc, http)
    settings = json.loads((folder / "broken" / "model-settings.json").read_text())
    settings["parameters"]["extra"]["input_datatype"] = "BOOL"  # the runtime's load() refuses it
    (folder / "broken" / "model-settings.json").write_text(json.dumps(settings))
    start = time.monotonic()
    with pytest.raises(BackendError, match=r"^mlserver (exited with code|was not ready within)") as info:
        start_mlserver(folder, ["broken"], grpc, http, ready_timeout_s=60)
    assert "ValueError: input_datatype 'BOOL': the network takes FP32 or FP16 (log: " in str(info.value)
    assert "\n" not in str(info.value) and "mlserver.log" in str(info.value)
    assert time.monotonic() - start < 60 + 15


def test_a_server_not_ready_in_time_is_stopped(tmp_path):
    needs_kserve()
    grpc, http = free_port(), free_port()
    folder = write_mlserver_folder(tmp_path, [ServedModel(SPEC, name=INSTANT_MODEL, instant=True)], grpc, http)
    with pytest.raises(BackendError, match=r"^mlserver was not ready within 0\.2 s \(waiting for instant\)"):
        start_mlserver(folder, [INSTANT_MODEL], grpc, http, ready_timeout_s=0.2)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{http}/v2", timeout=2)  # nothing left listening


def test_the_command_line_refuses_one_port_for_both(capsys):
    port = str(free_port())
    assert main(["--model", "resnet18", "--image-size", "32", "--instant", "--grpc-port", port,
                 "--http-port", port]) == 2
    assert capsys.readouterr().err.startswith("error: the gRPC and HTTP ports must differ")
