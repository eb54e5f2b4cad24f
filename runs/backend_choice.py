"""Which backend a run uses, and the refusals before it starts: the user's --backend, or
the default for the device and precision, checked against what each backend declares it
runs (sut/backends/__init__.py). No backend is named here except in the default order's
words for --help."""

from __future__ import annotations

from typing import Any, Protocol

from plumbing.errors import BackendError, ConfigError, DeviceError
from sut.backends import CPU, CUDA, DEFAULT_ORDER, REGISTRY, BackendInfo, backend_info


class BackendRequest(Protocol):
    """What the choice reads of a run's request (runs.config.CliRequest)."""

    backend: str | None
    precision: str
    compile: str | None
    staging: str | None


# default_backend's rule in words, for --help (tests/harness/test_help.py holds them together).
DEFAULT_BACKEND_RULE = ("on the CPU onnxruntime for fp32 and int8 where it is installed, else torch; "
                        "on CUDA GPUs tensorrt for int8, torch otherwise")


def default_backend(precision: str, on_cpu: bool) -> str:
    """The one rule for the backend a run or a sweep uses when none is named: the first of
    the device kind's DEFAULT_ORDER that runs the precision there and is installed."""
    kind = CPU if on_cpu else CUDA
    runs = [REGISTRY[n] for n in DEFAULT_ORDER[kind] if REGISTRY[n].runs_on(kind, precision)]
    for info in runs:
        if info.package is None or _installed(info.package):
            return info.name
    if runs:  # it runs here once a package is installed
        hints = "; ".join(info.install for info in runs)
        if kind == CUDA:
            raise BackendError(f"no {precision.upper()} runtime for CUDA GPUs is installed. {hints}; "
                               f"or measure the {precision.upper()} CPU baseline with --gpu cpu")
        raise BackendError(hints)
    # Nothing runs it on this kind of device: the last choice refuses it and says why.
    return DEFAULT_ORDER[kind][-1]


def choose_backend(request: BackendRequest, device: Any) -> str:
    """The user's --backend, or the best available for the device and precision. Never a
    silent change of precision: where nothing installed runs it, say what to install. Every
    refusal is built from the backends' own declarations (sut/backends/__init__.py)."""
    precision, on_cpu = request.precision, device.device == "cpu"
    kind = CPU if on_cpu else CUDA
    name = request.backend or default_backend(precision, on_cpu)
    info = backend_info(name)
    # Fail here, before any output folder, dataset or log line, rather than at backend load.
    if on_cpu and not info.runs.get(CPU):
        raise DeviceError(f"the {name} backend needs a CUDA GPU; on the CPU use --backend "
                          f"{_first_that_runs(CPU, precision) or DEFAULT_ORDER[CPU][0]}")
    if precision not in info.precisions():
        raise BackendError(f"the {name} backend runs {_and(info.precisions())}; use "
                           f"{_who_runs(precision, name)} for {precision}")
    if info.package and not _installed(info.package):
        raise BackendError(info.install)
    if not info.runs_on(kind, precision):
        if on_cpu:
            raise DeviceError(f"--precision {precision} needs a CUDA GPU (this run is on the CPU); "
                              f"use --precision {'/'.join(info.runs[CPU])} on the CPU")
        raise DeviceError(f"the {name} backend runs {precision} on the CPU only; use --gpu cpu or "
                          f"{_who_runs(precision, name)}")
    _check_backend_flags(request, info, on_cpu)
    return name


def _first_that_runs(kind: str, precision: str) -> str | None:
    return next((n for n in DEFAULT_ORDER[kind] if REGISTRY[n].runs_on(kind, precision)), None)


def _who_runs(precision: str, besides: str) -> str:
    """'--backend onnxruntime (CPU or GPU) or --backend tensorrt (GPU)': the backends that
    run `precision`, other than `besides` and the instant-answer one."""
    options = []
    for other in REGISTRY.values():
        kinds = [label for kind, label in ((CPU, "CPU"), (CUDA, "GPU")) if other.runs_on(kind, precision)]
        # Not the instant-answer backend nor a remote server's: neither runs it here.
        if other.name != besides and other.infers and not other.remote and kinds:
            options.append(f"--backend {other.name} ({' or '.join(kinds)})")
    return " or ".join(options) or "another precision"


def _and(items: tuple[str, ...]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _check_backend_flags(request: BackendRequest, info: BackendInfo, on_cpu: bool) -> None:
    """Flags that only some backends act on: refused elsewhere rather than silently dropped."""
    if request.compile not in (None, "none") and not info.compiles:
        compilers = " or ".join(f"--backend {n}" for n, i in REGISTRY.items() if i.compiles)
        raise ConfigError(f"--compile {request.compile} is torch.compile, which the {info.name} backend does not "
                          f"use; drop --compile or use {compilers}")
    if request.staging is not None and (on_cpu or not info.device_staging):
        where = "on the CPU" if on_cpu else f"with the {info.name} backend"
        stagers = _and(tuple(n for n, i in REGISTRY.items() if i.device_staging))
        raise ConfigError(f"--staging applies to CUDA runs of the {stagers} backends; {where} the "
                          "performance set is always in host memory: drop --staging")


def _installed(module: str) -> bool:
    import importlib.util  # here, so that tests can stand in for it

    return importlib.util.find_spec(module) is not None
