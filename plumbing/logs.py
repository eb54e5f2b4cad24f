"""One logging setup for every entry point (run.py, the sweep, compare, plan, calibration,
audit.check): warnings on the console, the details in a log file beside the results.

A normal screen is the command's own output and the warnings; INFO goes to the console
only with -v (DEBUG then, too). Each run writes its INFO lines to `deepgap.log` in its own
run folder (`run_log`), which is committed with its result; a sweep keeps one in the study
folder.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

LOG_FILE = "deepgap.log"
CONSOLE_FORMAT = "%(levelname).1s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"
# INFO from these is always on the console (not with -q): a long pause, explained.
ALWAYS_SHOWN = ("sut.compiling",)
# Marks the console handler this module installed, so a second setup replaces it.
_CONSOLE = "deepgap-console"


class _ConsoleFilter(logging.Filter):
    """Records at `level` and above, plus INFO from the loggers named in `shown` (a
    sweep's own progress lines, which are its screen)."""

    def __init__(self, level: int, shown: tuple[str, ...]) -> None:
        super().__init__()
        self.level, self.shown = level, shown

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= self.level:
            return True
        return record.levelno >= logging.INFO and any(
            record.name == name or record.name.startswith(name + ".") for name in self.shown)


class _ConsoleHandler(logging.StreamHandler):
    """Writes through tqdm, so that a line logged during a run's progress bar does not
    break the bar (tqdm clears it, writes the line, and redraws it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging's own contract: never raise from emit
            self.handleError(record)


def setup(verbose: bool = False, quiet: bool = False, shown: Iterable[str] = (),
          timestamps: bool = False) -> None:
    """The console: warnings (-q: errors only; -v: everything from DEBUG up) on stderr.
    The root logger passes INFO (DEBUG with -v) on, so that a run's log file gets it."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _CONSOLE]:
        root.removeHandler(handler)
    console = _ConsoleHandler(sys.stderr)
    console.set_name(_CONSOLE)
    console.setFormatter(logging.Formatter(("%(asctime)s " if timestamps else "") + CONSOLE_FORMAT))
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    console.addFilter(_ConsoleFilter(level, () if quiet else (*shown, *ALWAYS_SHOWN)))
    root.addHandler(console)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


@contextlib.contextmanager
def run_log(path: Path, append: bool = False) -> Iterator[Path]:
    """Copy every record the root logger passes (INFO and up after `setup`) into `path`
    while the block runs. The file is opened on the first record, in a folder that must
    exist."""
    handler = logging.FileHandler(path, mode="a" if append else "w", encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
