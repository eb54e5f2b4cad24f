"""Matches the --gpu profile against the visible hardware, on the devices --gpus selects."""

from __future__ import annotations

import re
from dataclasses import dataclass

from plumbing.errors import ConfigError, DeviceError
from scenarios.profiles import GpuProfile, load_gpu_profile, profile_names

# --gpus in words, for --help and errors.
GPUS_HELP = "1 (the first GPU), N (the first N), all, or CUDA indices such as 0,2"
ENDPOINT_PREFIX = "Endpoint-"  # the system name of runs against a remote server, and of their studies


@dataclass(frozen=True)
class DeviceChoice:
    profile: GpuProfile
    device: str  # "cpu", "cuda:N" (the first device of the run) or "remote" (an endpoint)
    name: str  # GPU name, "CPU", or the endpoint's address
    count: int  # devices used by this run
    devices: tuple[str, ...] = ()  # every device of the run ("cuda:0", "cuda:2"); () = (device,)

    def __post_init__(self) -> None:
        if not self.devices:
            object.__setattr__(self, "devices", (self.device,))
        if len(self.devices) != self.count:
            raise ValueError(f"{self.count} devices but {len(self.devices)} listed")

    @property
    def system_prefix(self) -> str:
        """'H100x1' (x4 for four GPUs), a sanitised device name for GPUs without a profile, or
        for the CPU its model and usable CPU count ('CPU-AMDEPYC7B13-2cpu', runs/system.py).
        Studies and results made before CPUs were named so say 'CPU'; they are read as they are."""
        if self.device == "cpu":
            from runs.system import cpu_system_label

            return cpu_system_label()
        if self.device == "remote":  # a KServe endpoint (runs/endpoint.py): its address
            return ENDPOINT_PREFIX + (re.sub(r"[^A-Za-z0-9]+", "-", self.name).strip("-") or "remote")
        label = self.profile.name
        if label == "auto":
            label = re.sub(r"[^A-Za-z0-9]+", "", self.name.replace("NVIDIA", "")) or "GPU"
        return f"{label}x{self.count}"


def _cuda_names() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def parse_gpus(text: str) -> int | tuple[int, ...] | None:
    """--gpus as given: a count (int), explicit CUDA indices (tuple), or None for all.
    Checked for form only; `select_gpus` checks it against the visible devices."""
    value = str(text).strip().lower()
    if value == "all":
        return None
    if re.fullmatch(r"\d+", value):
        count = int(value)
        if count < 1:
            raise ConfigError(f"--gpus {text} must be at least 1 ({GPUS_HELP})")
        return count
    if re.fullmatch(r"\d+(\s*,\s*\d+)+", value):
        indices = tuple(int(v) for v in value.split(","))
        if len(set(indices)) != len(indices):
            raise ConfigError(f"--gpus {text} lists a device twice")
        return indices
    raise ConfigError(f"--gpus {text!r} is not {GPUS_HELP}")


def select_gpus(gpus: str, visible: int) -> tuple[int, ...]:
    """The CUDA indices --gpus selects among `visible` devices."""
    wanted = parse_gpus(gpus)
    if wanted is None:
        return tuple(range(visible))
    if isinstance(wanted, int):
        if wanted > visible:
            raise DeviceError(f"--gpus {gpus} asks for {wanted} GPUs but {visible} are visible to PyTorch")
        return tuple(range(wanted))
    missing = [i for i in wanted if i >= visible]
    if missing:
        raise DeviceError(f"--gpus {gpus}: no CUDA device {', '.join(map(str, missing))} "
                          f"({visible} visible: 0..{visible - 1})")
    return wanted


def _one_model(names: list[str], indices: tuple[int, ...]) -> str:
    """The GPU model of every selected device; a mix is refused: one run's figures are per
    device, and a mixed host's would describe no card."""
    models = sorted({names[i] for i in indices})
    if len(models) > 1:
        listing = ", ".join(f"{i}: {names[i]}" for i in indices)
        raise DeviceError(f"--gpus selects different GPU models ({listing}); one run measures one model: "
                          "pick devices of one model with --gpus 0,2 (or CUDA_VISIBLE_DEVICES)")
    return models[0]


def resolve_device(gpu: str, gpus: str = "1") -> DeviceChoice:
    """`gpu` is a profile name, 'cpu' or 'auto'; `gpus` which CUDA devices (GPUS_HELP).
    Raises DeviceError on a mismatch."""
    parse_gpus(gpus)  # its form, before any probe
    if gpu.lower() != "auto":
        profile = load_gpu_profile(gpu)
        if profile.device == "cpu":
            _refuse_gpus_on_cpu(gpus)
            return DeviceChoice(profile, "cpu", "CPU", 1)  # no CUDA probe (nor torch import)
    names = _cuda_names()
    if not names:
        if gpu.lower() == "auto":
            _refuse_gpus_on_cpu(gpus, "no CUDA GPU is visible, so --gpu auto runs on the CPU")
            return DeviceChoice(load_gpu_profile("cpu"), "cpu", "CPU", 1)
        raise DeviceError(
            f"--gpu {gpu} needs a CUDA GPU but none is visible to PyTorch; use --gpu cpu or --gpu auto"
        )
    indices = select_gpus(gpus, len(names))
    model = _one_model(names, indices)
    devices = tuple(f"cuda:{i}" for i in indices)
    if gpu.lower() == "auto":
        for candidate in profile_names():
            profile = load_gpu_profile(candidate)
            if profile.device == "cuda" and profile.matches(model):
                return DeviceChoice(profile, devices[0], model, len(devices), devices)
        generic = load_gpu_profile("H100")  # batching defaults only; expected rates are unknown
        generic = GpuProfile(
            name="auto", device="cuda", match=None, path=generic.path,
            notes=f"no profile matches {model!r}: H100 batching defaults, no expected rates",
            defaults=generic.defaults, models={},
        )
        return DeviceChoice(generic, devices[0], model, len(devices), devices)
    if not profile.matches(model):
        which = "the visible GPU" if len(names) == 1 else f"the selected GPU{'s' if len(indices) > 1 else ''}"
        raise DeviceError(
            f"--gpu {gpu} does not match {which} {model!r}; use --gpu auto "
            "(or the profile that names this GPU)"
        )
    return DeviceChoice(profile, devices[0], model, len(devices), devices)


def _refuse_gpus_on_cpu(gpus: str, why: str = "--gpu cpu runs on the CPU") -> None:
    if str(gpus).strip() != "1":
        raise ConfigError(f"--gpus {gpus} selects CUDA devices, but {why}; for several backends on the "
                          "CPU use --instances N")
