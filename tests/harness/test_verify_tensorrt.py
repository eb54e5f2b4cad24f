"""`deepgap verify-tensorrt` (harness/verify_tensorrt.py, harness/verify_figures.py,
harness/trt_build.py): the one-line stop without TensorRT or a GPU, the steps it plans
(their flags parsed by the run's own parser), the report written from fake steps that
pass, fail and time out for real, the figures read back from real pytest and run output,
and the README's section.

TensorRT cannot be installed on this project's machines: the verification itself has
never run on one of them, which the README says.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from harness import trt_build, verify_tensorrt
from harness.verify_figures import build_figures, junit_figures, run_figures
from harness.verify_tensorrt import REPORT_FILE, REPORT_SCHEMA, build_parser, main, plan_steps, verify
from plumbing.errors import RUN_FAILED_EXIT
from plumbing.steps import Figures, Step
from runs.run_flags import build_parser as run_parser
from sut.trt_cuda import trt_missing

ROOT = Path(__file__).resolve().parents[2]
HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


# -- no TensorRT, no GPU: one line, exit 2, nothing written ---------------------------------


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here")
def test_without_tensorrt_it_stops_at_once_with_the_backends_one_line(tmp_path: Path) -> None:
    out = tmp_path / "verify"
    proc = subprocess.run([sys.executable, "-m", "deepgap", "verify-tensorrt", "--output", str(out)], cwd=ROOT,
                          env=dict(os.environ, CUDA_VISIBLE_DEVICES=""), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"deepgap: error: {trt_missing()}"]
    assert not out.exists()


def test_without_a_gpu_it_stops_at_once_with_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.9.0"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--output", str(tmp_path / "verify")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("deepgap: error: verify-tensorrt needs an NVIDIA GPU and PyTorch sees none")
    assert not (tmp_path / "verify").exists()


def test_an_earlier_verification_is_not_replaced_without_overwrite(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.9.0"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    (tmp_path / REPORT_FILE).write_text("{}")
    assert main(["--output", str(tmp_path)]) == 2
    assert "holds an earlier verification" in capsys.readouterr().err


def test_versions_name_tensorrt_cuda_the_gpu_torch_and_the_commit(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H200")
    found = verify_tensorrt.versions(types.SimpleNamespace(__version__="10.9.0"))
    assert found["tensorrt"] == "10.9.0" and found["gpu"] == "NVIDIA H200"
    assert found["torch"] == torch.__version__ and found["cuda"] == torch.version.cuda
    assert {"driver", "nvml", "deepgap", "deepgap_commit", "python"} <= set(found)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:
        assert found["deepgap_commit"] == head.stdout.strip()


# -- the steps it plans ----------------------------------------------------------------------


def test_the_planned_steps_are_the_runs_own_flags(tmp_path: Path) -> None:
    (tmp_path / "summaries").mkdir()
    stale = [tmp_path / "summaries" / "run-fp16-Offline.json", tmp_path / "tests.xml"]
    for path in stale:
        path.write_text("{}")  # an earlier verification's
    args = build_parser().parse_args(["--model", "resnet18", "--gpu", "H200", "--run-timeout-s", "99"])
    steps = plan_steps(args, tmp_path, python="py")
    assert not any(path.exists() for path in stale)
    assert [s.name for s in steps] == ["tests", "build-fp16", "build-int8", "fp16-Offline", "fp16-Server",
                                       "int8-Offline", "int8-Server"]
    assert all(s.env == {"DEEPGAP_CACHE": str(tmp_path / "cache")} for s in steps)
    tests = steps[0]
    files = verify_tensorrt.tensorrt_test_files()
    assert "tests/sut/test_tensorrt_backend.py" in files and all((ROOT / f).is_file() for f in files)
    assert tests.argv[:3] == ["py", "-m", "pytest"] and tests.argv[5:-1] == files
    assert verify_tensorrt.tensorrt_test_files(tmp_path) == [verify_tensorrt.TEST_PATTERN]  # never every test
    for step in steps[1:]:
        module = step.argv[2]
        assert step.argv[:2] == ["py", "-m"] and module == ("harness.trt_build" if step.name.startswith("build")
                                                            else "harness.run")
        parsed = run_parser().parse_args(step.argv[3:])  # the run's own parser takes every flag
        precision = step.name.split("-")[-1] if module == "harness.trt_build" else step.name.split("-")[0]
        assert (parsed.backend, parsed.precision) == ("tensorrt", precision)
        assert (parsed.model, parsed.gpu) == ("resnet18", "H200")
        assert parsed.run_profile == "quick" and parsed.progress is False and not parsed.overwrite
        assert Path(parsed.json).parent.is_dir()
        if module == "harness.run":
            assert parsed.scenario == step.name.split("-")[1] and step.timeout_s == 99
        else:
            assert parsed.scenario == "Offline" and step.timeout_s == 1800  # the engine the Offline run uses
    overwrite = plan_steps(build_parser().parse_args(["--overwrite", "--cache", str(tmp_path / "c")]), tmp_path)
    assert all("--overwrite" in s.argv for s in overwrite[1:])
    assert overwrite[0].env == {"DEEPGAP_CACHE": str(tmp_path / "c")}


# -- the report, from fake steps run for real ------------------------------------------------


def test_the_report_records_every_step_whatever_its_outcome(tmp_path: Path) -> None:
    steps = [
        Step("passes", python("print('fine')"), 30, figures=lambda: Figures({"samples_per_s": 12.5}, "12.5/s")),
        Step("fails", python("import sys; sys.exit('deepgap: error: no engine')"), 30),
        Step("hangs", python("import time; time.sleep(60)"), 2),
        Step("after", python("pass"), 30),
    ]
    screen = io.StringIO()
    code = verify(steps, tmp_path, {"versions": {"tensorrt": "10.9.0"}}, cwd=None, screen=screen)
    assert code == RUN_FAILED_EXIT
    lines = screen.getvalue().splitlines()
    assert len(lines) == 5 and [line.split()[:2] for line in lines[:4]] == [
        ["passes", "PASSED"], ["fails", "FAILED"], ["hangs", "TIMED"], ["after", "PASSED"]]
    assert lines[4].startswith("2 of 4 steps failed (fails, hangs); report: ")
    assert str(tmp_path / REPORT_FILE) in lines[4]

    report = json.loads((tmp_path / REPORT_FILE).read_text())
    assert report["schema"] == REPORT_SCHEMA and report["versions"] == {"tensorrt": "10.9.0"}
    assert report["finished"] is True and report["passed"] is False and report["exit_code"] == RUN_FAILED_EXIT
    assert report["steps_not_run_yet"] == [] and report["finished_utc"] >= report["started_utc"]
    by_name = {s["name"]: s for s in report["steps"]}
    assert list(by_name) == ["passes", "fails", "hangs", "after"]
    assert by_name["passes"] == {**by_name["passes"], "status": "passed", "exit_code": 0, "error": None,
                                 "figures": {"samples_per_s": 12.5}}
    assert by_name["fails"]["status"] == "failed" and by_name["fails"]["exit_code"] == 1
    assert by_name["fails"]["error"] == "deepgap: error: no engine"
    assert by_name["hangs"]["status"] == "timed out" and by_name["hangs"]["exit_code"] is None
    assert 2 <= by_name["hangs"]["seconds"] < 30 and by_name["hangs"]["timeout_s"] == 2
    for step in report["steps"]:
        assert Path(step["log"]) == tmp_path / "logs" / f"{step['name']}.log" and Path(step["log"]).is_file()
        assert isinstance(step["seconds"], float) and step["command"][0] == sys.executable


def test_all_steps_passing_is_exit_0(tmp_path: Path) -> None:
    screen = io.StringIO()
    assert verify([Step("one", python("pass"), 30)], tmp_path, {}, cwd=None, screen=screen) == 0
    assert json.loads((tmp_path / REPORT_FILE).read_text())["passed"] is True
    assert screen.getvalue().splitlines()[-1].startswith("every step passed; report: ")


# -- figures read back from real output ------------------------------------------------------


def test_junit_figures_count_and_fail_on_a_skipped_tensorrt_test(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n"
        "def test_passes():\n    pass\n"
        "@pytest.mark.skipif(True, reason='TensorRT is not installed (not installable here)')\n"
        "def test_real_engine():\n    pass\n"
        "def test_gpu_visible():\n    pytest.skip('a GPU is visible')\n")
    junit = tmp_path / "tests.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_sample.py"),
                    f"--junitxml={junit}"], cwd=tmp_path, capture_output=True, timeout=120, check=True)
    figures = junit_figures(junit)
    assert (figures.values["passed"], figures.values["skipped"], figures.values["failures"]) == (1, 2, 0)
    assert figures.values["tensorrt_or_gpu_tests_not_run"] == 1  # "a GPU is visible" is not one
    assert figures.text == "1 passed, 0 failed, 2 skipped"
    assert figures.problem.startswith("1 TensorRT or GPU test(s) skipped, e.g. test_sample::test_real_engine")


def test_build_figures_read_the_builds_summary(tmp_path: Path) -> None:
    summary = tmp_path / "build.json"
    summary.write_text(json.dumps({"precision": "int8", "model": "resnet50", "max_batch": 512, "engine_cache": "built",
                                   "engine_path": "/c/e.engine", "build_seconds": 88.1, "engine_bytes": 52_300_000,
                                   "calibration_seconds": 12.0, "load_seconds": 91.0,
                                   "backend": {"tensorrt": "10.9.0"}}))
    figures = build_figures(summary)
    assert figures.values["build_seconds"] == 88.1 and figures.values["tensorrt"] == "10.9.0"
    assert figures.text == "engine built in 88.1 s, 52.3 MB, batches up to 512"
    summary.write_text(json.dumps({"schema": "deepgap.summary/1", "exit_code": 2, "error": "no GPU"}))
    assert build_figures(summary).values == {"error": "no GPU"}


def test_trt_build_refuses_another_backend_and_the_cpu_in_one_line(capsys, tmp_path: Path) -> None:
    assert trt_build.main(["--precision", "fp16", "--gpu", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err == "deepgap: error: harness.trt_build builds TensorRT engines: give --backend tensorrt\n"
    summary = tmp_path / "build.json"
    assert trt_build.main(["--backend", "tensorrt", "--precision", "fp16", "--gpu", "cpu", "--json", str(summary)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert "error" in json.loads(summary.read_text())
    engine = tmp_path / "e.engine"
    (tmp_path / "e.json").write_text(json.dumps({"build_seconds": 3.5}))
    assert trt_build.read_sidecar(str(engine)) == {"build_seconds": 3.5} and trt_build.read_sidecar(None) == {}


def test_run_figures_read_the_saved_result_and_its_accuracy_gate(tmp_path: Path) -> None:
    from harness.cli import main as run_main

    out, summary = tmp_path / "run", tmp_path / "run.json"
    code = run_main(["--image-size", "32", "--model", "resnet18", "--dataset-count", "64", "--min-duration-ms", "200",
                     "--min-query-count", "16", "--target-qps", "200", "--gpu", "cpu", "--backend", "torch",
                     "--no-progress", "-q", "--output", str(out), "--json", str(summary)])
    assert code in (0, 6)  # a busy host may make so short a run INVALID; the figures are read either way
    figures = run_figures(summary, out)
    values = figures.values
    assert values["result"] == ("VALID" if code == 0 else "INVALID") and values["samples_per_s"] > 0
    assert set(values["latency_ms"]) == {"p50", "p90", "p99"} and values["accuracy_gate"] is None
    assert values["scenario"] == "Offline" and Path(values["measurements"]).is_file()
    assert figures.text.startswith(values["result"]) and figures.text.endswith("no accuracy gate")

    measurements = Path(values["measurements"])  # the gate's record, as an int8 run saves it
    data = json.loads(measurements.read_text())
    data["runs"]["performance"]["accuracy_gate"] = {"passed": True, "rule": "agreement", "samples": 500,
                                                   "agreement": 0.998, "cosine": 0.9999, "relative_error": 0.01}
    measurements.write_text(json.dumps(data))
    gated = run_figures(summary, out)
    assert gated.values["accuracy_gate"]["agreement"] == 0.998 and "gate PASS (agreement 99.80%)" in gated.text
    assert run_figures(tmp_path / "absent.json", tmp_path / "nothing").values == {"error": None, "measurements": None}
    # A result older than the verification (an earlier one's, --overwrite) is not this run's.
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    assert run_figures(summary, out, since=later).values["earlier_result_ignored"] == str(measurements)
    assert run_figures(summary, out, since=later - dt.timedelta(days=1)).values["result"] == values["result"]


# -- the README ------------------------------------------------------------------------------


def test_the_readme_says_how_to_verify_tensorrt_and_where_it_has_not_run() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Verifying TensorRT on your GPU", 1)[1].split("\n## ", 1)[0]
    assert "deepgap verify-tensorrt" in section and REPORT_FILE in section and "send" in section.lower()
    row = next(line for line in readme.splitlines() if line.startswith("| tensorrt backend"))
    assert "not run" in row and "verify-tensorrt" in row
