"""A study across two (stand-in) GPUs, as the sweep writes it, and the capacity plan's
measured-scaling path on it: the system names the count, the study records it, and the
planner divides by it and compares with a one-GPU study of the same card."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from reports.capacity import PlanRequest, make_plan
from reports.constraints import parse_slo
from reports.refdata import load_prices
from reports.studies import load_study
from runs.power import AbsentMeter
from runs.runner import load_backend
from studies.slo import Slo
from studies.study import StudyPlan
from studies.sweeper import Sweep
from sut.backends.base import DonePending
from sut.backends.instance_pool import InstancePool
from sut.backends.null_backend import NullBackend

SERVICE_S = 0.004
SERVER_BATCH = 8


class FixedService(NullBackend):
    """A device that takes SERVICE_S per batch, whatever its size: 2000 samples/s each at
    full batches of 8."""

    def run_batch(self, rows):
        time.sleep(SERVICE_S)
        return DonePending(self._answers[rows])

    def time_tight_loop(self, batch_size, iterations):
        return iterations * SERVICE_S


def fixed_service_factory(config, extra):
    """The run's backend as the runner builds it (one, or an InstancePool over the
    run's devices), with every member swapped for a FixedService device."""
    built = load_backend(config, extra)
    members = [FixedService(m.model, m.options) for m in built.instances()]
    backend = members[0] if len(members) == 1 else InstancePool(members, built.per_device)
    backend.load()
    return backend


@pytest.fixture
def two_h200s(monkeypatch):
    """Two NVIDIA H200s as runs.device sees them; nothing here touches CUDA itself."""
    monkeypatch.setattr("runs.device._cuda_names", lambda: ["NVIDIA H200"] * 2)
    monkeypatch.setattr("torch.cuda.get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr("runs.runner.open_meter", lambda devices: AbsentMeter("test: no GPU to measure"))
    monkeypatch.setattr("runs.limits.device_memory", lambda device: None)


def sweep(root, gpus: str):
    plan = StudyPlan(
        models=("resnet50",), precisions=("fp16",), backends=("null",), scenarios=("Offline", "Server"),
        batch_sizes=(SERVER_BATCH,), repeats=1, duration_ms=700, search_ms=500, confirm_ms=900,
        slo=Slo(99.0, 15.0), ladder=(0.5, 1.0), server_max_batch=SERVER_BATCH, batch_timeout_us=2000,
        search_tolerance=0.1, in_flight=1,
        base={"gpu": "H200", "gpus": gpus, "image_size": 32, "dataset_count": 64, "min_query_count": 32},
    )
    Sweep(plan, root, "python -m harness.sweep ...", backend_factory=fixed_service_factory).run()
    return json.loads((root / "study.json").read_text())


def test_a_two_gpu_study_plans_with_its_measured_scaling(tmp_path, two_h200s):
    pair = sweep(tmp_path / "h200x2", "2")
    assert pair["system"]["name"] == "H200x2" and pair["system"]["gpu_count"] == 2
    assert [a["device"] for a in pair["system"]["description"]["accelerators"]] == ["cuda:0", "cuda:1"]
    single = sweep(tmp_path / "h200x1", "1")
    assert single["system"]["gpu_count"] == 1
    # Each run of the pair ran on both devices, about evenly.
    run = next((tmp_path / "h200x2").rglob("measurements.json"))
    record = next(iter(json.loads(run.read_text())["runs"].values()))
    shares = [i["samples"] for i in record["harness"]["instances"]]
    assert [i["device"] for i in record["harness"]["instances"]] == ["cuda:0", "cuda:1"]
    assert min(shares) > 0.3 * sum(shares)

    studies = [load_study(tmp_path / "h200x2"), load_study(tmp_path / "h200x1")]
    plan = make_plan(studies, PlanRequest("resnet50", 20000.0, parse_slo("p99:15ms")), load_prices())
    option = next(o for o in plan.ranked if o.device == "NVIDIA H200")
    pair_capacity = next(s for s in pair["slo_searches"])["max_qps"]
    assert option.system == "H200x2" and option.qps_per_device <= pair_capacity / 2 * 1.001
    scaling = next(b for b in option.basis if b.startswith("scaling:"))
    assert "measured scaling: 2 GPUs in one host" in scaling and "of one GPU's" in scaling
    efficiency = float(scaling.split("QPS per GPU, ")[1].split("%")[0]) / 100
    assert 0.6 < efficiency < 1.4  # two fixed-service devices scale about linearly
    assert np.isfinite(efficiency)
