"""Describes the system under test for systems/<system>.json and every result."""

from __future__ import annotations

import os
import platform
import re
import sys
from importlib import metadata
from typing import Any

from sut.backends import backend_info
from sut.cpu_cores import usable_cpus


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    # No model name (aarch64's /proc/cpuinfo, other systems): the architecture.
    return platform.processor() or platform.machine()


# Words in a CPU's model name that tell no two hosts apart: trademarks, "CPU", "Processor",
# the core count ("64-Core"; the usable count is in the name anyway) and the base clock.
_CPU_NOISE = re.compile(r"\((?:R|TM|C)\)|\bCPU\b|\bProcessor\b|\b\d+-Core\b|@\s*[\d.]+\s*[GM]Hz", re.IGNORECASE)
_CPU_LABEL_CHARS = 40


def cpu_system_label(model: str | None = None, cpus: int | None = None) -> str:
    """A CPU system's name: 'CPU-', the CPU model's alphanumerics less the words above,
    and the CPUs this process may use, e.g. 'CPU-IntelXeonPlatinum8480-16cpu' or
    'CPU-AMDEPYC7B13-2cpu'. Two hosts with other CPUs, or another CPU count, get other
    names, so their results and studies stand side by side. No '_': the run's system name
    appends '_<backend>_<precision>'."""
    model = _cpu_model() if model is None else model
    label = re.sub(r"[^A-Za-z0-9]+", "", _CPU_NOISE.sub(" ", model))[:_CPU_LABEL_CHARS]
    if not label:
        label = re.sub(r"[^A-Za-z0-9]+", "", platform.machine()) or "unknown"
    return f"CPU-{label}-{usable_cpus() if cpus is None else cpus}cpu"


def backend_label(backend: str, compile_mode: str) -> str:
    """The backend as a system name shows it: a compiled torch network is another software
    stack than the eager one, so its results live under another name."""
    if compile_mode == "none" or not backend_info(backend).compiles:
        return backend
    return f"{backend}-inductor" if compile_mode == "default" else f"{backend}-inductor-{compile_mode}"


def system_name(prefix: str, backend: str, precision: str) -> str:
    """A run's system name, results/<system>/...: the device's prefix ('H100x1',
    cpu_system_label()), the backend and the precision."""
    return f"{prefix}_{backend}_{precision}"


def _memory_gib() -> float | None:
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _nvml_info() -> dict[str, Any]:
    """Driver and per-GPU facts from NVML; {'available': False, 'reason': ...} without it."""
    try:
        import pynvml
    except ImportError:
        return {"available": False, "reason": "nvidia-ml-py is not installed"}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return {"available": False, "reason": f"NVML could not start: {exc}"}
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                {
                    "name": _text(pynvml.nvmlDeviceGetName(handle)),
                    "memory_gib": round(memory.total / 2**30, 1),
                    "power_limit_w": pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000.0,
                    "max_sm_clock_mhz": pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM),
                    **_clocks(pynvml, handle),
                }
            )
        return {
            "available": True,
            "driver": _text(pynvml.nvmlSystemGetDriverVersion()),
            "gpus": gpus,
        }
    except pynvml.NVMLError as exc:
        return {"available": False, "reason": f"NVML query failed: {exc}"}
    finally:
        pynvml.nvmlShutdown()


def _source_revision() -> dict[str, Any] | None:
    """The git commit this deepgap runs from and whether it has local changes; None
    outside a git checkout (an installed package)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return {"commit": commit.stdout.strip(), "modified": bool(status.stdout.strip())}


def _clocks(pynvml: Any, handle: Any) -> dict[str, Any]:
    """Clocks as found when the run ended (None where the GPU does not say): a run at
    locked or application clocks is not comparable with one at default boost."""
    queries = {
        "sm_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
        "memory_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
        "max_memory_clock_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM),
        "applications_sm_clock_mhz": lambda: pynvml.nvmlDeviceGetApplicationsClock(handle, pynvml.NVML_CLOCK_SM),
        "persistence_mode": lambda: bool(pynvml.nvmlDeviceGetPersistenceMode(handle)),
    }
    out: dict[str, Any] = {}
    for key, query in queries.items():
        try:
            out[key] = query()
        except pynvml.NVMLError:
            out[key] = None
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def describe_system(system_name: str, device: str, gpu_count: int, backend_info: dict[str, Any],
                    devices: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The system of a run on `devices` (default: `device`); systems/<system>.json."""
    import torch

    devices = tuple(devices or (device,))

    info: dict[str, Any] = {
        "system_name": system_name,
        # A remote endpoint's accelerators are the server's, unknown here: 0 local ones.
        "accelerators_per_node": gpu_count if device.startswith("cuda") else 0,
        "host_processor_model_name": _cpu_model(),
        "host_processor_core_count": os.cpu_count(),
        "host_memory_gib": _memory_gib(),
        "operating_system": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "software": {
            "torch": torch.__version__,
            "torchvision": _version("torchvision"),
            "mlcommons-loadgen": _version("mlcommons-loadgen"),
            "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
            "numpy": _version("numpy"),
            "nvidia-ml-py": _version("nvidia-ml-py"),
            "tritonclient": _version("tritonclient"),
        },
        "deepgap_source": _source_revision(),
        "backend": backend_info,
    }
    if device == "remote":  # the client host; the server is described by backend["server"]
        info["system_type_note"] = "the client host of a run against a remote KServe v2 server"
        info["nvml"] = {"available": False, "reason": "remote endpoint: the server's GPUs are not visible here"}
    elif device != "cpu":
        info["accelerator_model_name"] = torch.cuda.get_device_name(torch.device(devices[0]))
        # The devices this run used; "nvml" below lists every GPU of the host.
        info["accelerators"] = [{"device": d, "name": torch.cuda.get_device_name(torch.device(d))} for d in devices]
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
        info["nvml"] = _nvml_info()
    else:
        info["nvml"] = {"available": False, "reason": "CPU run"}
    return info
