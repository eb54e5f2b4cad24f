"""The accuracy gate checks what the run times: a backend whose build depends on the max
batch (a TensorRT engine's profile) is built for the run's max batch and with the run's
options, not for the gate's own 64; an eager backend keeps the gate's 64."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import pytest

from plumbing.errors import BackendError
from runs.config import resolve
from runs.gating import run_gate
from sut.backends import CPU, REGISTRY, BackendInfo
from sut.backends.base import Backend, BackendOptions, DonePending, ModelSpec
from sut.data import SyntheticDataset

CLASSES = 10
CHECKED = 20


class RecordingBackend(Backend):
    """Records the options it was built with; like a TensorRT engine, it takes at most its
    max batch at a time."""

    name: ClassVar[str] = "recording"
    built: ClassVar[list[BackendOptions]] = []

    def __init__(self, model: ModelSpec, options: BackendOptions) -> None:
        super().__init__(model, options)
        RecordingBackend.built.append(options)

    def load(self) -> None:
        pass

    def allocate_staging(self, capacity: int) -> None:
        pass

    def stage(self, rows: np.ndarray, samples: np.ndarray) -> None:
        pass

    def run_batch(self, rows: np.ndarray) -> DonePending:
        return DonePending(np.zeros(len(rows), np.int32))

    def time_tight_loop(self, batch_size: int, iterations: int) -> float:
        return 0.0

    def logits(self, samples: np.ndarray) -> np.ndarray:
        if len(samples) > self.options.max_batch:
            raise BackendError(f"logits for {len(samples)} samples: 1..max batch {self.options.max_batch}")
        return np.zeros((len(samples), CLASSES), np.float32)

    def describe(self) -> dict[str, Any]:
        return {}


@pytest.fixture
def gate_with(tiny_request, monkeypatch):
    """gate_with(declared) -> (the run's options, the options the gate built its backend
    with), for a recording backend registered with `artefact_depends_on_max_batch=declared`,
    checked on seeded weights (no digits training, no calibration: the options are the point)."""
    import runs.gating

    def fake_target(config, device="cpu"):
        spec = ModelSpec("resnet18", "fp16", image_size=32, num_classes=CLASSES)
        return spec, SyntheticDataset(count=CHECKED, image_size=32), np.arange(CHECKED), "test images"

    monkeypatch.setattr(runs.gating, "gate_target", fake_target)
    monkeypatch.setattr(RecordingBackend, "built", [])

    def gate(declared: bool) -> tuple[BackendOptions, BackendOptions]:
        monkeypatch.setitem(REGISTRY, "recording", BackendInfo(
            "recording", __name__, "RecordingBackend", {CPU: ("fp32", "fp16")},
            artefact_depends_on_max_batch=declared))
        config = dataclasses.replace(resolve(tiny_request(backend="torch")), backend="recording")
        run = BackendOptions(device="cpu", max_batch=8, in_flight=2, cuda_graphs=True, staging="host",
                             channels_last=False, threads=2,
                             extra={"cache_dir": "/tmp/engines", "trt_workspace_bytes": 1 << 30, "trt_tf32": False})
        run_gate(config, run)
        (built,) = RecordingBackend.built
        RecordingBackend.built.clear()
        return run, built

    return gate


def test_an_engine_built_for_the_max_batch_is_gated_as_the_run_builds_it(gate_with):
    run, gated = gate_with(True)
    # Everything the built artefact depends on (a TensorRT engine's key: the batch range,
    # the builder settings and cache directory in `extra`) is the run's ...
    assert gated.max_batch == run.max_batch == 8
    assert {key: gated.extra.get(key) for key in run.extra} == run.extra
    same = ("device", "staging", "channels_last", "compile", "threads")
    assert {f: getattr(gated, f) for f in same} == {f: getattr(run, f) for f in same}
    # ... while the gate runs one batch at a time, without graphs (they change no result).
    assert (gated.in_flight, gated.cuda_graphs) == (1, False)


def test_an_eager_backend_keeps_the_gates_own_batch(gate_with):
    run, gated = gate_with(False)
    assert gated.max_batch == 64 and run.max_batch == 8
    assert gated.staging == run.staging and {key: gated.extra.get(key) for key in run.extra} == run.extra
