"""Start and stop a local MLServer that serves deepgap's network over KServe v2.

    python -m serving.mlserver_launch --model resnet18 --image-size 64 --grpc-port 8001 --http-port 8000

writes an MLServer folder (settings.json and one model-settings.json per model, for the
runtime in serving/mlserver_runtime.py), runs `mlserver start FOLDER` as a child process in
its own process group, waits (bounded) until every model answers ready on HTTP and the gRPC
port accepts connections, prints the endpoints and serves until Ctrl-C. `serve_mlserver`
is the same as a context manager: the tests' server and a user's.

Choices, and why:
- host 127.0.0.1: a benchmark target for this machine, never exposed.
- parallel_workers 0: inference runs in the server process. With workers, every request
  also crosses a process boundary (MLServer pickles it to a worker), pure overhead for a
  runtime that already runs ONNX Runtime on all cores off the event loop; and MLServer
  1.7.1's workers die at start with uvloop 0.23 ("no current event loop"), checked here.
- adaptive batching off (model max_batch_size 0): deepgap's SUT batches itself; MLServer's
  max_batch_size merges *requests* on the server, unlike Triton's, which bounds one.
- metrics off unless a port is given; gzip off (compressing logits only costs CPU);
  gRPC messages up to 1 GiB (gRPC's 4 MiB default refuses a 224-px batch of 8).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from plumbing.argtypes import DefaultsHelpFormatter, OneLineParser, int_at_least, positive_float
from plumbing.errors import BackendError, ConfigError, DeepgapError, exit_code_epilog
from sut.backends.base import MODELS, ModelSpec
from sut.onnx_export import INPUT_NAME, OUTPUT_NAME, cache_root, export_onnx

RUNTIME = "serving.mlserver_runtime.DeepgapResNet"
HOST = "127.0.0.1"
DEFAULT_READY_TIMEOUT_S = 180.0  # an uncached first export of resnet101 takes a while on 2 cores
_GRPC_MAX_MESSAGE = 1 << 30
_REPO_ROOT = Path(__file__).resolve().parents[1]
# `mlserver start` through this interpreter, wherever its console script was installed.
_MLSERVER_MAIN = "from mlserver.cli import main; main()"
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")
_DATATYPES = ("FP32", "FP16", "UINT8")  # UINT8 only with instant (a model clients must refuse)


@dataclass(frozen=True)
class ServedModel:
    """One model the server serves, under `name`."""

    spec: ModelSpec
    name: str = ""  # "" = the network's name (resnet18, ...)
    instant: bool = False  # answer zero logits without running the network (the client ceiling)
    input_datatype: str = "FP32"
    threads: int | None = None  # ONNX Runtime intra-op threads; None = the physical cores
    delay_ms: float = 0.0  # hold each answer back this long (a slow server, for tests)

    def __post_init__(self) -> None:
        if self.spec.name not in MODELS:
            raise ConfigError(f"unknown model {self.spec.name!r}; choose from {', '.join(MODELS)}")
        if self.input_datatype not in _DATATYPES or (self.input_datatype == "UINT8" and not self.instant):
            raise ConfigError(f"input datatype {self.input_datatype!r}: the served network takes FP32 or FP16")
        if self.spec.precision != "fp32" and not self.instant:
            raise ConfigError(f"the MLServer runtime runs fp32 (ONNX Runtime's export), not {self.spec.precision}")

    @property
    def served_name(self) -> str:
        return self.name or self.spec.name


@dataclass(frozen=True)
class ServedEndpoint:
    grpc: str  # "127.0.0.1:P"
    http: str  # "127.0.0.1:Q"
    models: tuple[str, ...]
    folder: Path
    log_path: Path
    process: subprocess.Popen


def free_port(host: str = HOST) -> int:
    """A port nobody listens on now (the OS's choice; another process could still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def model_settings(model: ServedModel, cache_dir: Path | str | None = None) -> dict[str, Any]:
    """model-settings.json for one model: inputs and outputs declared, so the metadata a
    client reads is exactly what the runtime accepts."""
    spec = model.spec
    size = spec.image_size
    output = "FP32"
    return {
        "name": model.served_name,
        "implementation": RUNTIME,
        "platform": "deepgap-instant" if model.instant else "deepgap-onnxruntime",
        "inputs": [{"name": INPUT_NAME, "datatype": model.input_datatype, "shape": [-1, 3, size, size]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": output, "shape": [-1, spec.num_classes]}],
        "max_batch_size": 0,
        "max_batch_time": 0.0,
        "parameters": {"extra": {
            "model": spec.name, "precision": spec.precision, "weights": spec.weights, "seed": spec.seed,
            "image_size": size, "num_classes": spec.num_classes, "threads": model.threads,
            "cache_dir": str(cache_root(cache_dir)), "instant": model.instant,
            "input_datatype": model.input_datatype, "delay_ms": model.delay_ms,
        }},
    }


def write_mlserver_folder(folder: Path | str, models: Sequence[ServedModel], grpc_port: int, http_port: int,
                          metrics_port: int | None = None, parallel_workers: int = 0,
                          cache_dir: Path | str | None = None) -> Path:
    """FOLDER/settings.json and FOLDER/<name>/model-settings.json; returns FOLDER."""
    names = [m.served_name for m in models]
    if not models or len(set(names)) != len(names):
        raise ConfigError(f"serve at least one model, each under its own name (got {names})")
    folder = Path(folder)
    settings = {
        "host": HOST, "http_port": http_port, "grpc_port": grpc_port,
        "metrics_endpoint": "/metrics" if metrics_port else None, "metrics_port": metrics_port or 0,
        "parallel_workers": parallel_workers, "debug": False, "gzip_enabled": False,
        "grpc_max_message_length": _GRPC_MAX_MESSAGE, "load_models_at_startup": True,
        "environments_dir": str(folder / ".envs"), "metrics_dir": str(folder / ".metrics"),
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
        for model in models:
            (folder / model.served_name).mkdir(exist_ok=True)
            text = json.dumps(model_settings(model, cache_dir), indent=2) + "\n"
            (folder / model.served_name / "model-settings.json").write_text(text)
    except OSError as exc:
        raise ConfigError(f"cannot write the MLServer folder {folder}: {exc.strerror or exc}") from None
    return folder


def start_mlserver(folder: Path | str, models: Sequence[str], grpc_port: int, http_port: int,
                   ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S) -> ServedEndpoint:
    """Run `mlserver start FOLDER` and wait until it serves `models`; BackendError (and the
    process stopped) if it exits or is not ready within `ready_timeout_s`."""
    folder = Path(folder)
    log_path = folder / "mlserver.log"
    env = dict(os.environ)
    # The runtime imports serving/ and sut/ from this checkout, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen([sys.executable, "-c", _MLSERVER_MAIN, "start", str(folder)],
                                   cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = ServedEndpoint(grpc=f"{HOST}:{grpc_port}", http=f"{HOST}:{http_port}", models=tuple(models),
                              folder=folder, log_path=log_path, process=process)
    try:
        _wait_ready(endpoint, ready_timeout_s)
    except BaseException:
        stop_mlserver(endpoint, graceful=False)
        raise
    return endpoint


def stop_mlserver(endpoint: ServedEndpoint, graceful: bool = True, timeout_s: float = 10.0) -> None:
    """Stop the server's whole process group: SIGTERM (then SIGKILL after `timeout_s`), or
    SIGKILL at once with graceful=False (a server that dies). Safe to call twice."""
    process = endpoint.process
    for sig in ((signal.SIGTERM, signal.SIGKILL) if graceful else (signal.SIGKILL,)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)  # start_new_session: the group's id is the child's pid
        try:
            process.wait(timeout_s)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # anything the server started and left behind
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


@contextlib.contextmanager
def serve_mlserver(models: ModelSpec | ServedModel | Sequence[ServedModel], folder: Path | str | None = None,
                   grpc_port: int = 0, http_port: int = 0, ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
                   cache_dir: Path | str | None = None, metrics_port: int | None = None,
                   parallel_workers: int = 0) -> Iterator[ServedEndpoint]:
    """Serve `models` for the duration of the block (port 0: a free one). A folder of its
    own is made (and removed afterwards) when none is given."""
    if isinstance(models, ModelSpec):
        models = [ServedModel(models)]
    elif isinstance(models, ServedModel):
        models = [models]
    for model in models:
        if not model.instant:  # exported here, so a failure is one line, not a dead server's log
            export_onnx(model.spec, cache_dir)
    grpc_port = grpc_port or free_port()
    http_port = http_port or free_port()
    if grpc_port == http_port:
        raise ConfigError(f"the gRPC and HTTP ports must differ (both {grpc_port})")
    own = folder is None
    path = Path(tempfile.mkdtemp(prefix="deepgap-mlserver-")) if folder is None else Path(folder)
    try:
        write_mlserver_folder(path, models, grpc_port, http_port, metrics_port, parallel_workers, cache_dir)
        endpoint = start_mlserver(path, [m.served_name for m in models], grpc_port, http_port, ready_timeout_s)
        try:
            yield endpoint
        finally:
            stop_mlserver(endpoint)
    finally:
        if own:
            shutil.rmtree(path, ignore_errors=True)


def _wait_ready(endpoint: ServedEndpoint, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(endpoint.models)
    grpc_host, _, grpc_port = endpoint.grpc.rpartition(":")
    while True:
        code = endpoint.process.poll()
        if code is not None:
            raise BackendError(f"mlserver exited with code {code} before it was ready: {_log_reason(endpoint)}")
        pending = [name for name in pending if not _http_ok(f"http://{endpoint.http}/v2/models/{name}/ready")]
        if not pending and _accepts(grpc_host, int(grpc_port)):
            return
        if time.monotonic() > deadline:
            waiting = ", ".join(pending) if pending else f"the gRPC port {endpoint.grpc}"
            raise BackendError(f"mlserver was not ready within {timeout_s:g} s (waiting for {waiting}): "
                               f"{_log_reason(endpoint)}")
        time.sleep(0.2)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _log_reason(endpoint: ServedEndpoint) -> str:
    """The server log's first exception line (the cause; what follows is MLServer shutting
    down because of it), else its last line, and where the log is."""
    try:
        lines = [line.strip() for line in endpoint.log_path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    errors = [line for line in lines if _EXCEPTION_LINE.match(line)]
    if errors:
        return f"{errors[0][:300]} (log: {endpoint.log_path})"
    return f"last log line {lines[-1][:300]!r} (log: {endpoint.log_path})" if lines else \
        f"no log output ({endpoint.log_path})"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m serving.mlserver_launch", formatter_class=DefaultsHelpFormatter,
                           description="Serve deepgap's network from a local MLServer (KServe v2) on 127.0.0.1, "
                           "until Ctrl-C.", epilog=exit_code_epilog())
    port = int_at_least(1, 65535)
    parser.add_argument("--model", choices=MODELS, default="resnet50", help="network")
    parser.add_argument("--image-size", type=int_at_least(8), default=224, help="input height and width")
    parser.add_argument("--weights", default="seeded", help="seeded, torchvision or a state-dict path")
    parser.add_argument("--seed", type=int, default=0, help="seed for seeded weights")
    parser.add_argument("--name", default=None, help="the name it is served under (default: --model)")
    parser.add_argument("--grpc-port", type=port, default=8001, help="KServe v2 over gRPC")
    parser.add_argument("--http-port", type=port, default=8000, help="KServe v2 over HTTP (REST)")
    parser.add_argument("--metrics-port", type=port, default=None,
                        help="serve MLServer's Prometheus metrics there (default: none: metrics off)")
    parser.add_argument("--input-datatype", choices=("FP32", "FP16"), default="FP32",
                        help="the tensor type the model takes (FP16 runs in fp32)")
    parser.add_argument("--threads", type=int_at_least(1), default=None,
                        help="ONNX Runtime threads (default: physical cores)")
    parser.add_argument("--instant", action="store_true",
                        help="answer zero logits at once, running nothing: the client ceiling (default: off)")
    parser.add_argument("--folder", type=Path, default=None,
                        help="write the MLServer folder here and keep it (default: a temporary folder)")
    parser.add_argument("--ready-timeout-s", type=positive_float, default=DEFAULT_READY_TIMEOUT_S,
                        help="give up if the model is not ready by then")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except DeepgapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    # Ctrl-C, and a plain `kill`, stop the server too: SIGINT may arrive ignored (a shell's
    # background job) and SIGTERM would otherwise end this process and orphan the server.
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        spec = ModelSpec(args.model, "fp32", weights=args.weights, seed=args.seed, image_size=args.image_size)
        served = ServedModel(spec, name=args.name or "", instant=args.instant, input_datatype=args.input_datatype,
                             threads=args.threads)
        with serve_mlserver(served, folder=args.folder, grpc_port=args.grpc_port, http_port=args.http_port,
                            ready_timeout_s=args.ready_timeout_s, metrics_port=args.metrics_port) as endpoint:
            print(f"serving {served.served_name} ({args.model}, {args.image_size} px"
                  f"{', instant' if args.instant else ''}): grpc {endpoint.grpc}  http {endpoint.http}", flush=True)
            print(f"  deepgap: --backend kserve, endpoint {endpoint.grpc} (grpc) or {endpoint.http} (http); "
                  f"log {endpoint.log_path}; Ctrl-C stops it", flush=True)
            code = endpoint.process.wait()
            print(f"mlserver exited with code {code}: {_log_reason(endpoint)}", file=sys.stderr)
            return 3
    except DeepgapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
