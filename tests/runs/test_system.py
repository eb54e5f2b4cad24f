"""System names: a CPU system carries its CPU model and usable CPU count, so hosts differ."""

from __future__ import annotations

import pytest

from runs import system as system_module
from runs.config import CliRequest, resolve
from runs.system import cpu_system_label


@pytest.mark.parametrize("model, cpus, label", [
    ("Intel(R) Xeon(R) Platinum 8480+", 16, "CPU-IntelXeonPlatinum8480-16cpu"),
    ("AMD EPYC 7B13 64-Core Processor", 2, "CPU-AMDEPYC7B13-2cpu"),
    ("Intel(R) Xeon(R) CPU @ 2.20GHz", 4, "CPU-IntelXeon-4cpu"),
    ("Intel(R) Core(TM) i7-8700K CPU @ 3.70GHz", 12, "CPU-IntelCorei78700K-12cpu"),
    ("Intel(R) Xeon(R) Processor", 2, "CPU-IntelXeon-2cpu"),
])
def test_cpu_label_keeps_what_tells_cpus_apart(model: str, cpus: int, label: str) -> None:
    assert cpu_system_label(model, cpus) == label


def test_cpu_label_without_a_model_name_is_the_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    # aarch64's /proc/cpuinfo has no "model name" line; _cpu_model falls back to the machine.
    monkeypatch.setattr(system_module.platform, "machine", lambda: "aarch64")
    assert cpu_system_label("", 8) == "CPU-aarch64-8cpu"
    assert cpu_system_label("(R) (TM) CPU Processor", 8) == "CPU-aarch64-8cpu"


def test_a_cpu_run_is_named_by_this_hosts_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # Was "CPU_torch_fp32" on every host: an AMD EPYC's and an Intel Xeon's results collided.
    request = CliRequest(gpu="cpu", backend="torch", model="resnet18", image_size=32)
    names = {}
    for model in ("AMD EPYC 7B13 64-Core Processor", "Intel(R) Xeon(R) Platinum 8480+"):
        monkeypatch.setattr(system_module, "_cpu_model", lambda model=model: model)
        names[model] = resolve(request).system_name
    assert names["AMD EPYC 7B13 64-Core Processor"].startswith("CPU-AMDEPYC7B13-")
    assert names["Intel(R) Xeon(R) Platinum 8480+"].startswith("CPU-IntelXeonPlatinum8480-")
    assert all(name.endswith("cpu_torch_fp32") and name.count("_") == 2 for name in names.values())
