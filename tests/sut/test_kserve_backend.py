"""The KServe backend against a real MLServer (tests/serving/conftest.py), over gRPC and HTTP:
LoadGen's four scenarios, answers equal to a local ONNX Runtime run, refusals in one line,
and a server that dies or stalls mid-run failing batches within the timeout, never hanging."""

from __future__ import annotations

import os
import signal
import threading
import time

import mlperf_loadgen as lg
import numpy as np
import pytest

from plumbing.errors import BackendError, ConfigError
from runs.accuracy_log import parse_accuracy_log
from runs.loadgen_log import parse_detail, parse_summary
from serving.mlserver_launch import free_port, stop_mlserver
from sut.backends import backend_info, create_backend
from sut.backends.base import BackendOptions, ModelSpec
from sut.backends.kserve_backend import KServeBackend
from sut.backends.onnxruntime_backend import OnnxRuntimeBackend
from sut.data import SyntheticDataset
from sut.kserve_target import KServeTarget, check_remote_model
from sut.qsl import LoadgenQSL
from sut.settings import build_log_settings, build_test_settings
from sut.sut import LoadgenSUT
from tests.serving import conftest as serving

mlserver = serving.mlserver  # the session's server (and its fixture's one instance)
doomed_mlserver = serving.doomed_mlserver
SPEC = serving.SPEC
PROTOCOLS = ["grpc", "http"]
SCENARIOS = ["SingleStream", "MultiStream", "Server", "Offline"]
LOADGEN_VALUES = {"min_duration_ms": 300, "min_query_count": 32, "server_target_qps": 40.0,
                  "offline_expected_qps": 100.0}


def address(endpoint, protocol: str) -> str:
    return endpoint.grpc if protocol == "grpc" else endpoint.http


def kserve(endpoint: str, protocol: str = "grpc", spec: ModelSpec = SPEC, max_batch: int = 8, in_flight: int = 4,
           **settings) -> KServeBackend:
    settings.setdefault("model_name", serving.MODEL)
    extra = {"kserve": {"endpoint": endpoint, "protocol": protocol, **settings}}
    return KServeBackend(spec, BackendOptions(max_batch=max_batch, in_flight=in_flight, extra=extra))


@pytest.fixture
def connected(mlserver):
    made: list[KServeBackend] = []

    def connect(protocol: str = "grpc", **kwargs) -> KServeBackend:
        backend = kserve(address(mlserver, protocol), protocol, **kwargs)
        made.append(backend)
        backend.load()
        return backend

    yield connect
    for backend in made:
        backend.close()


def samples(count: int = 24) -> np.ndarray:
    return SyntheticDataset(count=count, image_size=serving.IMAGE_SIZE).load(np.arange(count))


def run_loadgen(backend, scenario: str, outdir, values=LOADGEN_VALUES, mode: str = "performance", on_start=None):
    dataset = SyntheticDataset(count=64, image_size=serving.IMAGE_SIZE)
    qsl = LoadgenQSL(dataset, backend, performance_count=64)
    sut = LoadgenSUT(backend, qsl, scenario, batch_timeout_us=2000)
    if on_start is not None:
        on_start()
    try:
        lg.StartTestWithLogSettings(sut.handle, qsl.handle, build_test_settings(scenario, mode, values),
                                    build_log_settings(outdir), str(outdir / "no-audit.config"))
    finally:
        sut.shutdown()
        qsl.destroy()
    detail = parse_detail(outdir / "mlperf_log_detail.txt")
    issued = int(detail.effective["samples_per_query"]) if scenario == "Offline" else \
        int(detail.result.get("query_count", 0)) * (8 if scenario == "MultiStream" else 1)
    return sut, detail, issued


def test_registry_declares_a_remote_backend():
    info = backend_info("kserve")
    assert info.remote and info.package == "tritonclient" and "pip install" in info.install
    assert isinstance(create_backend("kserve", SPEC, BackendOptions()), KServeBackend)


@pytest.mark.parametrize("extra, match", [
    ({"endpoint": "nohost"}, "'nohost' is not host:port: no port"),
    ({"endpoint": "127.0.0.1:70000"}, "port '70000' is not 1..65535"),
    ({"endpoint": "http://127.0.0.1:8000"}, "leave out the scheme"),
    ({"endpoint": "127.0.0.1:8001", "protocol": "rest"}, "protocol 'rest' is not one of grpc, http"),
    ({"endpoint": "127.0.0.1:8001", "timeout_s": 0}, "timeout_s must be a positive"),
    ({"endpoint": "127.0.0.1:8001", "root_certificates": "/etc/hostname"}, "ssl is off"),
    ({"endpoint": "127.0.0.1:8001", "modelname": "x"}, "unknown kserve setting modelname"),
    ({}, "needs an endpoint"),
])
def test_bad_settings_are_refused_in_one_line_before_connecting(extra, match):
    with pytest.raises(ConfigError, match=match) as info:
        KServeTarget.from_extra(extra, default_model="resnet18")
    assert "\n" not in str(info.value)


def test_target_defaults():
    target = KServeTarget.from_extra({"endpoint": "[::1]:8001"}, default_model="resnet50")
    assert (target.model_name, target.protocol, target.model_version, target.timeout_s) == ("resnet50", "grpc", "", 30)
    assert target.host_port() == ("::1", 8001, "")


def triton_metadata(shape, outputs=(("probs", ["-1", "1000"]), ("logits", ["-1", "1000"]))) -> dict:
    """Model metadata as Triton's gRPC answers it in JSON: int64 dims as strings."""
    return {"name": "resnet18", "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": shape}],
            "outputs": [{"name": name, "datatype": "FP32", "shape": dims} for name, dims in outputs]}


def test_a_triton_model_is_read_with_its_max_batch_size_and_named_output():
    target = KServeTarget.from_extra({"endpoint": "127.0.0.1:8001"}, default_model="resnet18")
    remote = check_remote_model(target, triton_metadata(["-1", "3", "32", "32"]), {"max_batch_size": 8}, SPEC, 8)
    assert (remote.max_rows, remote.output.name, remote.versions, remote.input.shape) == (8, "logits", ("1",),
                                                                                          (-1, 3, 32, 32))
    with pytest.raises(BackendError, match=r"takes at most 8 rows a request \(max_batch_size\); this run sends "
                                           r"up to 16 \(--max-batch 16\)$"):
        check_remote_model(target, triton_metadata(["-1", "3", "32", "32"]), {"max_batch_size": 8}, SPEC, 16)


@pytest.mark.parametrize("shape, match", [
    (["-1", "32", "32", "3"], r"takes input 'input' FP32 \[-1,32,32,3\]; .* \(it looks NHWC; deepgap sends NCHW\)$"),
    (["3", "32", "32"], "must take a batch dimension"),
    (["4", "3", "32", "32"], "a fixed batch of 4; this run sends batches of 1..8"),
])
def test_layouts_deepgap_cannot_send_are_refused(shape, match):
    target = KServeTarget.from_extra({"endpoint": "127.0.0.1:8001"}, default_model="resnet18")
    with pytest.raises(BackendError, match=match):
        check_remote_model(target, triton_metadata(shape), None, SPEC, 8)


# The inline scenarios send the same requests over either protocol: gRPC covers them.
@pytest.mark.parametrize("scenario, protocol", [(s, "grpc") for s in SCENARIOS] + [("Server", "http"),
                                                                                  ("Offline", "http")])
def test_loadgen_scenarios_answer_every_sample(connected, tmp_path, protocol, scenario):
    backend = connected(protocol, max_batch=8, in_flight=1 if scenario == "Server" else 2)
    sut, detail, issued = run_loadgen(backend, scenario, tmp_path)
    summary = parse_summary(tmp_path / "mlperf_log_summary.txt")
    assert summary.scenario == scenario and summary.headline_value > 0
    assert detail.errors == []
    assert sut.failure is None
    assert sut.samples_completed == issued > 0


def test_an_accuracy_run_logs_the_local_top1_of_every_sample(connected, tmp_path):
    backend = connected("grpc", max_batch=8, in_flight=2)
    run_loadgen(backend, "Offline", tmp_path, mode="accuracy")
    expected = local_backend().logits(samples(64)).argmax(axis=1)
    entries = parse_accuracy_log(tmp_path / "mlperf_log_accuracy.json")
    assert sorted(e.qsl_idx for e in entries) == list(range(64))
    for entry in entries:
        assert np.frombuffer(entry.data, "<i4")[0] == expected[entry.qsl_idx]


def local_backend() -> OnnxRuntimeBackend:
    backend = OnnxRuntimeBackend(SPEC, BackendOptions(max_batch=8))
    backend.load()
    return backend


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_answers_equal_a_local_onnxruntime_run(connected, protocol):
    backend = connected(protocol)
    x = samples()
    local = local_backend().logits(x)
    np.testing.assert_allclose(backend.logits(x), local, rtol=1e-5, atol=1e-5)
    backend.allocate_staging(len(x))
    backend.stage(np.arange(len(x)), x)
    pending = [backend.run_batch(np.arange(i, i + 8)) for i in range(0, len(x), 8)]  # three in flight
    top1 = np.concatenate([p.wait() for p in pending])
    assert top1.dtype == np.int32
    np.testing.assert_array_equal(top1, local.argmax(axis=1))
    assert backend.run_batch(np.array([], dtype=np.int64)).wait().size == 0
    assert backend.time_tight_loop(2, 10) > 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_fp16_input_is_converted_once_at_staging(connected, protocol):
    backend = connected(protocol, model_name=serving.FP16_MODEL)
    x = samples(8)
    backend.allocate_staging(len(x))
    backend.stage(np.arange(len(x)), x)
    rounded = x.astype(np.float16).astype(np.float32)  # what the server receives and runs in fp32
    np.testing.assert_array_equal(backend.run_batch(np.arange(8)).wait(), local_backend().logits(rounded).argmax(1))
    assert backend.describe()["model"]["input"]["datatype"] == "FP16"


def test_describe_records_the_server_and_the_model(connected, mlserver):
    described = connected("grpc").describe()
    assert described["backend"] == "kserve" and described["remote"] is True
    assert (described["endpoint"], described["protocol"]) == (mlserver.grpc, "grpc")
    assert described["server"]["name"] == "mlserver" and described["server"]["version"]
    assert described["model"]["name"] == serving.MODEL
    assert described["model"]["platform"] == "deepgap-onnxruntime"
    assert described["model"]["input"] == {"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}
    assert described["model"]["output"]["name"] == "logits"
    assert described["client"]["tritonclient"] and described["client"]["in_flight"] == 4


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("change, match", [
    ({"spec": ModelSpec("resnet18", "fp32", image_size=64)},
     r"^model resnet18 on 127\.0\.0\.1:\d+ \((grpc|http)\) takes input 'input' FP32 \[-1,3,32,32\]; "
     r"this run sends \[N,3,64,64\] \(--image-size 64\)$"),
    ({"model_name": "resnet50"}, r"^model 'resnet50' is not served by 127\.0\.0\.1:\d+ \((grpc|http)\) \("),
    ({"model_name": serving.UINT8_MODEL}, r"takes input 'input' UINT8 \[-1,3,32,32\]; deepgap sends preprocessed"),
    ({"spec": ModelSpec("resnet18", "fp32", image_size=32, num_classes=10)},
     r"answers output 'logits' FP32 \[-1,1000\]; deepgap needs logits \[N,10\]"),
])
def test_a_model_that_does_not_match_is_refused_naming_the_difference(mlserver, protocol, change, match):
    backend = kserve(address(mlserver, protocol), protocol, **change)
    with pytest.raises(BackendError, match=match) as info:
        backend.load()
    assert "\n" not in str(info.value)
    if protocol == "grpc" and change.get("model_name") == "resnet50":  # MLServer's HTTP index wants a body tritonclient omits
        assert "; it serves: instant, resnet18, resnet18-fp16in, uint8in" in str(info.value)
    backend.close()


@pytest.mark.timeout(90)  # a hang fails here, not at the suite's 300 s
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_refused_connection_fails_load_quickly(protocol):
    endpoint = f"127.0.0.1:{free_port()}"
    backend = kserve(endpoint, protocol)
    start = time.monotonic()
    with pytest.raises(BackendError, match=rf"^cannot reach the KServe server at {endpoint} \({protocol}\): "):
        backend.load()
    assert time.monotonic() - start < 10
    backend.close()
    backend.close()  # twice is fine
    with pytest.raises(BackendError, match="not connected|not loaded"):
        backend.logits(samples(1))


@pytest.mark.timeout(90)  # a hang fails here, not at the suite's 300 s
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_server_killed_mid_run_fails_every_batch_within_the_timeout(doomed_mlserver, protocol):
    endpoint = doomed_mlserver(delay_ms=1000)  # every request is still in flight when it dies
    backend = kserve(address(endpoint, protocol), protocol, model_name=serving.INSTANT_MODEL, timeout_s=3)
    backend.load()
    backend.allocate_staging(8)
    backend.stage(np.arange(8), samples(8))
    pending = [backend.run_batch(np.arange(i, i + 2)) for i in range(0, 8, 2)]
    launched = time.monotonic()
    stop_mlserver(endpoint, graceful=False)
    for batch in pending:
        with pytest.raises(BackendError, match=f"{address(endpoint, protocol)} \\({protocol}\\)") as info:
            batch.wait()
        assert "\n" not in str(info.value)
    assert time.monotonic() - launched < 3 + 2 + 1  # timeout_s and the wait's grace, never more
    with pytest.raises(BackendError):
        backend.run_batch(np.arange(2)).wait()  # the next batch fails too, at once or by its deadline
    backend.close()


@pytest.mark.timeout(90)  # a hang fails here, not at the suite's 300 s
def test_a_stalled_server_times_out_instead_of_hanging(doomed_mlserver):
    endpoint = doomed_mlserver()
    backend = kserve(endpoint.grpc, "grpc", model_name=serving.INSTANT_MODEL, timeout_s=1.5)
    backend.load()
    backend.allocate_staging(2)
    os.killpg(endpoint.process.pid, signal.SIGSTOP)  # alive, connected, silent
    start = time.monotonic()
    with pytest.raises(BackendError, match=rf"^no answer from {endpoint.grpc} \(grpc\) within 1\.5 s \(timeout_s\)$"):
        backend.run_batch(np.arange(2)).wait()
    assert 1.4 < time.monotonic() - start < 1.5 + 2 + 1
    backend.close()


@pytest.mark.timeout(90)  # a hang fails here, not at the suite's 300 s
@pytest.mark.parametrize("scenario", ["Offline", "Server"])
def test_a_loadgen_run_whose_server_dies_completes_with_the_failure_recorded(doomed_mlserver, tmp_path, scenario):
    endpoint = doomed_mlserver(delay_ms=20)
    backend = kserve(endpoint.grpc, "grpc", model_name=serving.INSTANT_MODEL, max_batch=4, in_flight=2, timeout_s=3)
    backend.load()
    values = dict(LOADGEN_VALUES, min_duration_ms=3000, min_query_count=400, server_target_qps=100.0,
                  offline_expected_qps=150.0)
    killer = threading.Timer(0.8, stop_mlserver, args=(endpoint,), kwargs={"graceful": False})
    start = time.monotonic()
    try:
        sut, detail, issued = run_loadgen(backend, scenario, tmp_path, values=values, on_start=killer.start)
    finally:
        killer.cancel()
        backend.close()
    assert isinstance(sut.failure, BackendError) and endpoint.grpc in str(sut.failure)
    assert sut.samples_completed == issued > 0
    assert time.monotonic() - start < 60
