"""--instances under real LoadGen on the CPU: all four scenarios across two backend
instances, every sample answered once by its own result, and one failing instance ending
the run with nothing outstanding and no thread left."""

from __future__ import annotations

import numpy as np
import pytest

from runs.accuracy_log import parse_accuracy_log
from runs.config import resolve
from runs.loadgen_log import parse_detail
from runs.runner import execute
from sut.backends.base import BackendOptions, ModelSpec
from sut.backends.instance_pool import InstancePool
from sut.backends.null_backend import NullBackend, checksum_class
from sut.data import SyntheticDataset
from tests.sut.test_sut_loadgen import SCENARIOS, ExplodingBackend, run_until_failure, scenario_overrides


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_two_instances_run_every_scenario(tiny_request, scenario):
    config = resolve(tiny_request(backend="torch", instances=2, **scenario_overrides(scenario)))
    outcome = execute(config, show_progress=False)
    result = outcome.result
    assert result["status"] == "ok" and result["loadgen_errors"] == []
    detail = parse_detail(outcome.paths.run_dir / "mlperf_log_detail.txt")
    issued = int(detail.result["query_count"]) * (8 if scenario == "MultiStream" else 1)
    if scenario == "Offline":
        issued = int(detail.effective["samples_per_query"])
    instances = result["harness"]["instances"]
    assert [i["device"] for i in instances] == ["cpu", "cpu"]
    assert sum(i["samples"] for i in instances) == result["harness"]["samples_completed"] == issued
    if scenario != "Offline":  # one Offline query may fit a few large batches
        assert all(i["batches"] > 0 for i in instances)
    assert result["backend"]["instances"]["count"] == 2
    assert result["config"]["knobs"]["instances"] == 2


@pytest.mark.parametrize("scenario", ["Server", "MultiStream"])
def test_each_instance_answers_its_samples_with_their_own_results(tiny_request, scenario):
    config = resolve(tiny_request(backend="null", mode="accuracy", instances=3, **scenario_overrides(scenario)))
    outcome = execute(config, show_progress=False)
    entries = parse_accuracy_log(outcome.paths.run_dir / "mlperf_log_accuracy.json")
    expected = checksum_class(SyntheticDataset(count=64, image_size=32).load(np.arange(64)))
    assert sorted(e.qsl_idx for e in entries) == list(range(64))
    assert all(np.frombuffer(e.data, "<i4")[0] == expected[e.qsl_idx] for e in entries)
    assert sum(1 for i in outcome.result["harness"]["instances"] if i["batches"]) >= 2


@pytest.mark.parametrize("scenario", ["Offline", "Server", "SingleStream"])
def test_one_failing_instance_ends_the_run_with_nothing_outstanding(tmp_path, scenario):
    healthy = NullBackend(ModelSpec("resnet18", "fp32", image_size=32), BackendOptions(max_batch=4, in_flight=2))
    pool = InstancePool([healthy, ExplodingBackend(fail_after=2)], per_device=2)
    pool.load()
    sut = run_until_failure(tmp_path, pool, scenario)
    assert "simulated device fault" in str(sut.failure)
