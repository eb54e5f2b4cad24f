"""Test helpers around the TensorRT stand-in (tests/sut/fake_tensorrt.py): a view of the
device memory an engine reads and writes, a GPU as load() sees it where there is none, the
CUDA stack sut/trt_cuda.py finds, and an int8 calibration of the right shape."""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import torch


_TYPESTR = {"FLOAT": "<f4", "HALF": "<f2"}  # trt.DataType name -> __cuda_array_interface__ typestr


class _CudaArray:
    def __init__(self, ptr: int, shape: tuple, dtype: str) -> None:
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": _TYPESTR[dtype], "data": (ptr, False),
                                         "version": 2}


def device_view(ptr: int, shape: tuple, dtype: str) -> torch.Tensor:
    """A CUDA tensor over memory the backend owns (what TensorRT reads and writes)."""
    return torch.as_tensor(_CudaArray(ptr, shape, dtype), device="cuda")


def fake_gpu(monkeypatch: Any, name: str = "NVIDIA Fake GPU") -> None:
    """Where no GPU is visible, the torch.cuda queries load() makes answer as on one (load
    only: nothing is allocated on a device). A visible GPU is left as it is."""
    if torch.cuda.is_available():
        return
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))


def cuda_stack(monkeypatch: Any, torch_cuda: str | None = None, driver: tuple[int, int] | None = None,
               driver_version: str | None = None, wheels: tuple[str, ...] = ()) -> None:
    """What sut/trt_cuda.py finds: torch's CUDA, the driver, the installed TensorRT wheels."""
    import sut.trt_cuda as trt_cuda

    # Not torch.version.cuda itself: torchvision compares it with its own build on import.
    monkeypatch.setattr(trt_cuda, "_torch_cuda", lambda: torch_cuda)
    monkeypatch.setattr(trt_cuda, "_distribution_names", lambda: list(wheels))
    monkeypatch.setattr(trt_cuda, "driver_info", lambda torch_module: trt_cuda.Driver(driver, driver_version))


def calibration_for(fp32_path: Any, amax: float = 4.0) -> Any:
    """A calibration of the right shape for the fake (which computes in fp32 anyway): one
    amax for every tensor, max |w| / 127 per output channel for every Conv/Gemm weight."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(fp32_path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    tensors = [v.name for v in graph.input] + [out for node in graph.node for out in node.output]
    scales = {}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm"):
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            axis = 0 if node.op_type == "Conv" or trans_b else 1
            weight = np.moveaxis(inits[node.input[1]], axis, 0)
            scales[node.input[1]] = np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1) / 127.0
    return types.SimpleNamespace(activation_amax=dict.fromkeys(tensors, amax), weight_scales=scales,
                                 cache_hash="fa4e" * 4)
