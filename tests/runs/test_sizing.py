"""Warm-up sizing of LoadGen's schedule: what it replaces, what it keeps, the headroom that
keeps an Offline run from ending before its minimum duration, the bounds on what a warm-up
may size, and the query count LoadGen's early stopping needs."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from runs import limits
from runs.config import CliRequest, resolve
from plumbing.errors import ConfigError
from runs.sizing import OFFLINE_WARMUP_HEADROOM, SIZING_ATTRS, size_run_from_warmup, warmup_batch_seconds
from sut.settings import early_stopping_min_queries, mlperf_rules, schedule_size

SECONDS_PER_BATCH = 0.01


class Loop:
    """What the sizing reads of a backend besides its tight loop: one batch in flight."""

    options = SimpleNamespace(in_flight=1)


class FixedLoop(Loop):
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


class PipelinedLoop:
    """k batches in flight, as a remote server's: the first answer after one latency, then
    k answers per latency."""

    def __init__(self, in_flight: int, latency_s: float) -> None:
        self.options = SimpleNamespace(in_flight=in_flight)
        self.latency_s = latency_s

    def time_tight_loop(self, batch_size: int, iterations: int) -> float:
        return self.latency_s + (iterations - 1) * self.latency_s / self.options.in_flight


def test_a_warm_up_with_batches_in_flight_runs_long_enough_to_see_their_rate() -> None:
    # 50 requests with 8 in flight to an instant KServe server measured 780/s against the
    # run's 1,460/s: the run ended before its minimum duration (INVALID).
    loop = PipelinedLoop(in_flight=8, latency_s=0.01)
    steady = loop.latency_s / 8
    assert warmup_batch_seconds(loop, 1) == pytest.approx(steady, rel=0.05)


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


# -- bounds on what a warm-up may size (issue 11, item 1) ------------------------------------


class InstantLoop(Loop):
    """The null backend's loop: a batch in a tenth of a microsecond (46M samples/s was seen)."""

    def time_tight_loop(self, batch_size: int, iterations: int) -> float:
        return iterations * 1e-7


def test_an_instant_warm_up_is_capped_at_the_harness_ceiling() -> None:
    config = offline(backend="null")
    size_run_from_warmup(config, InstantLoop())
    assert config.loadgen["offline_expected_qps"] == limits.HARNESS_MAX_SAMPLES_PER_S
    assert "capped by the harness's own ceiling" in config.provenance["loadgen.offline_expected_qps"]


def test_offline_schedule_is_capped_to_fit_memory(monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    config = offline(backend="null", dataset_count=64, image_size=32)
    room = 50 << 20  # the run may plan 25 MiB: half of it
    monkeypatch.setattr(limits, "available_memory", lambda: limits.Memory(room, "a test's limit"))
    size_run_from_warmup(config, InstantLoop())
    queries, samples = schedule_size("Offline", "performance", config.loadgen, 64)
    assert samples * limits.SCHEDULE_BYTES_PER_SAMPLE <= room * limits.MEMORY_SHARE
    assert samples > 10_000  # capped, not refused
    assert "capped by memory" in config.provenance["loadgen.offline_expected_qps"]
    assert "sized down to fit memory" in caplog.text


@pytest.mark.parametrize("scenario", ["SingleStream", "MultiStream"])
def test_stream_expected_latency_has_a_floor(scenario: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Memory large enough that the floor, not the host's memory, bounds the schedule (on a
    # 24 GiB host memory bit first and hid a float comparison that failed on a 128 GiB one).
    monkeypatch.setattr(limits, "available_memory", lambda: limits.Memory(1 << 40, "a test's limit"))
    config = resolve(CliRequest(gpu="cpu", scenario=scenario, backend="null", run_profile="submission"))
    size_run_from_warmup(config, InstantLoop())
    attr = SIZING_ATTRS[scenario]
    floor_ns = round(limits.HARNESS_MIN_QUERY_S * 1e9)
    assert config.loadgen[attr] == floor_ns
    queries, _ = schedule_size(scenario, "performance", config.loadgen, 1024)
    assert queries == 2 * 600 * 10**9 // floor_ns


def test_a_schedule_that_cannot_fit_is_refused_before_loadgen(monkeypatch: pytest.MonkeyPatch) -> None:
    # The user's own --target-qps is never resized; what fitted before the backend loaded
    # and no longer does is still refused before LoadGen allocates.
    monkeypatch.setattr(limits, "available_memory", lambda: limits.Memory(32 << 30, "a test's limit"))
    config = offline(target_qps=1e6, min_duration_ms=60_000)
    monkeypatch.setattr(limits, "available_memory", lambda: limits.Memory(1 << 30, "a test's limit"))
    with pytest.raises(ConfigError, match=r"LoadGen's pre-generated schedule of 1 queries, 66,000,000 samples"):
        size_run_from_warmup(config, FixedLoop())


# -- enough queries for LoadGen's early stopping (issue 11, item 17) -------------------------


class SlowLoop(Loop):
    """A batch takes `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def time_tight_loop(self, batch_size: int, iterations: int) -> float:
        return iterations * self.seconds


def stream(scenario: str, **fields):
    return resolve(CliRequest(gpu="cpu", scenario=scenario, model="resnet18", **fields))


def test_multistream_quick_run_gets_the_queries_p99_needs() -> None:
    config = stream("MultiStream")
    assert config.loadgen["min_query_count"] == 64  # the quick profile's own count
    size_run_from_warmup(config, SlowLoop(0.015))  # 662 queries take 10 s
    assert config.loadgen["min_query_count"] == 662 == mlperf_rules("MultiStream")["min_query_count"]
    assert config.provenance["loadgen.min_query_count"].startswith("early stopping")


def test_too_slow_a_device_is_told_before_the_run(caplog: pytest.LogCaptureFixture) -> None:
    config = stream("MultiStream")
    with caplog.at_level(logging.WARNING):
        size_run_from_warmup(config, SlowLoop(0.5))  # 662 queries would take 331 s
    assert config.loadgen["min_query_count"] == 64
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "will be INVALID" in warning and "662 queries for p99" in warning
    assert "331 s" in warning and "60 s" in warning and "--min-query-count 662" in warning


def test_singlestream_p90_already_has_enough_queries() -> None:
    config = stream("SingleStream")
    size_run_from_warmup(config, SlowLoop(0.015))
    assert config.loadgen["min_query_count"] == 100  # p90 needs 64


def test_server_quick_run_gets_queries_for_p99_with_a_few_stalls() -> None:
    config = stream("Server", target_qps=20)
    size_run_from_warmup(config, FixedLoop())
    # As many as the profile's 60 s afford: four over the bound tolerated, 1157 queries, 58 s.
    assert config.loadgen["min_query_count"] == early_stopping_min_queries("Server", 0.99, 4) == 1157
    busier = stream("Server", target_qps=40)
    size_run_from_warmup(busier, FixedLoop())
    # 2277 queries (12 over tolerated) take 57 s at 40 QPS; 2409 (13) would take 60.2 s.
    assert busier.loadgen["min_query_count"] == early_stopping_min_queries("Server", 0.99, 12) == 2277
    fast = stream("Server", target_qps=10_000)
    size_run_from_warmup(fast, FixedLoop())
    # The minimum duration alone brings 50,000 queries: the count is left as it was.
    assert fast.loadgen["min_query_count"] == 100


def test_server_at_a_low_load_gets_fewer_stalls_tolerated_or_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    config = stream("Server", target_qps=10)  # 1001 queries would take 100 s; 662 take 66 s; 459 46 s
    size_run_from_warmup(config, FixedLoop())
    assert config.loadgen["min_query_count"] == 459
    slow = stream("Server", target_qps=2)
    with caplog.at_level(logging.WARNING):
        size_run_from_warmup(slow, FixedLoop())
    assert slow.loadgen["min_query_count"] == 100
    assert "will be INVALID" in caplog.text and "230 s" in caplog.text


def test_user_query_count_is_kept_but_its_shortfall_is_said(caplog: pytest.LogCaptureFixture) -> None:
    config = stream("MultiStream", min_query_count=100)
    with caplog.at_level(logging.WARNING):
        size_run_from_warmup(config, SlowLoop(0.015))
    assert config.loadgen["min_query_count"] == 100
    assert "will be INVALID" in caplog.text and "min_query_count 100 is from CLI" in caplog.text


def test_submission_profile_keeps_mlperf_counts() -> None:
    config = stream("Server", run_profile="submission", target_qps=20)
    before = dict(config.loadgen)
    size_run_from_warmup(config, FixedLoop())
    assert config.loadgen == before  # 600 s at 20 QPS: 12,000 queries


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
    # 16 Server queries are too few for LoadGen's early stopping (p99 needs 459): a finished
    # run whose result is INVALID, exit code 6, its result kept.
    from plumbing.errors import INVALID_RESULT_EXIT

    assert proc.returncode == (0 if scenario == "Offline" else INVALID_RESULT_EXIT), proc.stdout + proc.stderr
    measurements = next((tmp_path / "out").rglob("measurements.json"))
    performance = json.loads(measurements.read_text())["runs"]["performance"]
    assert performance["status"] == "ok"
    assert performance["harness"]["performance_sample_count"] == 8


def test_the_sizing_log_line_says_what_it_replaced_in_words(caplog) -> None:
    # Was: "offline_expected_qps None -> 947.7874692481724 (warm-up measurement; was None from )".
    import logging

    config = offline()
    config.loadgen.pop("offline_expected_qps", None)  # no layer set it: LoadGen's own default
    config.provenance.pop("loadgen.offline_expected_qps", None)
    with caplog.at_level(logging.INFO, logger="runs.sizing"):
        size_run_from_warmup(config, FixedLoop())
    (line,) = [r.getMessage() for r in caplog.records if "offline_expected_qps" in r.getMessage()]
    rate = config.loadgen["offline_expected_qps"]
    assert line == f"sizing: offline_expected_qps {rate:.4g} from a warm-up measurement (before: LoadGen's default)"
    assert config.provenance["loadgen.offline_expected_qps"] == "warm-up measurement (replaced LoadGen's default)"


@pytest.mark.parametrize("scenario", ["SingleStream", "MultiStream"])
def test_a_fast_warm_up_still_gets_the_queries_early_stopping_needs(scenario: str) -> None:
    # At the warm-up's pace the minimum duration alone would run enough queries; a run
    # slower than its warm-up (a busy host: the 2-core CI machine under load) must still
    # get them, so the count is raised anyway.
    from sut.settings import latency_percentile

    config = resolve(CliRequest(gpu="cpu", scenario=scenario, backend="null", run_profile="quick"))
    size_run_from_warmup(config, InstantLoop())
    needed = early_stopping_min_queries(scenario, latency_percentile(scenario, config.loadgen))
    assert config.loadgen["min_query_count"] >= needed
