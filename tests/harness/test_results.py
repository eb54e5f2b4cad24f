"""Results layout: no silent overwrite, measurements.json sections, and one real run's files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import OutputError
from harness.results import (
    RESULT_SCHEMA_VERSION,
    ResultPaths,
    load_measurements,
    prepare_run_dir,
    record_run,
)
from harness.userconf import UserConf, key_rule, KNOWN_KEYS

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = "CPU_torch_fp32"
TINY = ["--image-size", "32", "--model", "resnet18", "--dataset-count", "64",
        "--min-duration-ms", "200", "--min-query-count", "16", "--target-qps", "200",
        "--gpu", "cpu", "--backend", "torch", "--no-progress", "-q"]


def paths(root: Path, mode: str = "performance") -> ResultPaths:
    return ResultPaths(root, SYSTEM, "resnet18", "Offline", mode)


# -- paths ------------------------------------------------------------------------------------------


def test_result_paths_layout(tmp_path: Path) -> None:
    perf, acc = paths(tmp_path), paths(tmp_path, "accuracy")
    scenario_dir = tmp_path / "results" / SYSTEM / "resnet18" / "Offline"
    assert perf.scenario_dir == acc.scenario_dir == scenario_dir
    assert perf.run_dir == scenario_dir / "performance" / "run_1"
    assert acc.run_dir == scenario_dir / "accuracy"
    assert perf.measurements == scenario_dir / "measurements.json"
    assert perf.user_conf == scenario_dir / "user.conf"
    assert perf.system_json == tmp_path / "systems" / f"{SYSTEM}.json"


# -- prepare_run_dir ------------------------------------------------------------------------------------


def test_prepare_creates_the_run_dir(tmp_path: Path) -> None:
    p = paths(tmp_path / "out")
    prepare_run_dir(p, overwrite=False)
    assert p.run_dir.is_dir()
    assert list(p.run_dir.iterdir()) == []  # the write probe is gone


def test_prepare_accepts_an_existing_empty_dir(tmp_path: Path) -> None:
    p = paths(tmp_path)
    p.run_dir.mkdir(parents=True)
    prepare_run_dir(p, overwrite=False)
    assert p.run_dir.is_dir()


def test_prepare_refuses_a_non_empty_dir(tmp_path: Path) -> None:
    p = paths(tmp_path)
    p.run_dir.mkdir(parents=True)
    summary = p.run_dir / "mlperf_log_summary.txt"
    summary.write_text("earlier result\n")
    before = summary.stat().st_mtime_ns
    with pytest.raises(OutputError) as info:
        prepare_run_dir(p, overwrite=False)
    message = str(info.value)
    assert "--overwrite" in message and str(p.run_dir) in message and "\n" not in message
    assert summary.read_text() == "earlier result\n"
    assert summary.stat().st_mtime_ns == before


def test_prepare_with_overwrite_clears_the_dir(tmp_path: Path) -> None:
    p = paths(tmp_path)
    (p.run_dir / "sub").mkdir(parents=True)
    (p.run_dir / "mlperf_log_summary.txt").write_text("earlier result\n")
    (p.run_dir / "sub" / "x").write_text("x")
    p.measurements.write_text("{}")  # outside the run dir: kept
    prepare_run_dir(p, overwrite=True)
    assert p.run_dir.is_dir() and list(p.run_dir.iterdir()) == []
    assert p.measurements.read_text() == "{}"


def test_overwrite_of_one_mode_keeps_the_other(tmp_path: Path) -> None:
    perf, acc = paths(tmp_path), paths(tmp_path, "accuracy")
    for p in (perf, acc):
        p.run_dir.mkdir(parents=True)
        (p.run_dir / "log.txt").write_text(p.mode)
    prepare_run_dir(perf, overwrite=True)
    assert (acc.run_dir / "log.txt").read_text() == "accuracy"


def test_prepare_under_a_file_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot write results to"):
        prepare_run_dir(paths(blocker / "out"), overwrite=False)


# -- record_run / load_measurements -------------------------------------------------------------------------


def test_record_run_writes_a_versioned_file(tmp_path: Path) -> None:
    p = paths(tmp_path)
    record_run(p, {"status": "ok", "value": 1.5})
    data = load_measurements(p.measurements)
    assert data["schema_version"] == RESULT_SCHEMA_VERSION
    assert (data["system"], data["model"], data["scenario"]) == (SYSTEM, "resnet18", "Offline")
    assert data["runs"] == {"performance": {"status": "ok", "value": 1.5}}
    assert not [f for f in p.scenario_dir.iterdir() if f.name.endswith(".tmp")]


def test_record_run_keeps_the_other_modes_section(tmp_path: Path) -> None:
    perf, acc = paths(tmp_path), paths(tmp_path, "accuracy")
    record_run(perf, {"value": 100})
    record_run(acc, {"accuracy": 0.76})
    data = load_measurements(perf.measurements)
    assert data["runs"] == {"performance": {"value": 100}, "accuracy": {"accuracy": 0.76}}
    record_run(perf, {"value": 200})  # a newer performance run replaces only its own section
    data = load_measurements(perf.measurements)
    assert data["runs"] == {"performance": {"value": 200}, "accuracy": {"accuracy": 0.76}}


def test_record_run_refuses_to_clobber_bad_json(tmp_path: Path) -> None:
    p = paths(tmp_path)
    p.scenario_dir.mkdir(parents=True)
    p.measurements.write_text("{not json")
    with pytest.raises(OutputError, match="not valid JSON"):
        record_run(p, {"value": 1})
    assert p.measurements.read_text() == "{not json"


def test_load_measurements_rejects_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "measurements.json"
    path.write_text('{"schema_version": 1,')
    with pytest.raises(OutputError, match="not valid JSON") as info:
        load_measurements(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_load_measurements_rejects_other_schema_versions(tmp_path: Path, version) -> None:
    path = tmp_path / "measurements.json"
    data = {"runs": {}} if version is None else {"schema_version": version, "runs": {}}
    path.write_text(json.dumps(data))
    with pytest.raises(OutputError, match="result schema") as info:
        load_measurements(path)
    assert str(path) in str(info.value)


def test_load_measurements_missing_file(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="no such result file"):
        load_measurements(tmp_path / "absent.json")


# -- one real run -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("real-run") / "out"
    env = dict(os.environ, DEEPGAP_CACHE=str(tmp_path_factory.mktemp("cache")), CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "harness/run.py", *TINY, "--output", str(output)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return output


def scenario_dir(output: Path) -> Path:
    return output / "results" / SYSTEM / "resnet18" / "Offline"


def test_real_run_layout(real_run: Path) -> None:
    assert [p.name for p in (real_run / "results").iterdir()] == [SYSTEM]
    run_dir = scenario_dir(real_run) / "performance" / "run_1"
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "settings.json"):
        assert (run_dir / name).is_file(), name
        assert (run_dir / name).stat().st_size > 0, name
    assert (scenario_dir(real_run) / "measurements.json").is_file()
    assert (scenario_dir(real_run) / "user.conf").is_file()
    assert (real_run / "systems" / f"{SYSTEM}.json").is_file()
    assert not list(real_run.rglob("*.tmp"))
    assert not list(real_run.rglob(".write-test"))


def test_real_run_measurements(real_run: Path) -> None:
    data = load_measurements(scenario_dir(real_run) / "measurements.json")
    assert (data["system"], data["model"], data["scenario"]) == (SYSTEM, "resnet18", "Offline")
    assert set(data["runs"]) == {"performance"}
    run = data["runs"]["performance"]
    assert run["status"] == "ok"
    summary = run["summary"]
    assert isinstance(summary["valid"], bool)
    assert summary["valid"] == (not summary["invalid_reasons"])
    assert summary["metric"] == "Samples per second"
    assert isinstance(summary["value"], (int, float)) and summary["value"] > 0
    percentiles = summary["percentiles_ns"]
    assert "50.00" in percentiles and "99.00" in percentiles
    assert all(v > 0 for v in percentiles.values())
    assert percentiles["50.00"] <= percentiles["99.00"]
    assert run["config"]["system_name"] == SYSTEM
    assert run["harness"]["samples_completed"] > 0


def test_real_run_settings_json(real_run: Path) -> None:
    settings = json.loads((scenario_dir(real_run) / "performance" / "run_1" / "settings.json").read_text())
    assert settings["system_name"] == SYSTEM
    assert settings["backend"] == "torch"
    assert settings["loadgen"]["min_duration_ms"] == 200
    assert settings["provenance"]["loadgen.min_duration_ms"] == "CLI"
    assert settings["loadgen"]["schedule_rng_seed"] == 16159082839903944936


def test_real_run_user_conf_parses_back(real_run: Path) -> None:
    path = scenario_dir(real_run) / "user.conf"
    conf = UserConf.parse(path)  # every line is valid user.conf syntax
    assert conf.entries and all(e.model == "resnet18" and e.scenario == "Offline" for e in conf.entries)
    resolved = {attr: value for attr, (value, _) in conf.resolve("resnet18", "Offline").items()}
    settings = json.loads((scenario_dir(real_run) / "performance" / "run_1" / "settings.json").read_text())
    attrs = {key_rule("Offline", k).attr for k in KNOWN_KEYS if k != "mode" and key_rule("Offline", k)}
    expected = {a: v for a, v in settings["loadgen"].items() if a in attrs}
    assert resolved == expected
    assert resolved["offline_expected_qps"] == 200
    assert resolved["min_query_count"] == 16


def test_real_run_system_json(real_run: Path) -> None:
    system = json.loads((real_run / "systems" / f"{SYSTEM}.json").read_text())
    assert system["system_name"] == SYSTEM
    software = system["software"]
    for package in ("torch", "numpy", "mlcommons-loadgen"):
        assert software.get(package), f"no version for {package}"
    assert system["backend"]["backend"] == "torch"
