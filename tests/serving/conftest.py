"""A real MLServer (serving/mlserver_launch.py) for the KServe tests, one per test session.

It serves a seeded resnet18 at 32 px (a request costs milliseconds on 2 cores) under
several names: the network with FP32 input, the same network taking FP16 input, an
`instant` model that answers zero logits, and `uint8in`, which declares a UINT8 input the
client must refuse. tests/sut/test_kserve_backend.py imports these fixtures; the session's
one server lives on the pytest config, so importing them twice never starts two.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from serving.mlserver_launch import ServedEndpoint, ServedModel, serve_mlserver, stop_mlserver
from sut.backends.base import ModelSpec

IMAGE_SIZE = 32
SPEC = ModelSpec("resnet18", "fp32", image_size=IMAGE_SIZE)
MODEL, FP16_MODEL, INSTANT_MODEL, UINT8_MODEL = "resnet18", "resnet18-fp16in", "instant", "uint8in"
READY_TIMEOUT_S = 240.0  # the first export of resnet18 on a cold 2-core CI machine


def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder tests/conftest.py points DEEPGAP_CACHE at: the server's ONNX export is the
    one a local OnnxRuntimeBackend in a test reuses."""
    return tmp_path_factory.getbasetemp() / "cache"


def needs_kserve() -> None:
    """Skip unless the test extra's server and client are installed (pip install -e '.[test]').
    mlserver is looked for, never imported: its gRPC protos and tritonclient's define the
    same `inference.*` symbols, and one process cannot load both (the server runs apart)."""
    if importlib.util.find_spec("mlserver") is None:
        pytest.skip("mlserver is not installed (pip install -e '.[test]')")
    pytest.importorskip("tritonclient.grpc")
    pytest.importorskip("tritonclient.http.aio")


def _shared_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ServedEndpoint:
    needs_kserve()
    config = request.config
    endpoint = getattr(config, "_deepgap_mlserver", None)
    if endpoint is None:
        models = [ServedModel(SPEC, name=MODEL), ServedModel(SPEC, name=FP16_MODEL, input_datatype="FP16"),
                  ServedModel(SPEC, name=INSTANT_MODEL, instant=True),
                  ServedModel(SPEC, name=UINT8_MODEL, instant=True, input_datatype="UINT8")]
        stack = contextlib.ExitStack()
        endpoint = stack.enter_context(serve_mlserver(models, folder=tmp_path_factory.mktemp("mlserver"),
                                                      cache_dir=session_cache(tmp_path_factory),
                                                      ready_timeout_s=READY_TIMEOUT_S))
        config._deepgap_mlserver = endpoint  # type: ignore[attr-defined]
        config.add_cleanup(stack.close)
    return endpoint


@pytest.fixture(scope="session")
def mlserver(request, tmp_path_factory) -> ServedEndpoint:
    return _shared_server(request, tmp_path_factory)


@pytest.fixture
def doomed_mlserver(tmp_path) -> Iterator[Callable[..., ServedEndpoint]]:
    """doomed_mlserver(delay_ms=...) -> a server of its own (instant answers held back
    `delay_ms`) for a test to kill or stall; stopped afterwards whatever happened to it."""
    stack = contextlib.ExitStack()

    def start(delay_ms: float = 0.0) -> ServedEndpoint:
        needs_kserve()
        model = ServedModel(SPEC, name=INSTANT_MODEL, instant=True, delay_ms=delay_ms)
        endpoint = stack.enter_context(serve_mlserver(model, folder=tmp_path / "doomed", ready_timeout_s=60))
        stack.callback(stop_mlserver, endpoint, graceful=False)  # also after a SIGSTOP
        return endpoint

    with stack:
        yield start
