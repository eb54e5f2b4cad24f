"""The step runner (plumbing/steps.py) on real subprocesses: one that passes, one that
fails with its own last line, one killed at its time limit with the child it started, one
that cannot start, and figures read whatever the outcome."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from plumbing.steps import FAILED, PASSED, TIMED_OUT, Figures, Step, last_line, run_step


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_passing_step_keeps_its_output_and_figures(tmp_path: Path) -> None:
    step = Step("ok", python("print('hello'); import os; print(os.environ['STEP_VAR'])"), 30,
                env={"STEP_VAR": "from-env"}, figures=lambda: Figures({"n": 1}, "one figure"))
    result = run_step(step, tmp_path / "logs" / "ok.log")
    assert (result.status, result.exit_code, result.error) == (PASSED, 0, None)
    assert Path(result.log).read_text().split() == ["hello", "from-env"]
    assert result.figures.values == {"n": 1} and result.line().endswith("exit 0    one figure")
    assert result.to_json()["figures"] == {"n": 1} and result.to_json()["command"] == list(step.argv)


def test_a_failing_step_gives_its_exit_code_and_last_line(tmp_path: Path) -> None:
    code = "import sys; print('working'); print('deepgap: error: it broke', file=sys.stderr); sys.exit(3)"
    result = run_step(Step("bad", python(code), 30, figures=lambda: Figures({"read": True})), tmp_path / "bad.log")
    assert (result.status, result.exit_code, result.error) == (FAILED, 3, "deepgap: error: it broke")
    assert result.figures.values == {"read": True}  # read although it failed
    assert "FAILED" in result.line() and "deepgap: error: it broke" in result.line()


def test_a_step_past_its_limit_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
            "print('started', flush=True)\n"
            "time.sleep(120)\n")
    started = time.monotonic()
    result = run_step(Step("slow", python(code), 3), tmp_path / "slow.log")
    assert time.monotonic() - started < 30
    assert (result.status, result.exit_code) == (TIMED_OUT, None)
    assert result.seconds >= 3 and "limit of 3 s" in result.error and "started" in result.error
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(grandchild):
        time.sleep(0.1)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")  # a zombie waiting for its reaper is gone too
    return not (stat.is_file() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_a_step_that_cannot_start_and_a_reader_that_fails(tmp_path: Path) -> None:
    missing = run_step(Step("missing", [str(tmp_path / "no-such-program")], 30), tmp_path / "missing.log")
    assert missing.status == FAILED and missing.exit_code is None and missing.error.startswith("could not start:")

    def broken() -> Figures:
        raise KeyError("samples_per_s")

    result = run_step(Step("reader", python("pass"), 30, figures=broken), tmp_path / "reader.log")
    assert result.status == FAILED and result.exit_code == 0
    assert result.error == "its figures could not be read: 'samples_per_s'"
    assert result.figures.values == {"figures_error": "'samples_per_s'"}


def test_a_problem_in_the_figures_fails_a_step_that_exited_0(tmp_path: Path) -> None:
    step = Step("skips", python("pass"), 30, figures=lambda: Figures({"skipped": 2}, "2 skipped", "2 tests skipped"))
    result = run_step(step, tmp_path / "skips.log")
    assert (result.status, result.exit_code, result.error) == (FAILED, 0, "2 tests skipped")


@pytest.mark.parametrize("text, expected", [("", None), ("one\n\n  two  \n\n", "two"), ("x" * 1000, "x" * 400)])
def test_last_line(tmp_path: Path, text: str, expected: str | None) -> None:
    log = tmp_path / "log"
    log.write_text(text)
    assert last_line(log) == expected
    assert last_line(tmp_path / "absent") is None
