"""The backend registry (sut/backends/__init__.py): each entry names a class that exists,
and the configuration's choices and refusals follow the entries."""

from __future__ import annotations

import importlib

import pytest

from runs.backend_choice import choose_backend, default_backend
from runs.config import CliRequest
from runs.device import resolve_device
from plumbing.errors import BackendError, ConfigError, DeviceError
from sut.backends import BACKENDS, CPU, CUDA, DEFAULT_ORDER, REGISTRY, backend_info
from sut.backends.base import Backend, PRECISIONS


@pytest.mark.parametrize("name", BACKENDS)
def test_each_entry_names_a_backend_class(name):
    info = REGISTRY[name]
    cls = getattr(importlib.import_module(info.module), info.class_name)  # no runtime needed to import it
    assert issubclass(cls, Backend)
    assert set(info.precisions()) <= set(PRECISIONS) and info.runs


def test_default_orders_name_registered_backends():
    for kind, order in DEFAULT_ORDER.items():
        assert kind in (CPU, CUDA) and all(name in REGISTRY for name in order)


def test_an_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown backend 'tpu'; available: torch, onnxruntime"):
        backend_info("tpu")


def test_refusals_are_built_from_the_declarations():
    cpu = resolve_device("cpu")
    with pytest.raises(BackendError, match=r"^the torch backend runs fp32, fp16 and bf16; use --backend "
                                           r"onnxruntime \(CPU or GPU\) or --backend tensorrt \(GPU\) for int8$"):
        choose_backend(CliRequest(precision="int8", backend="torch"), cpu)
    with pytest.raises(ConfigError, match="--compile default is torch.compile, which the onnxruntime backend does "
                                          "not use; drop --compile or use --backend torch"):
        choose_backend(CliRequest(backend="onnxruntime", compile="default"), cpu)
    with pytest.raises(ConfigError, match="--staging applies to CUDA runs of the torch and tensorrt backends"):
        choose_backend(CliRequest(backend="torch", staging="host"), cpu)
    with pytest.raises(DeviceError, match="the tensorrt backend needs a CUDA GPU; on the CPU use --backend onnxruntime"):
        choose_backend(CliRequest(backend="tensorrt"), cpu)


def test_the_default_is_the_first_installed_backend_of_the_order(monkeypatch):
    from runs import backend_choice

    monkeypatch.setattr(backend_choice, "_installed", lambda module: False)
    assert default_backend("fp32", on_cpu=True) == "torch"  # onnxruntime missing: the next that runs fp32
    with pytest.raises(BackendError, match="^onnxruntime is not installed: pip install onnxruntime$"):
        default_backend("int8", on_cpu=True)  # only onnxruntime runs int8 on the CPU: say what to install
    with pytest.raises(BackendError, match="no INT8 runtime for CUDA GPUs is installed. TensorRT is not installed"):
        default_backend("int8", on_cpu=False)


def test_declared_roles_match_what_each_backend_runs() -> None:
    """--int8-cpu-path goes to backends that run int8 on the CPU; exactly one backend is
    the FP32 reference, and it runs fp32 on the CPU and on CUDA (the accuracy rule and the
    gate compare with it wherever a run happens)."""
    from sut.backends import REGISTRY

    for info in REGISTRY.values():
        if info.int8_cpu_paths:
            assert info.runs_on("cpu", "int8"), info.name
    references = [info for info in REGISTRY.values() if info.fp32_reference]
    assert len(references) == 1
    assert references[0].runs_on("cpu", "fp32") and references[0].runs_on("cuda", "fp32")
