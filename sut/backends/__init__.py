"""Backend registry: one entry per backend, saying what it runs and what it needs.

Each entry is the backend's declaration: the precisions it runs on the CPU and on CUDA
GPUs, the package it imports and how to install it, and which run options it acts on. The
configuration builds the CLI's choices, the default-backend rule and its refusals from
these entries, so adding a backend is its module plus one entry here. The classes are
imported lazily: a runtime that is not installed is never imported.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from plumbing.errors import ConfigError
from sut.backends.base import Backend, BackendOptions, ModelSpec

CPU, CUDA = "cpu", "cuda"
# Static here (the registry imports no torch); the backend's own error names the one wheel
# that matches this torch (sut/trt_cuda.py:trt_missing).
TENSORRT_INSTALL = ("TensorRT is not installed: pip install tensorrt-cu12 or tensorrt-cu13, the CUDA major of "
                    "torch.version.cuda (TensorRT 10 or newer, from NVIDIA's package index; plain `pip install "
                    "tensorrt` picks CUDA 13, which needs an R580+ driver)")

KSERVE_INSTALL = "tritonclient is not installed: pip install 'tritonclient[grpc,http]'"


@dataclass(frozen=True)
class BackendInfo:
    name: str
    module: str
    class_name: str
    runs: dict[str, tuple[str, ...]]  # device kind (CPU, CUDA) -> precisions, in the order messages name them
    package: str | None = None  # the import it needs beyond deepgap's own requirements
    install: str = ""  # the one-line hint when `package` is missing
    device_staging: bool = False  # keeps the performance set in GPU memory on CUDA (--staging applies)
    compiles: bool = False  # acts on --compile (torch.compile)
    infers: bool = True  # False: answers without inference (no calibration, no accuracy gate)
    int8_cpu_paths: bool = False  # its int8 on the CPU takes --int8-cpu-path (sut/cpu_isa.py)
    fp32_reference: bool = False  # its fp32 run is the FP32 reference the accuracy rule compares with
    # What it builds depends on --max-batch (a TensorRT engine's profile and tactics): the
    # accuracy gate builds it at the run's max batch, so it checks the artefact that is timed.
    artefact_depends_on_max_batch: bool = False
    # Answers from a server over the network: no local device, power or accuracy gate.
    remote: bool = False

    def runs_on(self, kind: str, precision: str) -> bool:
        return precision in self.runs.get(kind, ())

    def precisions(self) -> tuple[str, ...]:
        """Every precision it runs anywhere, CUDA's order first."""
        return tuple(dict.fromkeys((*self.runs.get(CUDA, ()), *self.runs.get(CPU, ()))))


_ALL = ("fp32", "fp16", "bf16", "int8")
REGISTRY: dict[str, BackendInfo] = {info.name: info for info in (
    BackendInfo("torch", "sut.backends.torch_backend", "TorchBackend",
                {CPU: ("fp32",), CUDA: ("fp32", "fp16", "bf16")}, device_staging=True, compiles=True,
                fp32_reference=True),
    BackendInfo("onnxruntime", "sut.backends.onnxruntime_backend", "OnnxRuntimeBackend",
                {CPU: ("fp32", "int8"), CUDA: ("fp32", "int8")}, package="onnxruntime",
                install="onnxruntime is not installed: pip install onnxruntime", int8_cpu_paths=True),
    BackendInfo("tensorrt", "sut.backends.tensorrt_backend", "TensorRTBackend",
                {CUDA: ("fp32", "fp16", "int8")}, package="tensorrt", install=TENSORRT_INSTALL,
                device_staging=True, artefact_depends_on_max_batch=True),
    BackendInfo("null", "sut.backends.null_backend", "NullBackend", {CPU: _ALL, CUDA: _ALL}, infers=False),
    BackendInfo("kserve", "sut.backends.kserve_backend", "KServeBackend", {CPU: _ALL, CUDA: _ALL},
                package="tritonclient", install=KSERVE_INSTALL,
                remote=True),
)}
BACKENDS = tuple(REGISTRY)
# The default backend for a device kind: the first of these that runs the precision there
# and is installed.
DEFAULT_ORDER: dict[str, tuple[str, ...]] = {CPU: ("onnxruntime", "torch"), CUDA: ("torch", "tensorrt")}


def backend_info(name: str) -> BackendInfo:
    if name not in REGISTRY:
        raise ConfigError(f"unknown backend {name!r}; available: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def create_backend(name: str, model: ModelSpec, options: BackendOptions) -> Backend:
    info = backend_info(name)
    cls = getattr(importlib.import_module(info.module), info.class_name)
    return cls(model, options)
