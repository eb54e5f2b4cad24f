"""Warm-up sizing of LoadGen's schedule: what it replaces, what it keeps, and the headroom
that keeps an Offline run from ending before its minimum duration."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import CliRequest, resolve
from harness.runner import OFFLINE_WARMUP_HEADROOM, size_run_from_warmup

SECONDS_PER_BATCH = 0.01


class FixedLoop:
    """A backend whose tight loop takes a fixed time per batch, whatever its size."""

    def time_tight_loop(self, batch_size: int, iterations: int) -> float:
        return iterations * SECONDS_PER_BATCH


def offline(**fields):
    return resolve(CliRequest(gpu="cpu", scenario="Offline", **fields))


def test_offline_expected_qps_gets_headroom_over_the_warm_up_rate() -> None:
    config = offline()
    batch = int(config.knobs["max_batch"])
    size_run_from_warmup(config, FixedLoop())
    warm_up_rate = batch / SECONDS_PER_BATCH
    assert config.loadgen["offline_expected_qps"] == pytest.approx(OFFLINE_WARMUP_HEADROOM * warm_up_rate)
    assert OFFLINE_WARMUP_HEADROOM > 1.0
    assert config.provenance["loadgen.offline_expected_qps"].startswith("warm-up measurement")


def test_user_values_are_never_resized(tmp_path: Path) -> None:
    conf = tmp_path / "user.conf"
    conf.write_text("resnet50.Offline.target_qps = 7\n")
    config = offline(user_conf=conf)
    size_run_from_warmup(config, FixedLoop())
    assert config.loadgen["offline_expected_qps"] == 7


def test_single_stream_expects_half_the_warm_up_latency() -> None:
    config = resolve(CliRequest(gpu="cpu", scenario="SingleStream"))
    size_run_from_warmup(config, FixedLoop())
    assert config.loadgen["single_stream_expected_latency_ns"] == int(SECONDS_PER_BATCH * 1e9 / 2)


@pytest.mark.parametrize("scenario", ["Offline", "Server"])
def test_a_dataset_smaller_than_the_max_batch_runs(tmp_path: Path, scenario: str) -> None:
    """Offline's warm-up times a max-size batch; with fewer staged samples than that (8
    images, batch 16) it read rows past the staging buffer: on the H200 a device-side
    assert killed the process, on ONNX Runtime the run failed. Now the loop repeats staged
    rows, as LoadGen's query does, and the run completes."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    args = ["--scenario", scenario, "--gpu", "cpu", "--backend", "onnxruntime", "--model", "resnet18",
            "--image-size", "32", "--dataset-count", "8", "--max-batch", "16",
            "--min-duration-ms", "300", "--output", tmp_path / "out", "--no-progress"]
    if scenario == "Server":
        args += ["--target-qps", "50", "--min-query-count", "16"]
    env = dict(os.environ, DEEPGAP_CACHE=str(tmp_path / "cache"), CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "harness/run.py", *map(str, args)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    measurements = next((tmp_path / "out").rglob("measurements.json"))
    performance = json.loads(measurements.read_text())["runs"]["performance"]
    assert performance["status"] == "ok"
    assert performance["harness"]["performance_sample_count"] == 8
