"""The performance-set probe: LoadGen's choice of performance samples, observed in a run of
no cost, depends on (total count, performance count, qsl_rng_seed) only, and is what a real
run then loads."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from runs.config import resolve
from plumbing.errors import ConfigError
from runs.runner import execute
from sut.backends.base import BackendOptions, ModelSpec
from sut.backends.null_backend import NullBackend
from sut.data import SyntheticDataset
from sut.qsl import LoadgenQSL, _observe, index_set_sha256, performance_sample_set
from sut.settings import SCENARIOS, mlperf_rules

MLPERF_SEED = int(mlperf_rules("Offline")["qsl_rng_seed"])
CASES = [(64, 16, MLPERF_SEED), (64, 16, 12345), (1000, 1000, 7), (50_000, 1024, MLPERF_SEED)]


@pytest.mark.parametrize("total, count, seed", CASES)
def test_probe_is_deterministic_and_the_same_in_every_scenario(total: int, count: int, seed: int) -> None:
    observed = []
    for scenario in SCENARIOS:
        for _ in range(2):
            _observe.cache_clear()  # probe LoadGen again, not the remembered answer
            observed.append(performance_sample_set(total, count, seed, scenario))
    first = observed[0]
    assert first.dtype == np.int64 and first.size == count
    assert np.array_equal(first, np.unique(first))  # sorted, no repeats (MultiStream pads)
    assert 0 <= first[0] and first[-1] < total
    for other in observed[1:]:
        np.testing.assert_array_equal(other, first)


def test_probe_follows_the_counts() -> None:
    small = performance_sample_set(64, 8, MLPERF_SEED)
    large = performance_sample_set(64, 32, MLPERF_SEED)
    assert small.size == 8 and large.size == 32
    np.testing.assert_array_equal(performance_sample_set(64, 64, MLPERF_SEED), np.arange(64))


def test_probe_is_fast_and_leaves_nothing_behind(tmp_path: Path, monkeypatch, capfd) -> None:
    monkeypatch.chdir(tmp_path)
    probes_before = set(Path(tempfile.gettempdir()).glob("deepgap-probe-*"))
    _observe.cache_clear()
    started = time.perf_counter()
    performance_sample_set(50_000, 1024, MLPERF_SEED)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"probe took {elapsed:.3f} s"
    assert list(tmp_path.iterdir()) == []  # no LoadGen logs in the working directory
    assert set(Path(tempfile.gettempdir()).glob("deepgap-probe-*")) == probes_before
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize("args", [(0, 0, 1), (10, 0, 1), (10, 11, 1), (10, 5, 1, "Batch")])
def test_probe_rejects_impossible_sets(args: tuple) -> None:
    with pytest.raises(ConfigError):
        performance_sample_set(*args)


def test_index_set_hash_ignores_order_and_repeats() -> None:
    assert index_set_sha256([3, 1, 2, 2]) == index_set_sha256(np.array([1, 2, 3]))
    assert index_set_sha256([1, 2, 3]) != index_set_sha256([1, 2, 4])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_real_run_loads_the_probed_set(tiny_request, tmp_path: Path, scenario: str) -> None:
    """What the QSL of a real run was asked to load (recorded in measurements.json) is the
    probed set, with a seed and sample count of the user's own (user.conf)."""
    conf = tmp_path / "user.conf"
    conf.write_text("*.*.performance_sample_count_override = 16\n*.*.qsl_rng_seed = 12345\n")
    # Sizing from the CLI: a warm-up of the instant null backend would size a huge schedule.
    extra = {"Server": {"target_qps": 150.0, "max_batch": 8}, "Offline": {"target_qps": 400.0}}.get(
        scenario, {"target_latency_ms": 5.0})
    config = resolve(tiny_request(backend="null", scenario=scenario, user_conf=conf, **extra))
    outcome = execute(config, show_progress=False)
    recorded = outcome.result["harness"]["performance_set"]
    probed = performance_sample_set(64, 16, 12345)
    assert recorded == {"count": 16, "indices_sha256": index_set_sha256(probed)}


class _FailingOnce(NullBackend):
    """A backend whose stage() fails on its first call (a staging fault), then works."""

    def stage(self, rows: np.ndarray, samples: np.ndarray) -> None:
        if not getattr(self, "failed", False):
            self.failed = True
            raise RuntimeError("device out of memory while staging")
        super().stage(rows, samples)


def test_a_staging_fault_leaks_no_staging_rows() -> None:
    """The free rows are taken only once their samples are staged: after a failed load
    LoadGen's next load (an accuracy run's next partition) still finds every row free."""
    backend = _FailingOnce(ModelSpec("resnet18", "fp32", image_size=32), BackendOptions())
    backend.load()
    qsl = LoadgenQSL(SyntheticDataset(count=40, image_size=32), backend, performance_count=16)
    try:
        qsl._load(list(range(16)))
        assert isinstance(qsl.failure, RuntimeError)
        assert (qsl.row_of_index[:16] == -1).all()  # nothing claims to be staged
        qsl.failure = None
        qsl._unload(list(range(16)))
        qsl._load(list(range(16, 32)))
        assert qsl.failure is None, qsl.failure  # was IndexError: pop from empty list
        np.testing.assert_array_equal(np.sort(qsl.rows_for(list(range(16, 32)))), np.arange(16))
    finally:
        qsl.destroy()
