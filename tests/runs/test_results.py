"""Results layout: no silent overwrite, measurements.json sections, and one real run's files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plumbing.errors import OutputError
from plumbing.files import LOCK_FILE, folder_lock
from runs.results import (
    INTERRUPTED_MARKER,
    RESULT_SCHEMA_VERSION,
    ResultPaths,
    RunFolder,
    load_measurements,
    record_run,
    recover,
    write_json_atomic,
)
from runs.userconf import UserConf, key_rule, KNOWN_KEYS
from plumbing.errors import INVALID_RESULT_EXIT
from tests.conftest import cpu_system

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = cpu_system("torch", "fp32")
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


# -- RunFolder: the lock, the checks, the partial folder and the swap -------------------------------------


def finish(folder: RunFolder, text: str = "new result\n", result: dict | None = None) -> None:
    (folder.staged.run_dir / "mlperf_log_summary.txt").write_text(text)
    folder.commit(result or {"status": "ok"})


def test_a_run_is_written_into_a_marked_partial_folder(tmp_path: Path) -> None:
    p = paths(tmp_path / "out")
    with RunFolder(p, overwrite=False) as folder:
        partial = folder.staged.run_dir
        assert partial.parent == p.run_dir.parent and partial.name == f"run_1.partial-{os.getpid()}"
        marker = json.loads((partial / INTERRUPTED_MARKER).read_text())
        assert marker["status"] == "interrupted" and marker["run_id"] == folder.run_id
        assert not p.run_dir.exists() and not p.measurements.exists()
        finish(folder)
    assert (p.run_dir / "mlperf_log_summary.txt").read_text() == "new result\n"
    assert not (p.run_dir / INTERRUPTED_MARKER).exists() and not partial.exists()
    assert load_measurements(p.measurements)["runs"]["performance"]["run_id"] == folder.run_id
    assert sorted(f.name for f in p.run_dir.parent.iterdir()) == ["run_1"]
    assert not (p.scenario_dir / LOCK_FILE).exists()  # released with the folder


def test_a_run_that_fails_before_its_result_leaves_nothing(tmp_path: Path) -> None:
    p = paths(tmp_path)
    with pytest.raises(RuntimeError), RunFolder(p, overwrite=False) as folder:
        (folder.staged.run_dir / "mlperf_log_detail.txt").write_text("half a run")
        raise RuntimeError("the backend failed to load")
    assert not p.run_dir.exists() and not folder.staged.run_dir.exists() and not p.measurements.exists()


def test_an_existing_empty_run_dir_is_not_a_result(tmp_path: Path) -> None:
    p = paths(tmp_path)
    p.run_dir.mkdir(parents=True)
    with RunFolder(p, overwrite=False) as folder:
        finish(folder)
    assert (p.run_dir / "mlperf_log_summary.txt").is_file()


def test_a_result_is_not_replaced_without_overwrite(tmp_path: Path) -> None:
    p = paths(tmp_path)
    p.run_dir.mkdir(parents=True)
    summary = p.run_dir / "mlperf_log_summary.txt"
    summary.write_text("earlier result\n")
    before = summary.stat().st_mtime_ns
    with pytest.raises(OutputError) as info:
        RunFolder(p, overwrite=False).__enter__()
    message = str(info.value)
    assert "already holds a result" in message and "--overwrite" in message
    assert str(p.run_dir) in message and "\n" not in message
    assert summary.read_text() == "earlier result\n" and summary.stat().st_mtime_ns == before
    assert sorted(f.name for f in p.run_dir.parent.iterdir()) == ["run_1"]  # no partial left


def test_overwrite_keeps_the_earlier_result_until_the_new_one_is_recorded(tmp_path: Path) -> None:
    p = paths(tmp_path)
    (p.run_dir / "sub").mkdir(parents=True)
    (p.run_dir / "mlperf_log_summary.txt").write_text("earlier result\n")
    (p.run_dir / "sub" / "x").write_text("x")
    record_run(p, {"status": "ok", "value": 1})
    with RunFolder(p, overwrite=True) as folder:
        # The whole run happens here; the earlier result and its record are untouched.
        assert (p.run_dir / "mlperf_log_summary.txt").read_text() == "earlier result\n"
        assert load_measurements(p.measurements)["runs"]["performance"]["value"] == 1
        finish(folder, result={"status": "ok", "value": 2})
    assert sorted(f.name for f in p.run_dir.iterdir()) == ["mlperf_log_summary.txt"]
    assert (p.run_dir / "mlperf_log_summary.txt").read_text() == "new result\n"
    assert load_measurements(p.measurements)["runs"]["performance"]["value"] == 2
    assert sorted(f.name for f in p.run_dir.parent.iterdir()) == ["run_1"]  # nothing set aside is left


def test_a_failed_overwrite_keeps_the_earlier_result(tmp_path: Path) -> None:
    p = paths(tmp_path)
    p.run_dir.mkdir(parents=True)
    (p.run_dir / "mlperf_log_summary.txt").write_text("earlier result\n")
    record_run(p, {"status": "ok", "value": 1})
    recorded = p.measurements.read_bytes()
    with pytest.raises(KeyboardInterrupt), RunFolder(p, overwrite=True):
        raise KeyboardInterrupt
    assert (p.run_dir / "mlperf_log_summary.txt").read_text() == "earlier result\n"
    assert p.measurements.read_bytes() == recorded
    assert sorted(f.name for f in p.run_dir.parent.iterdir()) == ["run_1"]


def test_overwrite_of_one_mode_keeps_the_other(tmp_path: Path) -> None:
    perf, acc = paths(tmp_path), paths(tmp_path, "accuracy")
    for p in (perf, acc):
        p.run_dir.mkdir(parents=True)
        (p.run_dir / "log.txt").write_text(p.mode)
    with RunFolder(perf, overwrite=True) as folder:
        finish(folder)
    assert (acc.run_dir / "log.txt").read_text() == "accuracy"


def test_a_run_under_a_file_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot write results to"):
        RunFolder(paths(blocker / "out"), overwrite=False).__enter__()


@pytest.mark.parametrize("where", ["measurements", "system_json", "user_conf"])
def test_a_folder_where_a_result_file_goes_is_refused_first(tmp_path: Path, where: str) -> None:
    p = paths(tmp_path)
    getattr(p, where).mkdir(parents=True)
    with pytest.raises(OutputError) as info:
        RunFolder(p, overwrite=True).__enter__()
    assert str(getattr(p, where)) in str(info.value) and "should be a file" in str(info.value)
    assert not p.run_dir.parent.exists()  # refused before anything was started


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\xff\xfe"])
def test_an_unreadable_measurements_json_is_refused_first(tmp_path: Path, content: str) -> None:
    p = paths(tmp_path)
    p.scenario_dir.mkdir(parents=True)
    p.measurements.write_bytes(content.encode("latin-1"))
    with pytest.raises(OutputError, match="move it aside") as info:
        RunFolder(p, overwrite=True).__enter__()
    assert str(p.measurements) in str(info.value) and "\n" not in str(info.value)
    assert p.measurements.read_bytes() == content.encode("latin-1")
    assert not p.run_dir.parent.exists()


# -- the lock ---------------------------------------------------------------------------------------------


def test_a_second_run_into_a_held_folder_is_refused_naming_the_holder(tmp_path: Path, held_elsewhere) -> None:
    p = paths(tmp_path)
    pid = held_elsewhere(p.scenario_dir)
    with pytest.raises(OutputError) as info:
        RunFolder(p, overwrite=True).__enter__()
    message = str(info.value)
    assert f"in use by another deepgap run (pid {pid})" in message and str(p.scenario_dir) in message
    assert not p.run_dir.parent.exists()


def test_the_lock_is_reentrant_within_one_process(tmp_path: Path) -> None:
    p = paths(tmp_path)
    with folder_lock(p.scenario_dir):  # as a submission holds its folder for all its runs
        with RunFolder(p, overwrite=False) as folder:
            finish(folder)
        assert (p.scenario_dir / LOCK_FILE).exists()
    assert not (p.scenario_dir / LOCK_FILE).exists()


# -- what an interrupted run leaves -------------------------------------------------------------------------


def test_a_dead_runs_partial_folder_is_removed_and_is_not_a_result(tmp_path: Path) -> None:
    p = paths(tmp_path)
    partial = p.run_dir.with_name("run_1.partial-99999")
    partial.mkdir(parents=True)
    (partial / INTERRUPTED_MARKER).write_text('{"status": "interrupted", "run_id": "x"}')
    (partial / "mlperf_log_detail.txt").write_text("half a run")
    (p.scenario_dir / LOCK_FILE).write_text("99999\n")  # the dead holder's lock file: not held
    with RunFolder(p, overwrite=False) as folder:
        assert not partial.exists()
        finish(folder)
    assert (p.run_dir / "mlperf_log_summary.txt").is_file()


def _swap_state(tmp_path: Path, recorded: bool) -> tuple[ResultPaths, Path]:
    """A run that died inside commit, after swapping its folder in: run_1 is the new run,
    still marked, and the earlier result is set aside."""
    p = paths(tmp_path)
    aside = p.run_dir.with_name("run_1.replaced-99999")
    aside.mkdir(parents=True)
    (aside / "mlperf_log_summary.txt").write_text("earlier result\n")
    record_run(p, {"status": "ok", "run_id": "earlier"})
    p.run_dir.mkdir()
    (p.run_dir / "mlperf_log_summary.txt").write_text("new result\n")
    (p.run_dir / INTERRUPTED_MARKER).write_text('{"status": "interrupted", "run_id": "new"}')
    if recorded:
        record_run(p, {"status": "ok", "run_id": "new"})
    return p, aside


@pytest.mark.parametrize("recorded", [False, True])
def test_a_swap_that_died_is_finished_or_undone(tmp_path: Path, recorded: bool) -> None:
    p, aside = _swap_state(tmp_path, recorded)
    recover(p)
    expected = "new result\n" if recorded else "earlier result\n"
    assert (p.run_dir / "mlperf_log_summary.txt").read_text() == expected
    assert load_measurements(p.measurements)["runs"]["performance"]["run_id"] == ("new" if recorded else "earlier")
    assert not aside.exists() and not (p.run_dir / INTERRUPTED_MARKER).exists()


def test_a_result_set_aside_by_a_dead_swap_is_restored(tmp_path: Path) -> None:
    p, aside = _swap_state(tmp_path, recorded=False)
    shutil.rmtree(p.run_dir)  # died between the two renames
    recover(p)
    assert (p.run_dir / "mlperf_log_summary.txt").read_text() == "earlier result\n" and not aside.exists()


# -- modes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_result_files_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        p = paths(tmp_path)
        with RunFolder(p, overwrite=False) as folder:
            write_json_atomic(folder.staged.run_dir / "settings.json", {"a": 1})
            finish(folder)
        write_json_atomic(p.system_json, {"system": SYSTEM})
    finally:
        os.umask(old)
    for path in (p.measurements, p.run_dir / "settings.json", p.system_json):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    assert stat.S_IMODE(p.run_dir.stat().st_mode) == 0o777 & ~umask


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


def test_a_directory_in_place_of_a_result_file_is_an_output_error(tmp_path: Path) -> None:
    p = paths(tmp_path)
    p.measurements.mkdir(parents=True)
    with pytest.raises(OutputError, match="should be a file"):
        record_run(p, {"value": 1})
    with pytest.raises(OutputError, match="should be a file"):
        load_measurements(p.measurements)
    p.system_json.mkdir(parents=True)
    with pytest.raises(OutputError, match="cannot write"):
        write_json_atomic(p.system_json, {})


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
    # Finished, its result kept: 0 VALID or 6 INVALID (this tiny run is not about validity).
    assert proc.returncode in (0, INVALID_RESULT_EXIT), f"{proc.stdout}\n{proc.stderr}"
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


# -- through the command line: a held folder, kill -9, what is in the way ---------------------------------

# The null backend answers at once; Server keeps LoadGen's schedule, so a run lasts its
# minimum duration whatever the machine's speed.
NULL_SERVER = ["--backend", "null", "--gpu", "cpu", "--model", "resnet18", "--image-size", "32",
               "--dataset-count", "64", "--scenario", "Server", "--target-qps", "50", "--no-progress", "-q"]
NULL_SYSTEM = cpu_system("null", "fp32")


def null_paths(output: Path) -> ResultPaths:
    return ResultPaths(output, NULL_SYSTEM, "resnet18", "Server", "performance")


def run_main(capsys, *args: str) -> tuple[int, str]:
    from harness.cli import main

    capsys.readouterr()
    code = main([*NULL_SERVER, "--min-duration-ms", "300", *args])
    return code, capsys.readouterr().err


def one_line_error(err: str, *words: str) -> str:
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("deepgap: error: "), err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    return err


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def start_long_run(output: Path, *args: str) -> subprocess.Popen:
    """A run in another process that lasts ten minutes unless killed; returns once LoadGen
    is writing its logs into the run's partial folder."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen([sys.executable, "harness/run.py", *NULL_SERVER, "--min-duration-ms", "600000",
                             "--output", str(output), *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    partial = null_paths(output).run_dir.with_name(f"run_1.partial-{proc.pid}")
    for _ in range(1200):  # a slow, busy machine may take a minute to import torch
        if (partial / "mlperf_log_detail.txt").exists() or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read()
    assert (partial / "mlperf_log_detail.txt").exists(), "the run never started"
    return proc


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()


def test_kill_9_mid_run_loses_nothing_and_the_next_run_works(tmp_path: Path, capsys) -> None:
    output = tmp_path / "out"
    p = null_paths(output)
    # A first run killed: what it leaves is marked interrupted and is not a result.
    proc = start_long_run(output)
    kill(proc)
    partial = p.run_dir.with_name(f"run_1.partial-{proc.pid}")
    assert json.loads((partial / INTERRUPTED_MARKER).read_text())["status"] == "interrupted"
    assert not p.run_dir.exists() and not p.measurements.exists()
    code, err = run_main(capsys, "--output", str(output))  # no --overwrite needed: nothing was there
    assert code == 0, err
    assert not partial.exists() and "already holds a result" not in err
    earlier = snapshot(p.scenario_dir)
    # An --overwrite run killed: the earlier result and its record stay exactly as they were.
    proc = start_long_run(output, "--overwrite")
    try:
        # Meanwhile a second run into the same folder is refused at once, naming the first.
        code, err = run_main(capsys, "--output", str(output), "--overwrite")
        assert code == 2
        one_line_error(err, "in use by another deepgap run", f"pid {proc.pid}")
    finally:
        kill(proc)
    after = {k: v for k, v in snapshot(p.scenario_dir).items() if ".partial-" not in k and LOCK_FILE not in k}
    assert after == earlier
    data = load_measurements(p.measurements)
    assert data["runs"]["performance"]["status"] == "ok"
    assert data["runs"]["performance"]["run_id"] in str(earlier)
    code, err = run_main(capsys, "--output", str(output), "--overwrite")
    assert code == 0, err
    assert sorted(f.name for f in p.run_dir.parent.iterdir()) == ["run_1"]
    assert load_measurements(p.measurements)["runs"]["performance"]["run_id"] not in str(earlier)


@pytest.mark.parametrize("obstacle", ["bad-json", "measurements-dir", "system-dir"])
def test_what_is_in_the_way_is_refused_before_anything_is_measured(tmp_path: Path, capsys, obstacle: str) -> None:
    output = tmp_path / "out"
    p = null_paths(output)
    if obstacle == "bad-json":
        p.scenario_dir.mkdir(parents=True)
        p.measurements.write_text("{not json")
        words = [str(p.measurements), "not valid JSON", "move it aside"]
    else:
        (p.measurements if obstacle == "measurements-dir" else p.system_json).mkdir(parents=True)
        words = [str(p.measurements if obstacle == "measurements-dir" else p.system_json), "should be a file"]
    code, err = run_main(capsys, "--output", str(output))
    assert code == 2
    one_line_error(err, *words)
    assert not list(output.rglob("mlperf_log_*")), "the benchmark ran before the output was checked"


def test_empty_loadgen_logs_are_removed_and_ones_with_entries_kept(tmp_path: Path) -> None:
    from runs.results import remove_empty_loadgen_files

    def run_dir(name: str, trace: str, accuracy: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "mlperf_log_trace.json").write_text(trace)
        (folder / "mlperf_log_accuracy.json").write_text(accuracy)
        return folder

    empty = run_dir("empty", "", "[\n]\n")
    remove_empty_loadgen_files(empty, keep_accuracy_log=False)
    assert not any(empty.iterdir())
    sampled = run_dir("sampled", '{"traceEvents": []}', '[{"seq_id": 0, "qsl_idx": 3, "data": "01000000"}]\n')
    remove_empty_loadgen_files(sampled, keep_accuracy_log=False)
    assert sorted(p.name for p in sampled.iterdir()) == ["mlperf_log_accuracy.json", "mlperf_log_trace.json"]
    kept = run_dir("compliance", "", "[]")  # TEST01 reads its run's log, empty or not
    remove_empty_loadgen_files(kept, keep_accuracy_log=True)
    assert [p.name for p in kept.iterdir()] == ["mlperf_log_accuracy.json"]
