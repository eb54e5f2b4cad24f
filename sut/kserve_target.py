"""A remote KServe v2 model: where it is, whether it accepts what this run sends, and the
two protocol clients that reach it.

`KServeTarget` is the `--backend kserve` settings (`BackendOptions.extra["kserve"]`),
checked before anything connects. `check_remote_model` compares what the server says its
model takes (model metadata, and Triton's model config where the server has that API) with
what the run sends, and refuses a mismatch in one line that names both sides.

`GrpcTransport` and `HttpTransport` send one request each as a `Call` that finishes
exactly once: by the answer, an error, or its deadline (timeout_s plus a short grace), so
no wait is unbounded. gRPC uses tritonclient's callback API (thread-safe). HTTP uses
tritonclient.http.aio on an event loop thread of its own: tritonclient.http's gevent
client may be used by one thread only, and the pipeline sends from one thread and reaps on
another. The backend (sut/backends/kserve_backend.py) drives them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from plumbing.errors import BackendError, ConfigError, first_line
from sut.backends.base import ModelSpec
from sut.onnx_export import OUTPUT_NAME

log = logging.getLogger(__name__)

PROTOCOLS = ("grpc", "http")
DEFAULT_TIMEOUT_S = 30.0
# Connecting and each metadata call wait this long at most: an unreachable server is known at once.
DEFAULT_CONNECT_TIMEOUT_S = 5.0
_CERT_KEYS = ("root_certificates", "private_key", "certificate_chain")
_KEYS = ("endpoint", "protocol", "model_name", "model_version", "ssl", *_CERT_KEYS, "timeout_s",
         "connect_timeout_s")
# Input datatypes deepgap can send exactly. UINT8 is refused: the staged samples are
# normalised float32 pixels, which have no exact uint8 form (sut/kserve_backend.py).
INPUT_DATATYPES = ("FP32", "FP16")
OUTPUT_DATATYPES = ("FP32", "FP16")
# A request's callback comes with its deadline; waiting this much longer covers the hop to
# the waiting thread without ever waiting unboundedly.
GRACE_S = 2.0
_TIMED_OUT = "timed out"


@dataclass(frozen=True)
class KServeTarget:
    endpoint: str  # "host:port" (HTTP may add a base path: "host:port/prefix")
    protocol: str = "grpc"
    model_name: str = ""
    model_version: str = ""  # "": the server's default version
    ssl: bool = False
    root_certificates: str | None = None
    private_key: str | None = None
    certificate_chain: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S  # per request
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"kserve protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        self.host_port()  # validates the endpoint
        if not self.model_name:
            raise ConfigError("kserve needs a model_name (the name the server serves the model under)")
        for name in ("timeout_s", "connect_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ConfigError(f"kserve {name} must be a positive number of seconds, got {value!r}")
        for name in _CERT_KEYS:
            path = getattr(self, name)
            if path is not None and not self.ssl:
                raise ConfigError(f"kserve {name} is given but ssl is off: the connection would not use it")
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"kserve {name} {path}: no such file")

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any] | None, default_model: str = "") -> KServeTarget:
        """From `BackendOptions.extra["kserve"]`; `model_name` defaults to `default_model`."""
        values = dict(extra or {})
        unknown = sorted(set(values) - set(_KEYS))
        if unknown:
            raise ConfigError(f"unknown kserve setting {', '.join(unknown)}; known: {', '.join(_KEYS)}")
        if not values.get("endpoint"):
            raise ConfigError("kserve needs an endpoint (host:port of the inference server)")
        values["endpoint"] = str(values["endpoint"]).strip()
        values["model_name"] = str(values.get("model_name") or default_model)
        values["model_version"] = str(values.get("model_version") or "")
        values["ssl"] = bool(values.get("ssl", False))
        values = {key: value for key, value in values.items() if value is not None}
        timeout = values.get("timeout_s", DEFAULT_TIMEOUT_S)
        values.setdefault("connect_timeout_s", min(DEFAULT_CONNECT_TIMEOUT_S, timeout))
        return cls(**values)

    def host_port(self) -> tuple[str, int, str]:
        """(host, port, base path) of the endpoint; ConfigError for anything else."""
        text = self.endpoint
        bad = f"kserve endpoint {text!r} is not host:port"
        if "://" in text:
            raise ConfigError(f"{bad}: leave out the scheme (protocol and ssl choose it)")
        address, slash, path = text.partition("/")
        if slash and self.protocol != "http":
            raise ConfigError(f"{bad}: a base path ('/{path}') applies to http only")
        if address.startswith("["):  # [IPv6]:port
            host, close, rest = address[1:].partition("]")
            if not close or not rest.startswith(":"):
                raise ConfigError(bad)
            port_text = rest[1:]
        else:
            host, colon, port_text = address.rpartition(":")
            if not colon:
                raise ConfigError(f"{bad}: no port")
        if not host or any(c.isspace() for c in host) or (":" in host and not address.startswith("[")):
            raise ConfigError(f"{bad}: bad host {host!r} (an IPv6 address goes in brackets: [::1]:8001)")
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ConfigError(f"{bad}: port {port_text!r} is not 1..65535")
        return host, int(port_text), path

    @property
    def where(self) -> str:  # how messages name the server: 'host:port (grpc)'
        return f"{self.endpoint} ({self.protocol})"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 for a variable dimension

    def text(self) -> str:
        return f"'{self.name}' {self.datatype} [{','.join(str(d) for d in self.shape)}]"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class RemoteModel:
    """The served model as this run uses it."""

    name: str
    versions: tuple[str, ...]
    platform: str
    input: TensorSpec
    output: TensorSpec
    # Rows one request may carry: Triton's max_batch_size, or the fixed batch dimension;
    # None where the server states no limit (MLServer has no model config API).
    max_rows: int | None


def _tensors(metadata: Mapping[str, Any], key: str) -> list[TensorSpec]:
    tensors = []
    for item in metadata.get(key) or []:
        try:
            # gRPC metadata as JSON carries int64 dims as strings; int() takes both.
            shape = tuple(int(d) for d in item.get("shape") or [])
        except (TypeError, ValueError):
            raise BackendError(f"the server's model metadata has a bad {key} shape {item.get('shape')!r}") from None
        tensors.append(TensorSpec(str(item.get("name", "")), str(item.get("datatype", "")), shape))
    return tensors


def _config_max_batch(config: Mapping[str, Any] | None) -> int | None:
    if not config:
        return None
    value = config.get("max_batch_size")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def check_remote_model(target: KServeTarget, metadata: Mapping[str, Any], config: Mapping[str, Any] | None,
                       spec: ModelSpec, max_batch: int) -> RemoteModel:
    """The served model if it takes [N,3,S,S] FP32/FP16 NCHW and answers [N,classes]
    FP32/FP16 logits for up to `max_batch` rows; else BackendError naming the difference."""
    who = f"model {target.model_name} on {target.where}"
    size = spec.image_size
    sends = f"[N,3,{size},{size}] (--image-size {size})"
    inputs, outputs = _tensors(metadata, "inputs"), _tensors(metadata, "outputs")
    if len(inputs) != 1:
        names = ", ".join(t.text() for t in inputs) or "none"
        raise BackendError(f"{who} takes {len(inputs)} inputs ({names}); deepgap sends one image tensor {sends}")
    tensor = inputs[0]
    takes = f"{who} takes input {tensor.text()}"
    if len(tensor.shape) != 4:
        raise BackendError(f"{takes}; this run sends {sends}: the model must take a batch dimension "
                           "(max_batch_size > 0 on Triton) and NCHW images")
    batch_dim, channels, height, width = tensor.shape
    if (channels, height, width) != (3, size, size):
        layout = " (it looks NHWC; deepgap sends NCHW)" if tensor.shape[3] == 3 and channels != 3 else ""
        raise BackendError(f"{takes}; this run sends {sends}{layout}")
    if tensor.datatype == "UINT8":
        raise BackendError(f"{takes}; deepgap sends preprocessed (normalised float) images, which have no "
                           f"exact UINT8 form: serve a model that takes {' or '.join(INPUT_DATATYPES)}")
    if tensor.datatype not in INPUT_DATATYPES:
        raise BackendError(f"{takes}; deepgap sends {' or '.join(INPUT_DATATYPES)} images")
    config_rows = _config_max_batch(config)
    if batch_dim != -1:
        if not batch_dim == max_batch == 1:  # a fixed batch fits only runs of single-sample batches
            raise BackendError(f"{takes}: a fixed batch of {batch_dim}; this run sends batches of 1..{max_batch} "
                               "(serve it with a variable batch dimension)")
        max_rows: int | None = batch_dim
    else:
        max_rows = config_rows if config_rows and config_rows > 0 else None
    if max_rows is not None and max_batch > max_rows:
        raise BackendError(f"{who} takes at most {max_rows} rows a request (max_batch_size); this run sends up to "
                           f"{max_batch} (--max-batch {max_batch})")
    output = _choose_output(outputs, who)
    if len(output.shape) != 2 or output.shape[1] not in (-1, spec.num_classes):
        raise BackendError(f"{who} answers output {output.text()}; deepgap needs logits [N,{spec.num_classes}]")
    if output.datatype not in OUTPUT_DATATYPES:
        raise BackendError(f"{who} answers output {output.text()}; deepgap reads "
                           f"{' or '.join(OUTPUT_DATATYPES)} logits")
    versions = tuple(str(v) for v in metadata.get("versions") or [])
    return RemoteModel(name=str(metadata.get("name") or target.model_name), versions=versions,
                       platform=str(metadata.get("platform") or ""), input=tensor, output=output, max_rows=max_rows)


def _choose_output(outputs: list[TensorSpec], who: str) -> TensorSpec:
    """The output named like deepgap's ONNX export ('logits'), else the only or first one."""
    if not outputs:
        raise BackendError(f"{who} declares no outputs in its metadata; deepgap needs logits [N,classes]")
    named = [t for t in outputs if t.name == OUTPUT_NAME]
    return named[0] if named else outputs[0]


# -- talking to it ---------------------------------------------------------------------

class Call:
    """One request in flight. Finished exactly once: by the answer, an error or the deadline."""

    def __init__(self, on_finish: Callable[[], None], target: KServeTarget, output_name: str) -> None:
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._on_finish = on_finish
        self._target = target
        self._output_name = output_name
        self._deadline = time.monotonic() + target.timeout_s + GRACE_S
        self._result: Any = None
        self._error: str | None = None
        self.cancel: Callable[[], Any] = lambda: None

    def finish(self, result: Any, error: str | None) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self._result, self._error = result, error
            self._done.set()
        self._on_finish()

    def wait(self) -> np.ndarray:
        """The output tensor; BackendError, one line naming the server, on any failure."""
        if not self._done.wait(max(0.0, self._deadline - time.monotonic())):
            self.cancel()
            self.finish(None, _TIMED_OUT)
        target = self._target
        if self._error == _TIMED_OUT:
            raise BackendError(f"no answer from {target.where} within {target.timeout_s:g} s (timeout_s)")
        if self._error is not None:
            raise BackendError(f"request to {target.where} failed: {self._error}")
        try:  # decoded here, on the waiting thread, to keep the client's callback short
            answer = self._result.as_numpy(self._output_name)
        except Exception as exc:
            raise BackendError(f"unreadable answer from {target.where}: {first_line(exc)}") from None
        if answer is None:
            raise BackendError(f"the answer from {target.where} has no output {self._output_name!r}")
        return answer


class GrpcTransport:
    def __init__(self, target: KServeTarget) -> None:
        import tritonclient.grpc as client_module

        self._module = client_module
        self._target = target
        self._client = client_module.InferenceServerClient(
            target.endpoint, ssl=target.ssl, root_certificates=target.root_certificates,
            private_key=target.private_key, certificate_chain=target.certificate_chain)

    def meta(self, method: str, *args: Any) -> Any:
        kwargs: dict[str, Any] = {"client_timeout": self._target.connect_timeout_s}
        if method.startswith("get_"):
            kwargs["as_json"] = True
        answer = getattr(self._client, method)(*args, **kwargs)
        if method == "get_model_config":
            return answer.get("config", answer)
        if method == "get_model_repository_index":
            return answer.get("models", [])
        return answer

    def prepare(self, batch: np.ndarray, model: RemoteModel) -> tuple[list[Any], list[Any]]:
        tensor = self._module.InferInput(model.input.name, list(batch.shape), model.input.datatype)
        tensor.set_data_from_numpy(batch)
        return [tensor], [self._module.InferRequestedOutput(model.output.name)]

    def submit(self, request: tuple[list[Any], list[Any]], call: Call) -> None:
        def done(result: Any, error: Any) -> None:
            if error is None:
                call.finish(result, None)
            elif "DEADLINE_EXCEEDED" in str(error.status()):
                call.finish(None, _TIMED_OUT)
            else:
                call.finish(None, first_line(error))

        target = self._target
        context = self._client.async_infer(target.model_name, request[0], done, model_version=target.model_version,
                                           outputs=request[1], client_timeout=target.timeout_s)
        call.cancel = context.cancel

    def close(self) -> None:
        self._client.close()


class HttpTransport:
    def __init__(self, target: KServeTarget, connections: int) -> None:
        import tritonclient.http.aio as client_module

        self._module = client_module
        self._target = target
        self.binary = False  # set from the server's extensions once known
        context = None
        if target.ssl:
            context = ssl.create_default_context(cafile=target.root_certificates)
            if target.certificate_chain:
                context.load_cert_chain(target.certificate_chain, target.private_key)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kserve-http", daemon=True)
        self._thread.start()

        async def make() -> Any:  # aiohttp's session belongs to the loop it is made on
            return client_module.InferenceServerClient(target.endpoint, conn_limit=connections,
                                                       conn_timeout=target.timeout_s, ssl=target.ssl,
                                                       ssl_context=context)

        try:
            self._client = self._run(make(), target.connect_timeout_s)
        except BaseException:
            self._stop_loop()
            raise

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def _run(self, coroutine: Any, timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coroutine, timeout), self._loop)
        return future.result(timeout + GRACE_S)

    def meta(self, method: str, *args: Any) -> Any:
        answer = self._run(getattr(self._client, method)(*args), self._target.connect_timeout_s)
        if method == "get_model_repository_index" and isinstance(answer, dict):
            return answer.get("models", [])
        return answer

    def prepare(self, batch: np.ndarray, model: RemoteModel) -> tuple[list[Any], list[Any]]:
        tensor = self._module.InferInput(model.input.name, list(batch.shape), model.input.datatype)
        tensor.set_data_from_numpy(batch, binary_data=self.binary)
        return [tensor], [self._module.InferRequestedOutput(model.output.name, binary_data=self.binary)]

    def submit(self, request: tuple[list[Any], list[Any]], call: Call) -> None:
        target = self._target
        # MLServer parses a JSON body only when it says so (the aio client names no type).
        content = "application/octet-stream" if self.binary else "application/json"
        coroutine = self._client.infer(target.model_name, request[0], model_version=target.model_version,
                                       outputs=request[1], headers={"Content-Type": content})
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coroutine, target.timeout_s), self._loop)

        def done(f: Any) -> None:
            if f.cancelled():
                call.finish(None, "request cancelled")
            else:
                exc = f.exception()
                call.finish(f.result() if exc is None else None, None if exc is None else why(exc))

        future.add_done_callback(done)
        call.cancel = future.cancel

    def close(self) -> None:
        try:
            self._run(self._client.close(), self._target.connect_timeout_s)
        except Exception as exc:  # closing a client to a dead server: nothing left to free
            log.debug("closing the kserve http client: %s", first_line(exc))
        self._stop_loop()


def why(exc: BaseException) -> str:
    """One line for a client error; a timeout has no message of its own."""
    return _TIMED_OUT if isinstance(exc, TimeoutError) else first_line(exc)
