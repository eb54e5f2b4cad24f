"""The SUT and QSL adapters under real LoadGen, in all four scenarios."""

from __future__ import annotations

import json
import threading

import mlperf_loadgen as lg
import numpy as np
import pytest

from runs.config import resolve
from runs.loadgen_log import parse_detail, parse_summary
from runs.accuracy_log import parse_accuracy_log
from runs.runner import execute
from sut.backends.base import BackendOptions, ModelSpec
from sut.backends.null_backend import NullBackend, checksum_class
from sut.data import SyntheticDataset
from sut.qsl import LoadgenQSL
from sut.settings import build_log_settings, build_test_settings
from sut.sut import LoadgenSUT
from tests.conftest import cpu_system

SCENARIOS = ["SingleStream", "MultiStream", "Server", "Offline"]
TARGET_QPS = {"Server": 150.0, "Offline": 400.0}


def scenario_overrides(scenario: str) -> dict:
    extra: dict = {"scenario": scenario}
    if scenario in TARGET_QPS:
        extra["target_qps"] = TARGET_QPS[scenario]
    if scenario == "Server":
        extra["max_batch"] = 8
        extra["batch_timeout_us"] = 2000
    return extra


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_performance_run_with_torch_backend(tiny_request, scenario):
    config = resolve(tiny_request(backend="torch", **scenario_overrides(scenario)))
    outcome = execute(config, show_progress=False)
    run_dir = outcome.paths.run_dir
    summary = parse_summary(run_dir / "mlperf_log_summary.txt")
    detail = parse_detail(run_dir / "mlperf_log_detail.txt")
    assert summary.scenario == scenario
    assert summary.headline_value > 0
    assert detail.errors == []
    assert outcome.result["status"] == "ok"
    harness = outcome.result["harness"]
    issued = int(detail.result["query_count"]) * (8 if scenario == "MultiStream" else 1)
    if scenario == "Offline":
        issued = int(detail.effective["samples_per_query"])
    assert harness["samples_completed"] == issued
    if scenario == "MultiStream":
        assert harness["mean_batch"] == 8  # each query is one batch
    if scenario == "SingleStream":
        assert harness["mean_batch"] == 1


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_accuracy_run_answers_every_sample_with_its_own_result(tiny_request, scenario):
    """The null backend answers a checksum of the staged pixels: every logged response must
    be the checksum of the sample LoadGen asked for, once per sample."""
    config = resolve(tiny_request(backend="null", mode="accuracy", **scenario_overrides(scenario)))
    outcome = execute(config, show_progress=False)
    entries = parse_accuracy_log(outcome.paths.run_dir / "mlperf_log_accuracy.json")
    dataset = SyntheticDataset(count=64, image_size=32)
    expected = checksum_class(dataset.load(np.arange(64)))
    indices = sorted(e.qsl_idx for e in entries)
    assert indices == list(range(64))
    for entry in entries:
        assert np.frombuffer(entry.data, "<i4")[0] == expected[entry.qsl_idx]
    text = (outcome.paths.run_dir / "accuracy.txt").read_text()
    assert text.startswith("fp32_agreement=") and "total=64" in text
    assert "not an accuracy" in text


def test_accuracy_mode_with_a_faithful_backend_agrees_with_the_fp32_reference(tiny_request):
    config = resolve(tiny_request(backend="torch", mode="accuracy"))
    outcome = execute(config, show_progress=False)
    assert outcome.accuracy is not None
    assert outcome.accuracy.kind == "fp32_agreement"
    assert outcome.accuracy.total == 64
    assert outcome.accuracy.percent == 100.0
    measurements = json.loads(outcome.paths.measurements.read_text())
    assert measurements["runs"]["accuracy"]["accuracy"]["good"] == 64


class ExplodingBackend(NullBackend):
    def __init__(self, fail_after: int) -> None:
        super().__init__(ModelSpec("resnet18", "fp32", image_size=32), BackendOptions(max_batch=4, in_flight=2))
        self.fail_after = fail_after
        self.calls = 0

    def run_batch(self, rows):
        self.calls += 1
        if self.calls > self.fail_after:
            raise RuntimeError("simulated device fault")
        return super().run_batch(rows)


def run_until_failure(tmp_path, backend, scenario: str) -> LoadgenSUT:
    """A short LoadGen performance run of `backend` (loaded) that is expected to fail
    part-way; checks every issued sample completed and no SUT thread is left."""
    before = set(threading.enumerate())
    dataset = SyntheticDataset(count=32, image_size=32)
    qsl = LoadgenQSL(dataset, backend, performance_count=32)
    sut = LoadgenSUT(backend, qsl, scenario, batch_timeout_us=1000)
    values = {"min_duration_ms": 300, "min_query_count": 64, "server_target_qps": 200.0,
              "offline_expected_qps": 200.0}
    settings = build_test_settings(scenario, "performance", values)
    lg.StartTestWithLogSettings(sut.handle, qsl.handle, settings, build_log_settings(tmp_path),
                                str(tmp_path / "no-audit.config"))
    sut.shutdown()
    qsl.destroy()
    detail = parse_detail(tmp_path / "mlperf_log_detail.txt")
    issued = int(detail.result.get("query_count", 0))
    if scenario == "Offline":
        issued = int(detail.effective["samples_per_query"])
    assert sut.samples_completed == issued > 0
    leftover = [t for t in set(threading.enumerate()) - before if t.is_alive() and t.name.startswith("sut-")]
    assert leftover == []
    return sut


@pytest.mark.parametrize("scenario", ["Offline", "Server", "SingleStream"])
def test_backend_failure_completes_outstanding_samples_and_leaves_no_threads(tmp_path, scenario):
    backend = ExplodingBackend(fail_after=3)
    backend.load()
    sut = run_until_failure(tmp_path, backend, scenario)
    assert "simulated device fault" in str(sut.failure)


def test_failed_run_is_reported_and_recorded(tiny_request, monkeypatch):
    from plumbing.errors import RunFailed
    from sut.backends import torch_backend

    def broken(self, rows):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(torch_backend.TorchBackend, "run_batch", broken)
    config = resolve(tiny_request(backend="torch"))
    with pytest.raises(RunFailed, match="illegal memory access"):
        execute(config, show_progress=False)
    measurements = json.loads(
        (config.request.output / "results" / cpu_system("torch") / "resnet18" / "Offline" / "measurements.json").read_text()
    )
    assert measurements["runs"]["performance"]["status"] == "failed"
