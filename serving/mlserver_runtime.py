"""An MLServer runtime that serves deepgap's own network through ONNX Runtime.

The model-settings file (written by serving/mlserver_launch.py) declares the input
("input", [-1,3,S,S]) and output ("logits", [-1,classes]) so MLServer's model metadata is
exact, and `parameters.extra` carries the ModelSpec fields:

    {"model": "resnet18", "precision": "fp32", "weights": "seeded", "seed": 0,
     "image_size": 64, "num_classes": 1000, "threads": null, "cache_dir": null,
     "instant": false, "input_datatype": "FP32", "delay_ms": 0}

load() builds the network with sut.backends.onnxruntime_backend.OnnxRuntimeBackend, the
same export and session options as `--backend onnxruntime`, so a KServe run against this
server can be checked sample for sample against a local run. `instant` answers zero
logits without running anything: what is left is the protocol and the server's own cost,
the ceiling a client measures against it. `input_datatype` FP16 takes FP16 images and
runs them in fp32 (what a client's FP16 conversion path needs to be checked against).
`delay_ms` holds every answer back that long (without blocking other requests): a slow
server on demand, so tests can have requests in flight when they kill or stall it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse

from sut.backends.base import BackendOptions, ModelSpec
from sut.onnx_export import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

SERVED_DATATYPES = ("FP32", "FP16")  # what a real (not instant) model takes
_NUMPY = {"FP32": np.float32, "FP16": np.float16, "UINT8": np.uint8}


def spec_from_extra(extra: dict[str, Any]) -> ModelSpec:
    """The ModelSpec that `parameters.extra` describes (fp32 only: ONNX Runtime's path)."""
    return ModelSpec(name=str(extra.get("model", "resnet50")), precision=str(extra.get("precision", "fp32")),
                     weights=str(extra.get("weights", "seeded")), seed=int(extra.get("seed", 0)),
                     image_size=int(extra.get("image_size", 224)), num_classes=int(extra.get("num_classes", 1000)))


class DeepgapResNet(MLModel):
    async def load(self) -> bool:
        self._backend = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        params = self.settings.parameters
        extra = dict(params.extra or {}) if params is not None else {}
        self._spec = spec_from_extra(extra)
        self._instant = bool(extra.get("instant", False))
        self._datatype = str(extra.get("input_datatype", "FP32"))
        self._delay_s = float(extra.get("delay_ms") or 0) / 1e3
        if self._datatype not in _NUMPY or (not self._instant and self._datatype not in SERVED_DATATYPES):
            raise ValueError(f"input_datatype {self._datatype!r}: the network takes {' or '.join(SERVED_DATATYPES)}")
        # One worker thread: ONNX Runtime already spreads one batch over the cores, and the
        # event loop stays free to decode the next requests while a batch runs.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepgap-ort")
        if not self._instant:
            from sut.backends.onnxruntime_backend import OnnxRuntimeBackend

            threads = extra.get("threads")
            options = BackendOptions(device="cpu", max_batch=1, threads=int(threads) if threads else None,
                                     extra={"cache_dir": extra.get("cache_dir")})
            backend = OnnxRuntimeBackend(self._spec, options)
            await asyncio.get_running_loop().run_in_executor(self._executor, backend.load)
            self._backend = backend
        log.info("deepgap runtime %s ready: %s %d px %s%s", self.name, self._spec.name, self._spec.image_size,
                 self._datatype, " (instant: zero logits)" if self._instant else "")
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        batch = self._decode(payload)
        if self._delay_s:
            await asyncio.sleep(self._delay_s)
        if self._backend is None:
            logits = np.zeros((batch.shape[0], self._spec.num_classes), dtype=np.float32)
        else:
            images = batch.astype(np.float32, copy=False)
            logits = await asyncio.get_running_loop().run_in_executor(self._executor, self._backend.logits, images)
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 outputs=[NumpyCodec.encode_output(OUTPUT_NAME, logits)])

    async def unload(self) -> bool:  # also after a failed load()
        if getattr(self, "_backend", None) is not None:
            self._backend.close()
        if getattr(self, "_executor", None) is not None:
            self._executor.shutdown(wait=False)
        return True

    def _decode(self, payload: InferenceRequest) -> np.ndarray:
        """The request's one image tensor, checked against what the metadata declares: a
        wrong request is refused with a message, never run on a misread tensor."""
        size = self._spec.image_size
        declared = f"'{INPUT_NAME}' {self._datatype} [-1,3,{size},{size}]"
        if len(payload.inputs) != 1 or payload.inputs[0].name != INPUT_NAME:
            names = [i.name for i in payload.inputs]
            raise InferenceError(f"model {self.name} takes one input {declared}, got {names}")
        request_input = payload.inputs[0]
        shape = list(request_input.shape)
        if request_input.datatype != self._datatype or len(shape) != 4 or shape[1:] != [3, size, size]:
            raise InferenceError(f"model {self.name} takes input {declared}, got {request_input.datatype} {shape}")
        try:
            return NumpyCodec.decode_input(request_input)
        except (ValueError, TypeError) as exc:
            raise InferenceError(f"model {self.name}: unreadable input data ({exc})") from None
