"""The bare instant gRPC server (serving/instant_grpc.py), the client-ceiling target: a real
run through LoadGen against it, its refusal of requests unlike its metadata, and a taken
port refused in one line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from runs.config import CliRequest, resolve
from runs.runner import execute
from serving.instant_grpc import InstantModel
from serving.mlserver_launch import free_port

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0


def start_instant(port: int, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "serving.instant_grpc", "--port", str(port), *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def instant_server():
    pytest.importorskip("tritonclient.grpc")
    port = free_port()
    proc = start_instant(port, "--model", "resnet18", "--image-size", "32")
    line = proc.stdout.readline()  # bounded: the process prints once listening, or exits
    deadline = time.monotonic() + START_TIMEOUT_S
    while not line.startswith("serving") and proc.poll() is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
    assert line.startswith("serving"), (line, proc.stderr.read() if proc.poll() is not None else "")
    yield port
    proc.terminate()
    proc.wait(timeout=30)


def test_a_run_against_it_is_valid_and_every_sample_answered(instant_server, tmp_path):
    request = CliRequest(endpoint=f"127.0.0.1:{instant_server}", output=tmp_path, model="resnet18", image_size=32,
                         dataset_count=64, scenario="Offline", max_batch=4, in_flight=4, min_duration_ms=500,
                         min_query_count=32)
    outcome = execute(resolve(request), show_progress=False)
    assert outcome.summary is not None and outcome.summary.result_valid, outcome.summary
    backend = outcome.result["backend"]
    assert backend["server"]["name"] == "deepgap-instant"
    assert outcome.result["harness"]["samples_failed"] == 0


def test_a_second_server_on_a_taken_port_is_one_line(instant_server):
    proc = start_instant(instant_server, "--model", "resnet18")
    _, err = proc.communicate(timeout=START_TIMEOUT_S)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{instant_server}: the port is taken "
                                        "(choose another --port)"]


def infer_request(name: str = "resnet18", datatype: str = "FP32", shape=(2, 3, 32, 32), raw: int | None = None):
    tensor = SimpleNamespace(name="input", datatype=datatype, shape=list(shape))
    size = 2 * 3 * 32 * 32 * 4 if raw is None else raw
    return SimpleNamespace(model_name=name, inputs=[tensor], raw_input_contents=[bytes(size)])


@pytest.mark.parametrize("request_args, words", [
    ({"name": "other"}, "no model 'other'"),
    ({"datatype": "FP16"}, "takes FP32 [-1, 3, 32, 32], got FP16"),
    ({"shape": (2, 3, 64, 64)}, "got FP32 [2, 3, 64, 64]"),
    ({"raw": 10}, "raw contents do not hold"),
])
def test_a_request_unlike_the_metadata_is_refused(request_args, words):
    model = InstantModel("resnet18", 32, 1000, "FP32")
    assert model.refusal(infer_request()) is None
    assert words in model.refusal(infer_request(**request_args))
    assert len(model.zeros(3)) == 3 * 1000 * 4
