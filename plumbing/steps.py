"""Steps run as subprocesses, each under its own time limit, so that one that fails, hangs
or crashes its interpreter never stops or hides the next: `run_step` gives every step an
outcome (passed, failed, timed out) with its exit code, seconds, log and figures.

Each step's stdout and stderr go to its own log file. A step past its limit is killed with
its whole process group (it runs in a session of its own, so a child it started, such as
LoadGen's threads in a run's process, goes with it). Its figures are read afterwards,
whatever its outcome, by the step's own reader; a reader that fails says so in the
figures and never stops the steps after it.

Only the standard library and plumbing.errors: a client (harness/verify_tensorrt.py) says
what the steps are.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from plumbing.errors import one_line

PASSED, FAILED, TIMED_OUT = "passed", "failed", "timed out"
# Seconds a step past its limit has to leave after SIGTERM before the group gets SIGKILL.
KILL_GRACE_S = 5.0
# The longest error line kept from a step's log.
ERROR_CHARS = 400


@dataclass(frozen=True)
class Figures:
    """What a step's reader found: `values` for the report, `text` for its screen line, and
    `problem`, a one-line reason to count the step as failed although it exited 0."""

    values: Mapping[str, Any] = field(default_factory=dict)
    text: str = ""
    problem: str | None = None


@dataclass(frozen=True)
class Step:
    """One command. `env` is added to the environment; `figures`, called once the command
    has ended (whatever its outcome), reads what it wrote."""

    name: str
    argv: Sequence[str]
    timeout_s: float
    env: Mapping[str, str] = field(default_factory=dict)
    figures: Callable[[], Figures] | None = None


@dataclass(frozen=True)
class StepResult:
    name: str
    status: str  # PASSED, FAILED or TIMED_OUT
    exit_code: int | None  # None: killed at its time limit
    seconds: float
    timeout_s: float
    argv: tuple[str, ...]
    log: str
    error: str | None = None  # one line: why it failed
    figures: Figures = field(default_factory=Figures)

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def line(self, width: int = 16) -> str:
        """The step on one screen line: name, outcome, seconds, exit code, figures or error."""
        code = "-" if self.exit_code is None else str(self.exit_code)
        tail = self.figures.text
        if self.error:
            tail = f"{self.error} | {tail}" if tail else self.error
        return f"{self.name:<{width}} {self.status.upper():<9} {self.seconds:8.1f} s  exit {code:<4} {tail}".rstrip()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "exit_code": self.exit_code,
                "seconds": round(self.seconds, 2), "timeout_s": self.timeout_s, "command": list(self.argv),
                "log": self.log, "error": self.error, "figures": dict(self.figures.values)}


def last_line(log: Path) -> str | None:
    """The last non-empty line of a log (a deepgap command's one-line error is its last
    line), cut to ERROR_CHARS; None where there is none."""
    try:
        with log.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:ERROR_CHARS] if lines else None


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the step's process group, SIGKILL after KILL_GRACE_S; the group is the
    step's own (start_new_session), never this process's."""
    for sig, wait_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _read_figures(step: Step) -> Figures:
    if step.figures is None:
        return Figures()
    try:
        return step.figures()
    except Exception as exc:  # noqa: BLE001 - a reader's failure is a figure, never the end of the steps
        return Figures({"figures_error": one_line(exc)}, problem=f"its figures could not be read: {one_line(exc)}")


def run_step(step: Step, log: Path, cwd: Path | None = None) -> StepResult:
    """Run one step to its end or its time limit, its output into `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **step.env}
    started = time.monotonic()
    code: int | None
    with log.open("wb") as out:
        try:
            proc = subprocess.Popen(list(step.argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            return StepResult(step.name, FAILED, None, time.monotonic() - started, step.timeout_s,
                              tuple(step.argv), str(log), f"could not start: {one_line(exc)}", _read_figures(step))
        try:
            code = proc.wait(timeout=step.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            code = None
        except BaseException:  # Ctrl-C: the step goes too, then the interrupt goes on
            _kill_group(proc)
            raise
    seconds = time.monotonic() - started
    figures = _read_figures(step)
    if code is None:
        status = TIMED_OUT
        error = f"killed after its limit of {step.timeout_s:g} s; last line: {last_line(log) or '(none)'}"
    elif code != 0:
        status, error = FAILED, last_line(log) or f"exit {code}, no output"
    elif figures.problem is not None:
        status, error = FAILED, figures.problem
    else:
        status, error = PASSED, None
    return StepResult(step.name, status, code, seconds, step.timeout_s, tuple(step.argv), str(log), error, figures)
