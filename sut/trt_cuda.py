"""Which CUDA the installed TensorRT wheel is built for, which CUDA the NVIDIA driver and
torch run, and the one-line errors and install advice that follow from them.

`pip install tensorrt` resolves to NVIDIA's metapackage, which pulls the wheels of its
default CUDA major: `tensorrt_cu<major>` (the `tensorrt` module), `tensorrt_cu<major>_bindings`
and `tensorrt_cu<major>_libs` (NVIDIA/TensorRT python/packaging/*/CMakeLists.txt name them
`${moduleName}_cu${CUDAToolkit_VERSION_MAJOR}...`). TensorRT 11's default is CUDA 13, which
needs a CUDA 13 driver; on an older one TensorRT cannot initialise CUDA, its
createInferBuilder/createInferRuntime return null, and the Python binding's
`py::init([](ILogger& logger) { return nvinfer1::createInferRuntime(logger); })` (pyCore.cpp)
turns that into `TypeError: pybind11::init(): factory function returned nullptr`.
No Python attribute of the `tensorrt` module says its CUDA build, so the distribution names
do. TensorRT from a tar file or a container has none: its build is then unknown and only
the error after the fact can say what probably went wrong.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
from dataclasses import dataclass
from typing import Any

from plumbing.errors import BackendError, one_line

log = logging.getLogger(__name__)

# Oldest driver branch of each CUDA major (CUDA minor-version compatibility), for advice only:
# the check itself compares CUDA versions, which the driver reports directly.
DRIVER_BRANCH = {12: "R525", 13: "R580"}
KNOWN_CUDA_MAJORS = (12, 13)
NULLPTR = "factory function returned nullptr"
_TRT_DIST = re.compile(r"tensorrt-cu(\d+)(?:-libs|-bindings)?")


def _distribution_names() -> list[str]:
    """Names of the installed distributions that look like TensorRT's."""
    names = []
    for dist in importlib.metadata.distributions():
        try:
            name = dist.metadata["Name"]
        except Exception:  # a broken install's metadata: not ours to judge
            continue
        if name and name.lower().startswith("tensorrt"):
            names.append(name)
    return names


def tensorrt_cuda_builds(names: list[str] | None = None) -> tuple[int, ...]:
    """CUDA majors of the installed tensorrt-cu<N>[-libs|-bindings] wheels, sorted; empty
    where TensorRT came from elsewhere (tar file, container)."""
    majors = set()
    for name in _distribution_names() if names is None else names:
        match = _TRT_DIST.fullmatch(re.sub(r"[-_.]+", "-", name).lower())
        if match:
            majors.add(int(match.group(1)))
    return tuple(sorted(majors))


def cuda_major(version: str | None) -> int | None:
    """12 for "12.8"; None for a CPU-only torch (torch.version.cuda is None)."""
    try:
        return int(str(version).split(".")[0]) if version else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Driver:
    cuda: tuple[int, int] | None  # the newest CUDA the driver runs, e.g. (12, 8)
    version: str | None  # the display driver, e.g. "570.86.15"

    def label(self) -> str:
        cuda = f"CUDA {self.cuda[0]}.{self.cuda[1]}" if self.cuda else None
        if self.version:
            return f"driver {self.version}" + (f" (runs up to {cuda})" if cuda else "")
        return f"driver that runs up to {cuda}" if cuda else "driver of unknown version"


def _split_cuda(value: int) -> tuple[int, int] | None:
    # cuDriverGetVersion's encoding, which NVML shares: 1000 * major + 10 * minor.
    return (value // 1000, (value % 1000) // 10) if value > 0 else None


def driver_info(torch: Any) -> Driver:
    """The driver's CUDA version and display version; None for what cannot be read.

    torch has no public driver query; some builds have the private
    torch._C._cuda_getDriverVersion (cuDriverGetVersion), used where present (torch 2.14.1
    has none). Otherwise NVML (nvidia-ml-py, an install requirement) answers:
    nvmlSystemGetCudaDriverVersion (1000 * major + 10 * minor) and nvmlSystemGetDriverVersion."""
    cuda = None
    getter = getattr(getattr(torch, "_C", None), "_cuda_getDriverVersion", None)
    if callable(getter):
        try:
            cuda = _split_cuda(int(getter()))
        except Exception:
            cuda = None
    version = None
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            if cuda is None:
                cuda = _split_cuda(int(pynvml.nvmlSystemGetCudaDriverVersion()))
            raw = pynvml.nvmlSystemGetDriverVersion()
            version = raw.decode() if isinstance(raw, bytes) else str(raw)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML (or no driver): the check is skipped, not failed
        pass
    return Driver(cuda, version)


def install_command(cuda: int | None) -> str:
    if cuda is None:
        return "pip install tensorrt-cu12 or tensorrt-cu13 (the CUDA major of your CUDA torch build)"
    return f"pip install tensorrt-cu{cuda}"


def _torch_cuda() -> str | None:
    """torch.version.cuda of this process ("12.8"; None for a CPU-only build)."""
    import torch

    return torch.version.cuda


def trt_missing(torch_cuda: str | None = None) -> str:
    """TensorRT is not installed: the wheel to install for this torch build's CUDA major
    (`torch_cuda`, else this process's torch)."""
    torch_cuda = torch_cuda if torch_cuda is not None else _torch_cuda()
    major = cuda_major(torch_cuda)
    if major is None:
        why = "this torch is CPU-only, so install a CUDA torch first"
    else:
        branch = DRIVER_BRANCH.get(major)
        why = f"TensorRT for CUDA {major}, as this torch is built for CUDA {torch_cuda}" + (
            f"; it needs an NVIDIA driver {branch} or newer" if branch else "")
    return (f"TensorRT is not installed: {install_command(major)} ({why}; plain `pip install tensorrt` "
            "picks NVIDIA's default CUDA build, CUDA 13 for TensorRT 11); use --backend torch meanwhile")


@dataclass(frozen=True)
class CudaStack:
    """What runs under TensorRT: torch's CUDA build, the driver, TensorRT's CUDA build(s)."""

    torch_cuda: str | None
    driver: Driver
    trt_builds: tuple[int, ...]

    @property
    def trt_major(self) -> int | None:
        return self.trt_builds[0] if len(self.trt_builds) == 1 else None

    def _build_label(self) -> str:
        if self.trt_major is not None:
            return f"CUDA {self.trt_major} (tensorrt-cu{self.trt_major})"
        if self.trt_builds:
            return "several CUDA builds at once (" + ", ".join(f"tensorrt-cu{m}" for m in self.trt_builds) + ")"
        return "an unknown CUDA (not a tensorrt-cu<N> wheel)"

    def _advice(self) -> str:
        """The wheel that fits both torch and the driver, with the old wheels out of the way."""
        torch_major = cuda_major(self.torch_cuda)
        driver_major = self.driver.cuda[0] if self.driver.cuda else None
        candidates = [m for m in (torch_major, driver_major) if m is not None]
        target = min(candidates) if candidates else None
        old = " ".join(f"tensorrt-cu{m} tensorrt-cu{m}-libs tensorrt-cu{m}-bindings" for m in self.trt_builds
                       if m != target)
        remove = f"pip uninstall -y tensorrt {old}, then " if old else ""
        newer = [m for m in self.trt_builds if m in DRIVER_BRANCH and (driver_major or 0) < m]
        update = f", or update the driver to {DRIVER_BRANCH[newer[0]]} or newer" if newer else ""
        return f"{remove}{install_command(target)}{update}"

    def check(self) -> None:
        """BackendError (one line) where TensorRT's CUDA build is newer than the driver: its
        Builder and Runtime could not even start."""
        if self.trt_major is None or self.driver.cuda is None or self.driver.cuda[0] >= self.trt_major:
            return
        raise BackendError(
            f"TensorRT here is built for {self._build_label()} but the NVIDIA {self.driver.label()}: "
            f"TensorRT cannot start; {self._advice()}"
        )

    def warnings(self) -> list[str]:
        torch_major = cuda_major(self.torch_cuda)
        if self.trt_major is not None and torch_major is not None and torch_major != self.trt_major:
            return [f"TensorRT is built for CUDA {self.trt_major} and torch for CUDA {self.torch_cuda}: two "
                    f"CUDA runtimes in one process; tensorrt-cu{torch_major} matches torch"]
        return []

    def failed_to_start(self, what: str, exc: BaseException, trt_errors: str) -> BackendError:
        """The one-line error for trt.Builder/trt.Runtime returning null (pybind11's TypeError)."""
        said = f"; TensorRT said: {trt_errors}" if trt_errors else ""
        return BackendError(
            f"TensorRT's {what} could not start ({one_line(str(exc))}), usually a TensorRT CUDA build newer "
            f"than the driver: TensorRT is built for {self._build_label()}, the NVIDIA {self.driver.label()}, "
            f"torch for CUDA {self.torch_cuda or 'none (CPU-only)'}; {self._advice()}{said}"
        )

    def info(self) -> dict[str, Any]:
        return {
            "tensorrt_cuda_build": [f"cu{m}" for m in self.trt_builds],
            "torch_cuda": self.torch_cuda,
            "driver": self.driver.version,
            "driver_cuda": f"{self.driver.cuda[0]}.{self.driver.cuda[1]}" if self.driver.cuda else None,
        }


def cuda_stack(torch: Any) -> CudaStack:
    return CudaStack(_torch_cuda(), driver_info(torch), tensorrt_cuda_builds())


def import_torch_and_tensorrt() -> tuple[Any, Any]:
    """(torch, tensorrt), torch imported first (tensorrt before torch can segfault torch's CUDA
    kernels later: pytorch/pytorch#103852); a missing or broken TensorRT is the one-line
    BackendError with the wheel to install."""
    import torch

    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError(trt_missing()) from exc
    except OSError as exc:  # the package is there but NVIDIA's libraries are not
        raise BackendError(f"TensorRT is installed but failed to load: {one_line(str(exc))}") from exc
    return torch, trt


def start(factory: Any, logger: Any, what: str) -> Any:
    """`factory(logger)` (trt.Builder, trt.Runtime), with pybind11's null-factory TypeError
    turned into the one-line BackendError that names the driver and the wheel to install.
    Other TypeErrors are bugs here and propagate."""
    mark = logger.error_count()
    try:
        return factory(logger)
    except TypeError as exc:
        if NULLPTR not in str(exc):
            raise
        import torch

        raise cuda_stack(torch).failed_to_start(what, exc, logger.errors_since(mark)) from exc
