"""One logging setup: warnings on the console, INFO only with -v, details in a run's log file."""

from __future__ import annotations

import logging

import pytest

from plumbing import logs


class Console:
    """What setup()'s console handler wrote to stderr (pytest's capture, taken in the test)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys, self.text = capsys, ""

    def getvalue(self) -> str:
        self.text += self.capsys.readouterr().err
        return self.text


@pytest.fixture
def console(capsys):
    """The root logger as it was, after the test."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield Console(capsys)
    root.setLevel(level)
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)


def test_console_shows_warnings_and_the_file_gets_info(console, tmp_path):
    logs.setup()
    with logs.run_log(tmp_path / "deepgap.log"):
        logging.getLogger("runs.runner").info("loading resnet18")
        logging.getLogger("runs.sizing").warning("this run will be INVALID")
    logging.getLogger("runs.runner").info("after the run")
    assert console.getvalue() == "W runs.sizing: this run will be INVALID\n"
    written = (tmp_path / "deepgap.log").read_text()
    assert "I runs.runner: loading resnet18" in written and "W runs.sizing: this run will be INVALID" in written
    assert "after the run" not in written


def test_verbose_shows_debug_quiet_hides_warnings(console):
    logs.setup(verbose=True)
    logging.getLogger("sut.qsl").debug("staged 64 samples")
    assert "D sut.qsl: staged 64 samples" in console.getvalue()
    logs.setup(quiet=True)  # replaces the console handler: one line per record, not two
    logging.getLogger("harness").warning("a warning")
    logging.getLogger("harness").error("an error")
    assert console.getvalue().count("an error") == 1 and "a warning" not in console.getvalue()


def test_a_commands_own_info_lines_can_stay_on_screen(console):
    logs.setup(shown=("deepgap.sweep",))
    logging.getLogger("deepgap.sweep").info("[1/~4] point r1: VALID")
    logging.getLogger("deepgap.sweepish").info("not this one")
    logging.getLogger("runs.runner").info("nor this")
    assert console.getvalue() == "I deepgap.sweep: [1/~4] point r1: VALID\n"
