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
