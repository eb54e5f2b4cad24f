"""Runs against a remote KServe v2 server (`--backend kserve --endpoint HOST:PORT`).

The request's endpoint flags are checked here and become the backend's settings
(`BackendOptions.extra["kserve"]`, sut/kserve_target.py); the run's device is the
endpoint itself (no local device is used, probed or measured), and its system name says
so ('Endpoint-127-0-0-1-8001_kserve_fp32'). Power is the server's, read from its
Prometheus metrics where `--metrics-url` names them (runs/remote_power.py), else absent.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any, Protocol

from plumbing.argtypes import positive_float
from plumbing.errors import ConfigError
from runs.device import DeviceChoice
from scenarios.profiles import load_endpoint_profile
from sut.backends import backend_info
from sut.kserve_target import DEFAULT_TIMEOUT_S, PROTOCOLS, KServeTarget

# Flags that only a remote backend acts on, with the value that means "not given".
ENDPOINT_FLAGS: dict[str, Any] = {
    "endpoint": None, "protocol": "grpc", "model_name": None, "model_version": None, "ssl": False,
    "root_certificates": None, "private_key": None, "certificate_chain": None, "request_timeout_s": DEFAULT_TIMEOUT_S,
    "metrics_url": None,
}


class EndpointRequest(Protocol):
    backend: str | None
    model: str
    gpu: str
    gpus: str
    endpoint: str | None
    protocol: str
    model_name: str | None
    model_version: str | None
    ssl: bool
    root_certificates: Path | None
    private_key: Path | None
    certificate_chain: Path | None
    request_timeout_s: float
    metrics_url: str | None


REMOTE_BACKEND = "kserve"  # what --endpoint alone implies


def add_endpoint_flags(parser: argparse.ArgumentParser) -> None:
    """The remote server's flags, for harness/run.py and the sweep alike."""
    d = ENDPOINT_FLAGS
    remote = parser.add_argument_group("a remote KServe v2 server (--backend kserve: Triton, KServe, MLServer)")
    remote.add_argument("--endpoint", default=d["endpoint"], metavar="HOST:PORT",
                        help="the server's gRPC or HTTP address; the server runs and batches the model, and "
                        "--backend defaults to kserve (default: none)")
    remote.add_argument("--protocol", choices=PROTOCOLS, default=d["protocol"], help="KServe v2 over gRPC or HTTP")
    remote.add_argument("--model-name", default=d["model_name"],
                        help="the server's name for the model (default: --model)")
    remote.add_argument("--model-version", default=d["model_version"],
                        help="model version (default: the server's choice)")
    remote.add_argument("--ssl", action="store_true", help="TLS to the server (default: off)")
    remote.add_argument("--root-certificates", type=Path, default=d["root_certificates"],
                        help="TLS: CA certificates file (PEM) (default: none)")
    remote.add_argument("--private-key", type=Path, default=d["private_key"], help="TLS: client private key file (PEM) (default: none)")
    remote.add_argument("--certificate-chain", type=Path, default=d["certificate_chain"],
                        help="TLS: client certificate chain (PEM) (default: none)")
    remote.add_argument("--request-timeout-s", type=positive_float, default=d["request_timeout_s"],
                        help="per request: a batch not answered by then fails, and so does the run")
    remote.add_argument("--metrics-url", default=d["metrics_url"], metavar="URL",
                        help="the server's Prometheus metrics (Triton: http://HOST:8002/metrics): its GPUs' "
                        "power and energy over the run (default: none: power absent)")


def is_remote(backend: str | None) -> bool:
    return backend is not None and backend_info(backend).remote


def check_endpoint_flags(request: EndpointRequest) -> None:
    """Endpoint flags only with a remote backend, which needs --endpoint and no local
    device flags; the endpoint's form and TLS files checked before anything connects."""
    if not is_remote(request.backend):
        given = [f for f, default in ENDPOINT_FLAGS.items() if getattr(request, f) != default]
        if given:
            flag = given[0].replace("_", "-")
            raise ConfigError(f"--{flag} is for --backend kserve (a remote KServe v2 server), not --backend "
                              f"{request.backend}: drop it, or use --backend kserve --endpoint HOST:PORT")
        return
    if not request.endpoint:
        raise ConfigError(f"--backend {request.backend} needs --endpoint HOST:PORT (the server's gRPC or HTTP port)")
    if request.gpu.lower() != "auto" or str(request.gpus).strip() != "1":
        raise ConfigError("--gpu and --gpus choose this host's devices; with --backend kserve the server's own "
                          "hardware runs the model: drop them")
    for flag in ("root_certificates", "private_key", "certificate_chain"):
        path = getattr(request, flag)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"--{flag.replace('_', '-')} {path}: no such file")
    if request.metrics_url is not None:
        if not request.metrics_url.startswith(("http://", "https://")):
            raise ConfigError(f"--metrics-url {request.metrics_url}: give the full URL, such as "
                              "http://HOST:8002/metrics")
        if importlib.util.find_spec("prometheus_client") is None:
            raise ConfigError("--metrics-url needs prometheus-client to read the server's metrics: "
                              "pip install -e '.[kserve]'")
    KServeTarget.from_extra(kserve_extra(request), default_model=request.model)


def kserve_extra(request: EndpointRequest) -> dict[str, Any]:
    """The backend's settings (sut/kserve_target.py:KServeTarget's keys)."""
    def text(path: Path | None) -> str | None:
        return None if path is None else str(path)

    return {"endpoint": request.endpoint, "protocol": request.protocol,
            "model_name": request.model_name or request.model, "model_version": request.model_version or "",
            "ssl": request.ssl, "root_certificates": text(request.root_certificates),
            "private_key": text(request.private_key), "certificate_chain": text(request.certificate_chain),
            "timeout_s": float(request.request_timeout_s)}


def endpoint_device(request: EndpointRequest) -> DeviceChoice:
    return DeviceChoice(load_endpoint_profile(), "remote", str(request.endpoint), 1)
