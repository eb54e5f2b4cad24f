"""Backend registry: name -> class, imported lazily so unused runtimes need not be installed."""

from __future__ import annotations

import importlib

from plumbing.errors import ConfigError
from sut.backends.base import Backend, BackendOptions, ModelSpec

_REGISTRY = {
    "torch": ("sut.backends.torch_backend", "TorchBackend"),
    "onnxruntime": ("sut.backends.onnxruntime_backend", "OnnxRuntimeBackend"),
    "tensorrt": ("sut.backends.tensorrt_backend", "TensorRTBackend"),
    "null": ("sut.backends.null_backend", "NullBackend"),
}


def create_backend(name: str, model: ModelSpec, options: BackendOptions) -> Backend:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backend {name!r}; available: {', '.join(_REGISTRY)}")
    module_name, class_name = _REGISTRY[name]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(model, options)
