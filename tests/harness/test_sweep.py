"""A whole study under real LoadGen on the CPU, with a backend whose capacity is known:
every batch takes a fixed service time whatever its size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from plumbing.errors import ConfigError, OutputError, RunFailed
from runs.results import load_measurements
from runs.runner import load_backend
from studies.slo import Slo
from studies.study import StudyPlan, StudyStore, point_id
from harness.sweep import main
from studies.sweeper import Sweep
from sut.backends.base import DonePending
from sut.backends.null_backend import NullBackend

ROOT = Path(__file__).resolve().parents[2]
SERVICE_S = 0.004
SERVER_BATCH = 8
CAPACITY = SERVER_BATCH / SERVICE_S  # 2000 samples/s at full batches


class FixedServiceBackend(NullBackend):
    """The null backend's answers, after a fixed service time per batch."""

    def run_batch(self, rows: np.ndarray):
        time.sleep(SERVICE_S)
        return DonePending(self._answers[rows])

    def time_tight_loop(self, batch_size: int, iterations: int) -> float:
        return iterations * SERVICE_S


class Factory:
    def __init__(self, fail_at_batch: int | None = None) -> None:
        self.loads = 0
        self.fail_at_batch = fail_at_batch

    def __call__(self, config, extra):
        self.loads += 1
        backend = load_backend(config, extra)  # the real null backend, resolved as usual
        fixed = FixedServiceBackend(backend.model, backend.options)
        fixed.load()
        if self.fail_at_batch is not None:
            limit = self.fail_at_batch

            def failing(rows, run=fixed.run_batch):
                if len(rows) >= limit:
                    raise RuntimeError("simulated device error")
                return run(rows)

            fixed.run_batch = failing
        return fixed


def plan(**overrides) -> StudyPlan:
    values = dict(
        models=("resnet18",), precisions=("fp32",), backends=("null",),
        scenarios=("Offline", "Server", "SingleStream"), batch_sizes=(1, 4), repeats=2,
        duration_ms=300, search_ms=500, confirm_ms=900, slo=Slo(99.0, 40.0), ladder=(0.5, 1.0),
        server_max_batch=SERVER_BATCH, batch_timeout_us=2000, search_tolerance=0.1,
        base={"gpu": "cpu", "image_size": 32, "dataset_count": 64, "min_query_count": 32},
    )
    values.update(overrides)
    return StudyPlan(**values)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    factory = Factory()
    data = Sweep(plan(), root, "python -m harness.sweep ...", backend_factory=factory).run()
    return root, data, factory


def test_study_json_follows_the_contract(study):
    root, data, _ = study
    assert data == json.loads((root / "study.json").read_text())
    assert data["schema"] == "deepgap.study/1" and data["command"].startswith("python -m harness.sweep")
    system = data["system"]
    assert system["device"] == "CPU" and system["gpu_count"] == 0 and system["driver"] is None
    assert system["software"]["mlcommons-loadgen"]
    ids = [p["id"] for p in data["points"]]
    assert len(ids) == len(set(ids)) == 2 + 2 + 1  # Offline bs 1 and 4, two ladder loads, SingleStream
    for point in data["points"]:
        assert len(point["runs"]) == 2
        assert point["stats"]["samples_per_s"]["n"] == 2
        assert point["stats"]["watts"] is None and point["stats"]["samples_per_joule"] is None
        for run in point["runs"]:
            assert set(run["latency_ms"]) == {"p50", "p90", "p99"}
            assert run["power"] == {"source": "absent", "reason": "CPU run: there is no GPU to measure",
                                    "label": "GPU-only"}
            saved = load_measurements(root / run["measurements"])
            assert saved["power"] == run["power"]  # top level of measurements.json
            result = saved["runs"]["performance"]
            assert result["sweep"]["point"] == point["id"]
            assert result["equivalent_command"].startswith("python harness/run.py")
            assert result["environment"]["software"]["mlcommons-loadgen"]


def test_offline_curve_rises_with_batch_and_has_knees(study):
    _, data, _ = study
    (curve,) = data["curves"]
    rates = {int(b): v for b, v in curve["points"].items()}
    assert set(rates) == {1, 4}
    # a batch costs the same 4 ms at any size: bs 4 carries about 4x the samples
    assert rates[4] > 2.5 * rates[1]
    assert rates[1] <= 1 / SERVICE_S * 1.05
    assert curve["knee_90"] == curve["knee_95"] == 4 and curve["peak"] == rates[4]
    offline = [p for p in data["points"] if p["scenario"] == "Offline"]
    assert all(r["valid"] for p in offline for r in p["runs"])


def test_server_search_finds_the_known_capacity_and_records_every_attempt(study):
    root, data, _ = study
    (search,) = data["slo_searches"]
    assert search["percentile"] == 99.0 and search["latency_ms"] == 40.0
    assert search["confirmed"]
    assert 0.35 * CAPACITY <= search["max_qps"] <= 1.1 * CAPACITY
    attempts = search["attempts"]
    assert any(not a["valid"] for a in attempts)  # it found the edge
    # Each invalid attempt names the LoadGen rule it failed, read from its summary: above
    # the capacity the backlog breaks the latency bound.
    assert {a["failed_rule"] for a in attempts if not a["valid"]} == {"latency bound"}
    assert all(a["failed_rule"] is None for a in attempts if a["valid"])
    assert search["stopped"] is None
    assert attempts[-1]["phase"] == "confirm" and attempts[-1]["valid"]
    assert attempts[-1]["target_qps"] == pytest.approx(search["max_qps"])
    for a in attempts:
        assert (root / a["measurements"]).exists()
        assert a["duration_ms"] == (900 if a["phase"] == "confirm" else 500)
    ladder = [p for p in data["points"] if p["id"] in search["ladder"]]
    assert [p["target_qps"] for p in ladder] == pytest.approx([0.5 * search["max_qps"], search["max_qps"]])
    assert all(p["batch_size"] == SERVER_BATCH for p in ladder)
    settings = load_measurements(root / attempts[0]["measurements"])["runs"]["performance"]["config"]["loadgen"]
    assert settings["server_target_latency_ns"] == 40_000_000
    assert settings["server_target_latency_percentile"] == pytest.approx(0.99)


def test_rerun_resumes_without_redoing_finished_points(study, tmp_path):
    root, data, _ = study
    factory = Factory()
    again = Sweep(plan(), root, "python -m harness.sweep ...", backend_factory=factory).run()
    assert factory.loads == 0  # nothing to run: the backend is never even loaded
    assert again["created_utc"] == data["created_utc"]
    assert [p["runs"] for p in again["points"]] == [p["runs"] for p in data["points"]]


def test_interrupted_point_reruns_only_its_missing_repeat(study, tmp_path):
    root, data, _ = study
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(root), str(copy)], check=True)
    pid = point_id("resnet18", "fp32", "null", "Offline", batch_size=4)
    (copy / "points" / f"{pid}.json").unlink()
    second = next(copy.glob(f"runs/{pid}/r2/results/*/*/*/measurements.json"))
    second.unlink()  # repeat 2 was cut off before its result was saved
    first = next(copy.glob(f"runs/{pid}/r1/results/*/*/*/measurements.json"))
    before = first.read_text()
    factory = Factory()
    resumed = Sweep(plan(), copy, "python -m harness.sweep ...", backend_factory=factory).run()
    assert factory.loads == 1
    assert first.read_text() == before  # the saved repeat was kept, not rerun
    assert second.exists()
    point = next(p for p in resumed["points"] if p["id"] == pid)
    assert [r["repeat"] for r in point["runs"]] == [1, 2]


def test_a_different_plan_in_the_same_folder_is_refused(study):
    root, _, _ = study
    with pytest.raises(ConfigError, match="different study.*repeats"):
        Sweep(plan(repeats=3), root, "cmd", backend_factory=Factory()).run()


def test_a_study_another_sweep_is_running_is_refused(tmp_path, held_elsewhere):
    pid = held_elsewhere(tmp_path / "s")
    with pytest.raises(OutputError, match=rf"in use by another deepgap study \(pid {pid}\)"):
        Sweep(plan(), tmp_path / "s", "cmd", backend_factory=Factory()).run()
    assert not (tmp_path / "s" / "plan.json").exists()


def test_a_failing_point_is_recorded_and_the_rest_of_the_study_goes_on(tmp_path):
    small = plan(scenarios=("Offline",), batch_sizes=(1, 4), repeats=1)
    with pytest.raises(RunFailed, match="1 part.*bs4"):
        Sweep(small, tmp_path, "cmd", backend_factory=Factory(fail_at_batch=4)).run()
    data = json.loads((tmp_path / "study.json").read_text())
    assert [p["id"] for p in data["points"]] == [point_id("resnet18", "fp32", "null", "Offline", batch_size=1)]
    assert not StudyStore(tmp_path).finished_point(point_id("resnet18", "fp32", "null", "Offline", batch_size=4))


def test_a_search_whose_runs_fail_early_stopping_says_so_and_stops(tmp_path):
    # Issue 11, item 14: every p99 well within the bound, each run too short for LoadGen's
    # early stopping, and the search halved the load down to 1.7 QPS at a minute an attempt.
    short = plan(scenarios=("Server",), search_ms=100, slo=Slo(99.0, 100.0))
    with pytest.raises(RunFailed) as info:
        Sweep(short, tmp_path, "cmd", backend_factory=Factory()).run()
    message = str(info.value)
    assert "no Server load met p99 <= 100 ms: at " in message
    assert "failed LoadGen's early stopping rule (Processed" in message and "a lower load would only" in message
    (search,) = json.loads((tmp_path / "study.json").read_text())["slo_searches"]
    attempts = search["attempts"]
    assert len(attempts) <= 2 and attempts[-1]["failed_rule"] == "early stopping"
    assert attempts[-1]["latency_ms"]["p99"] < 100


@pytest.mark.parametrize("args, words", [
    (["--slo", "p99-15ms"], ["cannot read SLO", "p99:15ms"]),
    (["--ladder", "0.5", "1.5"], ["--ladder", "(0, 1]"]),
    (["--batch-sizes", "0"], ["--batch-sizes", "positive"]),
    (["--precisions", "fp16"], ["fp16", "CUDA"]),
])
def test_cli_errors_are_one_line(tmp_path, args, words):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", "harness.sweep", "--study", str(tmp_path / "s"), "--gpu", "cpu",
                           *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sweep: error:"), proc.stderr
    for word in words:
        assert word in lines[0]
    assert not (tmp_path / "s").exists() or not (tmp_path / "s" / "points").exists()


def test_dry_run_sizes_the_study(capsys):
    assert main(["--study", "unused", "--gpu", "cpu", "--models", "resnet18", "resnet50", "--repeats", "2",
                 "--batch-sizes", "1", "2", "--scenarios", "Offline", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 group(s) (resnet18-fp32-onnxruntime, resnet50-fp32-onnxruntime) on CPU, about 8 runs" in out


def test_cached_dataset_returns_the_same_samples_in_any_order():
    from studies.sweeper import CachedDataset
    from sut.data import SyntheticDataset

    plain = SyntheticDataset(count=16, image_size=32)
    cached = CachedDataset(SyntheticDataset(count=16, image_size=32))
    order = np.array([5, 3, 5, 15, 0])
    assert np.array_equal(cached.load(order), plain.load(order))
    assert np.array_equal(cached.load(order[::-1]), plain.load(order[::-1]))
    assert (cached.count, cached.image_size, cached.describe()) == (16, 32, plain.describe())


def test_offline_sizing_errs_long_on_a_first_run_and_uses_the_measured_rate_after():
    """One batch's round trip understates a pipelined GPU (the first H100 study's small
    batches ran up to 2.2x faster and ended before their minimum duration); an earlier
    repeat's measured rate is the best estimate."""
    from types import SimpleNamespace

    from studies.group import FIRST_RUN_MARGIN, Group

    group = SimpleNamespace(offline_rates={})
    assert Group.offline_expected(group, 8, 1000.0) == FIRST_RUN_MARGIN * 1000.0
    group.offline_rates[4] = 300.0  # the harness reached far less than the tight loop
    assert Group.offline_expected(group, 8, 1000.0) == FIRST_RUN_MARGIN * 600.0
    group.offline_rates[8] = 2400.0
    assert Group.offline_expected(group, 8, 1000.0) == 2400.0
    assert FIRST_RUN_MARGIN >= 2.23


# -- the sweep's command line (issue 12) -------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    # Was: "2 group(s), about 244 runs, at least 11.8 min", then the real run refused with
    # run.py's flag (--precision fp16).
    (["--precisions", "fp16", "fp32"],
     "--precisions fp16 needs a CUDA GPU (this run is on the CPU); use --precisions fp32 on the CPU"),
    (["--precisions", "fp16", "--backends", "torch"],
     "resnet50-fp16-torch: --precisions fp16 needs a CUDA GPU (this run is on the CPU); use --precisions fp32"),
    (["--precisions", "fp32", "--backends", "tensorrt"], "resnet50-fp32-tensorrt: the tensorrt backend needs a CUDA GPU"),
])
def test_dry_run_resolves_every_group_and_refuses_in_the_sweeps_words(tmp_path, capsys, args, message):
    assert main(["--study", str(tmp_path / "s"), "--gpu", "cpu", *args, "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err and "--precision " not in captured.err
    assert not (tmp_path / "s").exists()


def test_the_sweep_and_a_run_choose_the_same_backend(monkeypatch):
    """One rule (backend_choice.default_backend): a sweep without --backends measures what
    `harness/run.py --precision P` would (the sweep defaulted to torch, the run to onnxruntime)."""
    from runs import backend_choice
    from harness import sweep as sweep_module
    from runs.backend_choice import choose_backend
    from runs.config import CliRequest
    from runs.device import DeviceChoice, resolve_device
    from harness.sweep import build_parser, plan_from_args

    cpu = resolve_device("cpu")
    cuda = DeviceChoice(cpu.profile, "cuda:0", "NVIDIA H100 80GB HBM3", 1)  # no GPU here: the choice only
    monkeypatch.setattr(backend_choice, "_installed", lambda module: module in ("onnxruntime", "tensorrt"))
    for device, precision in ((cpu, "fp32"), (cpu, "int8"), (cuda, "fp16"), (cuda, "int8")):
        monkeypatch.setattr(sweep_module, "resolve_device", lambda gpu, gpus="1", device=device: device)
        run = choose_backend(CliRequest(precision=precision), device)
        args = build_parser().parse_args(["--study", "unused", "--precisions", precision])
        assert plan_from_args(args).backends == (run,), (device.device, precision)
    assert [choose_backend(CliRequest(precision=p), d) for d, p in ((cpu, "fp32"), (cuda, "fp16"), (cuda, "int8"))] \
        == ["onnxruntime", "torch", "tensorrt"]


def test_precisions_whose_default_backends_differ_need_backends(monkeypatch, capsys):
    from runs import backend_choice
    from harness import sweep as sweep_module
    from runs.device import DeviceChoice, resolve_device

    cuda = DeviceChoice(resolve_device("cpu").profile, "cuda:0", "NVIDIA H100 80GB HBM3", 1)
    monkeypatch.setattr(backend_choice, "_installed", lambda module: True)
    monkeypatch.setattr(sweep_module, "resolve_device", lambda gpu, gpus="1": cuda)
    assert main(["--study", "unused", "--precisions", "fp16", "int8", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "(fp16: torch, int8: tensorrt)" in err and "give --backends" in err


def test_sweep_json_summarises_the_saved_study_and_logs_beside_it(tmp_path, capsys):
    study = tmp_path / "s"
    args = ["--study", str(study), "--gpu", "cpu", "--models", "resnet18", "--backends", "null", "--scenarios",
            "Offline", "--batch-sizes", "1", "4", "--repeats", "1", "--duration-ms", "300", "--image-size", "32",
            "--dataset-count", "64", "--json", str(tmp_path / "sweep.json")]
    assert main(args) == 0
    data = json.loads((tmp_path / "sweep.json").read_text())
    saved = json.loads((study / "study.json").read_text())
    assert (data["schema"], data["command"], data["exit_code"]) == ("deepgap.summary/1", "sweep", 0)
    assert [p["id"] for p in data["points"]] == [p["id"] for p in saved["points"]] and len(data["points"]) == 2
    for point, stored in zip(data["points"], saved["points"]):
        assert point["samples_per_s"] == stored["stats"]["samples_per_s"]["mean"] > 0
        assert point["runs"] == 1 and point["valid_runs"] == stored["stats"]["valid_runs"]
    assert data["system"] == saved["system"]["name"] and data["system"].startswith("CPU-")
    log = (study / "sweep.log").read_text()
    assert "starting study in" in log and "resnet18-fp32-null-Offline-bs4 r1" in log
    err = capsys.readouterr().err
    assert "I deepgap.sweep: [1/~2]" in err and "I runs.runner" not in err  # one line per run, no run details
    assert main([*args[:-1], str(tmp_path / "dry.json"), "--dry-run"]) == 0
    dry = json.loads((tmp_path / "dry.json").read_text())
    assert dry["dry_run"] is True and dry["groups"] == ["resnet18-fp32-null"] and dry["runs"] == 2


def test_a_compiled_study_is_another_system_than_the_eager_one():
    from runs.config import CliRequest, resolve
    from studies.sweeper import study_system

    config = resolve(CliRequest(gpu="cpu", backend="torch", model="resnet18", image_size=32))
    eager = study_system(config, {"none"})
    compiled = study_system(config, {"default"})
    assert compiled["name"] == eager["name"] + "-inductor"
    assert (eager["torch_compile"], compiled["torch_compile"]) == ("none", "default")
    assert study_system(config, {"max-autotune"})["name"].endswith("-inductor-max-autotune")


def test_a_study_plan_from_before_the_compile_modes_still_resolves(tmp_path):
    """Old study.json plans stored --compile as a flag; a tensorrt group takes no compile."""
    plan = StudyPlan(models=("resnet18",), backends=("torch",), base={"gpu": "cpu", "compile": False})
    assert plan.request("resnet18", "fp32", "torch", "Offline", tmp_path).compile == "none"
    assert StudyPlan(base={"gpu": "cpu", "compile": True}).request(
        "resnet18", "fp32", "torch", "Offline", tmp_path).compile == "max-autotune"
    compiled = StudyPlan(backends=("torch",), base={"gpu": "cpu", "compile": "default"})
    assert compiled.request("resnet18", "fp32", "onnxruntime", "Offline", tmp_path).compile is None
