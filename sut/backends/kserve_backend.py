"""KServe v2 backend: each batch is one request to a remote Open Inference Protocol server.

Triton, KServe and MLServer answer the same v2 protocol over gRPC and HTTP; tritonclient
speaks both. The SUT and pipeline drive this backend as any other: `run_batch` sends the
rows' tensor asynchronously and returns at once, so up to `in_flight` requests are on the
wire together; `wait()` returns the top-1 class per row, the argmax of the returned logits,
computed here. Settings come from `options.extra["kserve"]` (sut/kserve_target.py).

Every wait is bounded: each request carries the per-request timeout (`timeout_s`) and its
`wait()` gives up shortly after it, so a server that dies or stalls mid-run fails the batch
with a BackendError (the pipeline then completes what is outstanding) and never hangs.

gRPC uses tritonclient's callback API (thread-safe). HTTP uses tritonclient.http.aio on an
event loop thread of its own: tritonclient.http's gevent client may be used by one thread
only, and here requests leave from the dispatcher and are reaped by the completer. Binary
tensors go over HTTP only where the server lists the binary_tensor_data extension (Triton
does; MLServer takes JSON only).
"""

from __future__ import annotations

import collections
import importlib
import importlib.metadata
import logging
import threading
import time
from typing import Any, ClassVar

import numpy as np

from plumbing.errors import BackendError, first_line
from sut.backends import KSERVE_INSTALL
from sut.backends.base import Backend, BackendOptions, DonePending, ModelSpec, staged_rows, tight_loop_rows
from sut.kserve_target import (GRACE_S, Call, GrpcTransport, HttpTransport, KServeTarget, RemoteModel,
                               check_remote_model, why)

log = logging.getLogger(__name__)

_NUMPY = {"FP32": np.float32, "FP16": np.float16}


class _KServePending:
    def __init__(self, call: Call, classes: int) -> None:
        self._call = call
        self._classes = classes

    def wait(self) -> np.ndarray:
        return np.argmax(_logits(self._call.wait(), self._classes), axis=1).astype(np.int32)

    def release(self) -> None:
        pass


def _logits(answer: Any, classes: int) -> np.ndarray:
    logits = np.asarray(answer)
    if logits.ndim != 2 or logits.shape[1] != classes:
        raise BackendError(f"the server answered logits of shape {list(logits.shape)}, expected [N,{classes}]")
    return logits


class KServeBackend(Backend):
    name: ClassVar[str] = "kserve"

    def __init__(self, model: ModelSpec, options: BackendOptions) -> None:
        super().__init__(model, options)
        self._target: KServeTarget | None = None
        self._transport: GrpcTransport | HttpTransport | None = None
        self._remote: RemoteModel | None = None
        self._server: dict[str, Any] = {}
        self._staging: np.ndarray | None = None
        # At most in_flight requests on the wire; a place frees when its request finishes.
        self._places = threading.BoundedSemaphore(max(1, options.in_flight))

    # -- lifecycle ---------------------------------------------------------------------

    def load(self) -> None:
        target = KServeTarget.from_extra(self.options.extra.get("kserve"), default_model=self.model.name)
        self._target = target
        try:
            importlib.import_module("tritonclient.grpc" if target.protocol == "grpc" else "tritonclient.http.aio")
        except ImportError:
            raise BackendError(KSERVE_INSTALL) from None
        self._close_transport()  # a second load() connects afresh
        try:
            self._connect(target)
        except BaseException:
            self._close_transport()
            raise
        log.info("kserve: model %s on %s (%s %s), input %s", target.model_name, target.where,
                 self._server.get("name"), self._server.get("version"), self._remote.input.text())

    def _connect(self, target: KServeTarget) -> None:
        try:
            if target.protocol == "grpc":
                self._transport = GrpcTransport(target)
            else:
                self._transport = HttpTransport(target, max(1, self.options.in_flight))
            live = self._transport.meta("is_server_live")
        except Exception as exc:
            raise BackendError(f"cannot reach the KServe server at {target.where}: {why(exc)}") from None
        if not live:
            raise BackendError(f"the KServe server at {target.where} answers but is not live")
        server = self._meta("get_server_metadata", what="server metadata")
        self._server = {"name": server.get("name"), "version": server.get("version"),
                        "extensions": list(server.get("extensions") or [])}
        if isinstance(self._transport, HttpTransport):
            self._transport.binary = "binary_tensor_data" in self._server["extensions"]
        version = target.model_version
        who = f"model {target.model_name!r}" + (f" version {version}" if version else "")
        try:
            ready = self._transport.meta("is_model_ready", target.model_name, version)
        except Exception as exc:
            ready, reason = False, why(exc)
        else:
            reason = "the server says it is not ready or not there"
        if not ready:
            raise BackendError(f"{who} is not served by {target.where} ({reason}){self._served_models()}")
        metadata = self._meta("get_model_metadata", target.model_name, version, what=f"{who}'s metadata")
        try:
            config = self._transport.meta("get_model_config", target.model_name, version)
        except Exception as exc:  # KServe and MLServer have no model config API; Triton has
            log.debug("kserve: no model config from %s: %s", target.where, first_line(exc))
            config = None
        self._remote = check_remote_model(target, metadata, config, self.model, max(1, self.options.max_batch))
        if self._staging is not None and self._staging.dtype != self._dtype():  # staged before load()
            self._staging = self._staging.astype(self._dtype())
        # One request at the run's largest batch: checks inference end to end before any
        # run, and takes the server's first-request costs out of the measurement.
        size = self.model.image_size
        warmup = np.zeros((max(1, self.options.max_batch), 3, size, size), dtype=self._dtype())
        try:
            _logits(self._send(warmup).wait(), self.model.num_classes)
        except BackendError as exc:
            raise BackendError(f"the warm-up request to {who} failed: {exc}") from None

    def close(self) -> None:
        self._close_transport()
        self._staging = None

    def _close_transport(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            try:
                transport.close()
            except Exception as exc:
                log.debug("kserve: closing the client: %s", first_line(exc))

    # -- staging and running -----------------------------------------------------------

    def allocate_staging(self, capacity: int) -> None:
        if capacity < 1:
            raise BackendError(f"staging capacity must be at least 1, got {capacity}")
        size = self.model.image_size
        # In the server's input datatype: FP16 is converted once here, not per request.
        self._staging = np.zeros((capacity, 3, size, size), dtype=self._dtype())

    def stage(self, rows: np.ndarray, samples: np.ndarray) -> None:
        self._require_staging()[np.asarray(rows, dtype=np.int64)] = samples

    def run_batch(self, rows: np.ndarray) -> _KServePending | DonePending:
        staging = self._require_staging()
        rows = staged_rows(rows, staging.shape[0])
        if len(rows) == 0:
            return DonePending(np.empty(0, dtype=np.int32))
        return _KServePending(self._send(np.take(staging, rows, axis=0)), self.model.num_classes)

    def logits(self, samples: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(samples, dtype=self._dtype())
        step = max(1, self.options.max_batch)
        parts = [_logits(self._send(batch[i:i + step]).wait(), self.model.num_classes)
                 for i in range(0, len(batch), step)]
        classes = self.model.num_classes
        return np.concatenate(parts).astype(np.float32) if parts else np.empty((0, classes), np.float32)

    def time_tight_loop(self, batch_size: int, iterations: int) -> float:
        staging = self._require_staging()
        rows = tight_loop_rows(batch_size, staging.shape[0], self._remote_rows())
        # One request body, built once and sent `iterations` times, up to in_flight at once.
        request = self._require_transport().prepare(np.take(staging, rows, axis=0), self._require_remote())
        outstanding: collections.deque[Call] = collections.deque()
        limit = max(1, self.options.in_flight)
        start = time.perf_counter()
        for _ in range(iterations):
            if len(outstanding) >= limit:
                outstanding.popleft().wait()
            outstanding.append(self._submit(request))
        while outstanding:
            outstanding.popleft().wait()
        return time.perf_counter() - start

    # -- reporting ---------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        target, remote = self._target, self._remote
        try:
            client_version = importlib.metadata.version("tritonclient")
        except importlib.metadata.PackageNotFoundError:
            client_version = None
        return {
            "backend": self.name,
            "endpoint": target.endpoint if target else None,
            "protocol": target.protocol if target else None,
            "server": dict(self._server),
            "model": {
                "name": remote.name if remote else (target.model_name if target else None),
                "version": target.model_version if target else None,  # "": the server's default
                "versions": list(remote.versions) if remote else [],
                "platform": remote.platform if remote else None,
                "input": remote.input.to_json() if remote else None,
                "output": remote.output.to_json() if remote else None,
                "max_rows": remote.max_rows if remote else None,
            },
            "client": {"tritonclient": client_version, "in_flight": self.options.in_flight,
                       "timeout_s": target.timeout_s if target else None,
                       "binary_data": (self._transport.binary if isinstance(self._transport, HttpTransport)
                                       else target is not None and target.protocol == "grpc"),
                       "ssl": target.ssl if target else None},
            "precision": self.model.precision,
            "precision_note": "the server's model decides the arithmetic; deepgap sends the input datatype",
            "device": "remote",
            "remote": True,
        }

    # -- internals ---------------------------------------------------------------------

    def _meta(self, method: str, *args: Any, what: str) -> dict[str, Any]:
        target = self._require_target()
        try:
            return self._require_transport().meta(method, *args)
        except Exception as exc:
            raise BackendError(f"cannot read {what} from {target.where}: {why(exc)}") from None

    def _served_models(self) -> str:
        try:
            index = self._require_transport().meta("get_model_repository_index")
            names = sorted({str(m.get("name")) for m in index if m.get("name")})
        except Exception:  # only a hint for the message; the error stands without it
            return ""
        return f"; it serves: {', '.join(names)}" if names else ""

    def _send(self, batch: np.ndarray) -> Call:
        # In the datatype the server takes, whichever came first, staging or load().
        batch = np.ascontiguousarray(batch, dtype=self._dtype())
        return self._submit(self._require_transport().prepare(batch, self._require_remote()))

    def _submit(self, request: Any) -> Call:
        target = self._require_target()
        transport = self._require_transport()
        if not self._places.acquire(timeout=target.timeout_s + GRACE_S):
            raise BackendError(f"all {self.options.in_flight} in-flight requests to {target.where} still "
                               f"outstanding after {target.timeout_s + GRACE_S:g} s")
        call = Call(self._places.release, target, self._require_remote().output.name)
        try:
            transport.submit(request, call)
        except Exception as exc:  # e.g. the client is closed; the place is given back
            call.finish(None, why(exc))
        return call

    def _dtype(self) -> type:
        return _NUMPY[self._remote.input.datatype] if self._remote is not None else np.float32

    def _remote_rows(self) -> int | None:
        return self._remote.max_rows if self._remote is not None else None

    def _require_staging(self) -> np.ndarray:
        if self._staging is None:
            raise BackendError("kserve backend has no staging buffer (allocate_staging)")
        return self._staging

    def _require_target(self) -> KServeTarget:
        if self._target is None:
            raise BackendError("kserve backend is not loaded (call load() first)")
        return self._target

    def _require_transport(self) -> GrpcTransport | HttpTransport:
        if self._transport is None:
            raise BackendError("kserve backend is not connected (call load() first; or it was closed)")
        return self._transport

    def _require_remote(self) -> RemoteModel:
        if self._remote is None:
            raise BackendError("kserve backend is not loaded (call load() first)")
        return self._remote
