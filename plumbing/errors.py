"""The project's exception types. The CLI turns each into one line and an exit code."""

from __future__ import annotations


class DeepgapError(Exception):
    """Base class: anything a user can cause or fix. Printed as one line, no traceback."""

    exit_code = 2
    # The process must leave at once (os._exit): a thread it cannot stop is still running.
    exit_now = False


class ConfigError(DeepgapError):
    """Bad flag values, bad user.conf or profile YAML, inconsistent settings."""


class DeviceError(DeepgapError):
    """The requested GPU profile or precision does not match the visible hardware."""


class DatasetError(DeepgapError):
    """Missing or malformed dataset folder, unreadable images."""


class BackendError(DeepgapError):
    """A backend is unavailable, or failed while loading or running."""


class OutputError(DeepgapError):
    """The results directory cannot be written, or would overwrite an earlier result."""


class RunFailed(DeepgapError):
    """The benchmark ran but the system under test failed during it."""

    exit_code = 3


class StudyError(DeepgapError):
    """A study directory is missing, unreadable or not a deepgap.study/1 file."""


# Exit codes, the same for every command (run.py, the sweep, compare, plan, audit.check):
# CI gates on them. The README's table and each command's --help epilog are made from this.
OK_EXIT = 0
BAD_INPUT_EXIT = DeepgapError.exit_code  # 2
RUN_FAILED_EXIT = RunFailed.exit_code  # 3
ACCURACY_FAILED_EXIT = 4
AUDIT_FAILED_EXIT = 5
INVALID_RESULT_EXIT = 6
INTERRUPTED_EXIT = 130
EXIT_CODES: dict[int, str] = {
    OK_EXIT: "done: the result is VALID (a sweep, report, plan or check: it finished)",
    BAD_INPUT_EXIT: "bad input: a flag, file, device or output folder; nothing was measured",
    RUN_FAILED_EXIT: "the backend failed during a run (a sweep: some part of the study failed)",
    ACCURACY_FAILED_EXIT: "accuracy below MLPerf's 99% of FP32, or the accuracy gate failed",
    AUDIT_FAILED_EXIT: "a compliance test or the results checker found a FAIL",
    INVALID_RESULT_EXIT: "the run finished but LoadGen calls its result INVALID; the result is kept",
    INTERRUPTED_EXIT: "interrupted (Ctrl-C); a sweep resumes where it stopped",
}


def exit_code_epilog() -> str:
    """The exit-code table as the --help epilog prints it."""
    return "exit codes:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES.items())


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (a library's multi-line error as the one
    line a DeepgapError carries), or its type's name where the message is empty."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def one_line(what: BaseException | str) -> str:
    """A message with its line breaks and runs of spaces collapsed into single spaces (all
    of it, where first_line keeps only the start); an exception with no message gives its
    type's name."""
    text = " ".join(str(what).split())
    return text or (type(what).__name__ if isinstance(what, BaseException) else "")
