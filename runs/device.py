"""Matches the --gpu profile against the visible hardware."""

from __future__ import annotations

import re
from dataclasses import dataclass

from plumbing.errors import DeviceError
from scenarios.profiles import GpuProfile, load_gpu_profile, profile_names


@dataclass(frozen=True)
class DeviceChoice:
    profile: GpuProfile
    device: str  # "cpu" or "cuda:N"
    name: str  # GPU name, or "CPU"
    count: int  # devices used by this run

    @property
    def system_prefix(self) -> str:
        """'H100x1', a sanitised device name for GPUs without a profile, or for the CPU its
        model and usable CPU count ('CPU-AMDEPYC7B13-2cpu', runs/system.py). Studies
        and results made before CPUs were named so say 'CPU'; they are read as they are."""
        if self.device == "cpu":
            from runs.system import cpu_system_label

            return cpu_system_label()
        label = self.profile.name
        if label == "auto":
            label = re.sub(r"[^A-Za-z0-9]+", "", self.name.replace("NVIDIA", "")) or "GPU"
        return f"{label}x{self.count}"


def _cuda_names() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def resolve_device(gpu: str) -> DeviceChoice:
    """`gpu` is a profile name, 'cpu' or 'auto'. Raises DeviceError on a mismatch."""
    if gpu.lower() != "auto":
        profile = load_gpu_profile(gpu)
        if profile.device == "cpu":
            return DeviceChoice(profile, "cpu", "CPU", 1)  # no CUDA probe (nor torch import)
    names = _cuda_names()
    if gpu.lower() == "auto":
        if not names:
            return DeviceChoice(load_gpu_profile("cpu"), "cpu", "CPU", 1)
        for candidate in profile_names():
            profile = load_gpu_profile(candidate)
            if profile.device == "cuda" and profile.matches(names[0]):
                return DeviceChoice(profile, "cuda:0", names[0], 1)
        generic = load_gpu_profile("H100")  # batching defaults only; expected rates are unknown
        generic = GpuProfile(
            name="auto", device="cuda", match=None, path=generic.path,
            notes=f"no profile matches {names[0]!r}: H100 batching defaults, no expected rates",
            defaults=generic.defaults, models={},
        )
        return DeviceChoice(generic, "cuda:0", names[0], 1)
    if not names:
        raise DeviceError(
            f"--gpu {gpu} needs a CUDA GPU but none is visible to PyTorch; use --gpu cpu or --gpu auto"
        )
    if not profile.matches(names[0]):
        raise DeviceError(
            f"--gpu {gpu} does not match the visible GPU {names[0]!r}; use --gpu auto "
            "(or the profile that names this GPU)"
        )
    return DeviceChoice(profile, "cuda:0", names[0], 1)
