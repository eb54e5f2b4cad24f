"""Runs, studies and plans against a real MLServer (tests/serving/conftest.py), as a user
makes them: `--endpoint HOST:PORT` through the runner and the CLI, the saved result naming
the endpoint and its server, one-line refusals, a server that dies mid-run failing the run
with its count, the server's power from Prometheus metrics, a study and a capacity plan in
replicas, and `deepgap export-triton` read back."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from plumbing.errors import ConfigError, RunFailed
from reports.capacity import PlanRequest, make_plan
from reports.constraints import parse_slo
from reports.refdata import load_prices
from reports.studies import load_study
from runs.config import CliRequest, resolve
from runs.remote_power import PrometheusMeter
from runs.runner import execute
from serving.mlserver_launch import free_port, stop_mlserver
from serving.triton_repository import read_config_pbtxt
from studies.slo import Slo
from studies.study import StudyPlan
from studies.sweeper import Sweep
from sut.data import SyntheticDataset
from tests.serving import conftest as serving
from tests.sut.test_kserve_backend import local_backend

mlserver = serving.mlserver
doomed_mlserver = serving.doomed_mlserver
ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ["SingleStream", "MultiStream", "Server", "Offline"]
TINY = {"model": "resnet18", "image_size": 32, "dataset_count": 64, "min_duration_ms": 300, "min_query_count": 32}


def request(endpoint: str, out: Path, **fields) -> CliRequest:
    return CliRequest(endpoint=endpoint, output=out, **{**TINY, **fields})


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_scenario_runs_against_the_endpoint_and_is_saved_as_an_endpoint_run(mlserver, tmp_path, scenario):
    # Server at a light load with a loose bound: a busy 2-core host still meets it.
    # Query counts LoadGen's early stopping passes with (runs/sizing.py says why: p90 needs
    # 64, p99 459 with none over the bound).
    extra = {"SingleStream": {"min_query_count": 64}, "MultiStream": {"min_query_count": 662},
             "Server": {"target_qps": 100.0, "target_latency_ms": 500.0, "min_query_count": 500},
             # A warm-up of a few requests can undersize Offline's one query: a longer run evens it out.
             "Offline": {"min_duration_ms": 1500}}[scenario]
    config = resolve(request(mlserver.grpc, tmp_path, scenario=scenario, **extra))
    assert config.backend == "kserve"  # --endpoint alone means the remote backend
    outcome = execute(config, show_progress=False)
    assert outcome.summary is not None and outcome.summary.scenario == scenario
    assert outcome.summary.result_valid, outcome.summary
    result = outcome.result
    port = mlserver.grpc.split(":")[1]
    assert outcome.paths.run_dir.is_relative_to(tmp_path / "results" / f"Endpoint-127-0-0-1-{port}_kserve_fp32")
    backend = result["backend"]
    assert backend["endpoint"] == mlserver.grpc and backend["model"]["name"] == serving.MODEL
    assert backend["server"]["name"] == "mlserver" and backend["server"]["version"]
    environment = result["environment"]
    assert environment["accelerators_per_node"] == 0 and not environment["nvml"]["available"]
    assert result["power"]["source"] == "absent" and "remote endpoint" in result["power"]["reason"]
    assert result["harness"]["samples_failed"] == 0
    system = json.loads(outcome.paths.system_json.read_text())
    assert "remote KServe v2 server" in system["system_type_note"]


def test_accuracy_mode_answers_equal_the_local_onnxruntime_backend(mlserver, tmp_path):
    outcome = execute(resolve(request(mlserver.grpc, tmp_path, mode="accuracy", protocol="grpc")),
                      show_progress=False)
    logged = json.loads((outcome.paths.run_dir / "mlperf_log_accuracy.json").read_text())
    dataset = SyntheticDataset(count=64, image_size=serving.IMAGE_SIZE)
    indices = np.array(sorted({entry["qsl_idx"] for entry in logged}))
    expected = local_backend().logits(dataset.load(indices)).argmax(axis=1)
    answered = {entry["qsl_idx"]: int.from_bytes(bytes.fromhex(entry["data"]), "little", signed=True)
                for entry in logged}
    assert [answered[i] for i in indices] == expected.tolist()


def test_a_server_killed_mid_run_fails_the_run_with_the_count(doomed_mlserver, tmp_path):
    endpoint = doomed_mlserver(delay_ms=100)  # 32 x 8 rows in flight: about 2,500 samples/s
    config = resolve(request(endpoint.grpc, tmp_path, model_name=serving.INSTANT_MODEL, scenario="Offline",
                             min_duration_ms=4000, min_query_count=20000, target_qps=2500.0, request_timeout_s=3.0))
    started, stop = threading.Event(), threading.Event()

    def kill_once_loadgen_runs() -> None:  # LoadGen's log appears when its test starts
        while not stop.wait(0.05):
            if any(tmp_path.rglob("mlperf_log_detail.txt")):
                started.set()
                time.sleep(0.5)
                stop_mlserver(endpoint, graceful=False)
                return

    killer = threading.Thread(target=kill_once_loadgen_runs, daemon=True)
    killer.start()
    start = time.monotonic()
    try:
        with pytest.raises(RunFailed, match=r"the backend failed during the run: .*\((\d+) of (\d+) samples "
                                             r"failed; results in ") as info:
            execute(config, show_progress=False)
    finally:
        stop.set()
    assert started.is_set()
    assert time.monotonic() - start < 60
    counts = re.search(r"\((\d+) of (\d+) samples failed", str(info.value))
    assert counts is not None
    failed, completed = (int(n) for n in counts.groups())
    assert 0 < failed <= completed
    saved = json.loads(next(tmp_path.rglob("measurements.json")).read_text())
    assert next(iter(saved["runs"].values()))["harness"]["samples_failed"] == failed


# -- the command line -------------------------------------------------------------------------------


def run_cli(args: list[str], cache: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, DEEPGAP_CACHE=str(cache), CUDA_VISIBLE_DEVICES="", COLUMNS="100")
    tiny = ["--model", "resnet18", "--image-size", "32", "--dataset-count", "64", "--min-duration-ms", "300",
            "--min-query-count", "32", "--no-progress"]
    return subprocess.run([sys.executable, "harness/run.py", *tiny, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    output = f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr, output
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepgap: error:"), output
    for word in words:
        assert word.lower() in lines[0].lower(), f"{word!r} not in {lines[0]!r}"
    return lines[0]


def test_the_cli_runs_against_the_endpoint_and_says_so(mlserver, tmp_path):
    proc = run_cli(["--endpoint", mlserver.http, "--protocol", "http", "--scenario", "Offline", "--output",
                    tmp_path], tmp_path / "cache")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "result: VALID" in proc.stdout and "server: mlserver" in proc.stdout and mlserver.http in proc.stdout


@pytest.mark.parametrize("args, words", [
    (["--model-name", serving.UINT8_MODEL], ["uint8in", "UINT8"]),
    (["--image-size", "64"], ["[-1,3,32,32]", "64"]),
    (["--model-name", "nosuchmodel"], ["nosuchmodel"]),
])
def test_a_model_unlike_the_run_is_one_line_before_anything_runs(mlserver, tmp_path, args, words):
    proc = run_cli(["--endpoint", mlserver.grpc, "--output", tmp_path, *args], tmp_path / "cache")
    one_line_error(proc, *words)
    assert not list(tmp_path.rglob("measurements.json"))


def test_a_refused_connection_is_one_line_and_quick(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    proc = run_cli(["--endpoint", address, "--output", tmp_path], tmp_path / "cache")
    one_line_error(proc, address)
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("fields, match", [
    ({"backend": "torch", "endpoint": "127.0.0.1:8001"}, "--endpoint is for --backend kserve .* not --backend torch"),
    ({"backend": "onnxruntime", "metrics_url": "http://x/metrics"}, "--metrics-url is for --backend kserve"),
    ({"backend": "kserve"}, "needs --endpoint HOST:PORT"),
    ({"endpoint": "127.0.0.1:8001", "gpu": "L4"}, "--gpu and --gpus choose this host's devices"),
    ({"endpoint": "127.0.0.1:8001", "gpus": "2"}, "--gpu and --gpus choose this host's devices"),
    ({"endpoint": "127.0.0.1:8001", "ssl": True, "root_certificates": Path("/no/ca.pem")}, "no such file"),
    ({"endpoint": "localhost"}, "no port"),
    ({"endpoint": "127.0.0.1:8001", "metrics_url": "127.0.0.1:8002"}, "give the full URL"),
])
def test_endpoint_flags_are_checked_before_anything_connects(fields, match):
    with pytest.raises(ConfigError, match=match):
        CliRequest(**fields)


# -- the server's power, from its Prometheus metrics ------------------------------------------------


class TritonMetrics(http.server.BaseHTTPRequestHandler):
    """Triton's GPU metrics as it publishes them: one GPU drawing 250 W, its energy counter
    rising with the clock. Real HTTP and text, read by the meter's real fetch and parser."""

    started = time.monotonic()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        joules = 1000.0 + 250.0 * (time.monotonic() - self.started)
        uuid = 'gpu_uuid="GPU-1234"'
        body = (f"# HELP nv_gpu_power_usage GPU power usage in watts\n# TYPE nv_gpu_power_usage gauge\n"
                f"nv_gpu_power_usage{{{uuid}}} 250.0\n"
                f"# HELP nv_energy_consumption GPU energy consumption in joules since the Triton Server started\n"
                f"# TYPE nv_energy_consumption counter\nnv_energy_consumption{{{uuid}}} {joules:.3f}\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def triton_metrics():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TritonMetrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()


def test_power_is_the_servers_energy_over_the_run(triton_metrics):
    meter = PrometheusMeter(triton_metrics, interval_s=0.1)
    begin = time.monotonic()
    meter.start()
    time.sleep(0.8)
    power = meter.stop(begin)
    assert power["source"] == "prometheus" and power["url"] == triton_metrics
    assert power["avg_w"] == pytest.approx(250.0, rel=0.05)


def test_metrics_without_gpu_power_or_an_unreachable_url_leave_power_absent_with_the_reason(mlserver):
    unreachable = f"http://127.0.0.1:{free_port()}/metrics"
    meter = PrometheusMeter(unreachable, interval_s=0.1)
    meter.start()
    power = meter.stop()
    assert power["source"] == "absent" and unreachable in power["reason"]


def test_a_run_with_metrics_url_records_the_servers_power(mlserver, triton_metrics, tmp_path):
    outcome = execute(resolve(request(mlserver.grpc, tmp_path, scenario="Offline", metrics_url=triton_metrics,
                                      min_duration_ms=1500)), show_progress=False)
    power = outcome.result["power"]
    assert power["source"] == "prometheus" and power["avg_w"] == pytest.approx(250.0, rel=0.1)


# -- studies and plans in replicas ------------------------------------------------------------------


def test_a_study_of_an_endpoint_plans_in_replicas(mlserver, tmp_path):
    plan = StudyPlan(
        models=("resnet18",), precisions=("fp32",), backends=("kserve",), scenarios=("Offline", "Server"),
        batch_sizes=(4,), repeats=1, duration_ms=500, search_ms=500, confirm_ms=900, slo=Slo(99.0, 200.0),
        ladder=(1.0,), search_tolerance=0.25, in_flight=8,
        base={"endpoint": mlserver.grpc, "model_name": serving.INSTANT_MODEL, "image_size": 32,
              "dataset_count": 64},
    )
    Sweep(plan, tmp_path / "study", "python -m harness.sweep ...").run()
    study = load_study(tmp_path / "study")
    assert study.name.startswith("Endpoint-127-0-0-1-") and study.system.unit == "replica"
    assert study.system.devices == 1 and not study.system.is_cpu
    search = study.slo_searches[0]
    assert search.max_qps, search
    planned = make_plan([study], PlanRequest("resnet18", search.max_qps * 3, parse_slo("p99:200ms")), load_prices())
    option = next(o for o in planned.ranked if o.system == study.name)
    assert option.unit == "replica" and option.devices is not None and option.devices >= 3


# -- a Triton model repository from the command line ------------------------------------------------


def test_export_triton_writes_a_repository_that_reads_back(tmp_path, capsys):
    from deepgap.cli import main

    study = ROOT / "docs/studies/2026-11-26/h200"
    args = ["export-triton", "--output", str(tmp_path / "repo"), "--model", "resnet18", "--image-size", "32",
            "--study", str(study), "--kind", "cpu", "--instances", "2", "--max-batch-size", "128"]
    assert main(args) == 0
    out = capsys.readouterr().out
    config = read_config_pbtxt(tmp_path / "repo" / "resnet18" / "config.pbtxt")
    assert config["max_batch_size"] == 128 and config["instance_group"][0]["count"] == 2
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    preferred = config["dynamic_batching"]["preferred_batch_size"]
    assert f"from study {study}" in out and f"preferred [{preferred[0]}]" in out
    assert "max_batch_size: 128 from --max-batch-size" in out and "tritonserver --model-repository" in out
    assert (tmp_path / "repo" / "resnet18" / "1" / "model.onnx").is_file()
    assert main(args) != 0  # the model folder exists: kept, unless --overwrite
    assert "--overwrite" in capsys.readouterr().err
    # A maximum below the study's preferred batch is refused, naming both.
    assert main([*args[:-1], "8", "--overwrite"]) == 2
    assert "a preferred batch size (" in capsys.readouterr().err
