"""A progress bar for long runs (tqdm): samples completed, their rate and the elapsed time,
on stderr. Only on a terminal: in a log or CI it would be noise."""

from __future__ import annotations

import sys
import threading
from typing import Callable

from tqdm import tqdm


class _Bar(tqdm):
    monitor_interval = 0  # no tqdm monitor thread beside a timed run; the poller below refreshes


class Progress:
    """Polls `count` (samples completed so far) every `interval_s` while the block runs."""

    def __init__(self, label: str, count: Callable[[], int], expected_s: float | None,
                 interval_s: float = 1.0, enabled: bool = True) -> None:
        self._count = count
        self._interval_s = interval_s
        self._desc = label + (f" (~{expected_s:.0f} s)" if expected_s else "")
        self._enabled = enabled
        self._bar: tqdm | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def __enter__(self) -> Progress:
        if self._enabled:
            # disable=None: tqdm turns itself off where stderr is not a terminal.
            self._bar = _Bar(desc=self._desc, unit=" samples", file=sys.stderr, disable=None, leave=False,
                             mininterval=self._interval_s, dynamic_ncols=True)
            if not self._bar.disable:
                self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._bar is not None:
            self._bar.close()

    @property
    def shown(self) -> bool:
        return self._bar is not None and not self._bar.disable

    def _loop(self) -> None:
        assert self._bar is not None
        while not self._stop.wait(self._interval_s):
            self._bar.update(self._count() - self._bar.n)
