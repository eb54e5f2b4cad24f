"""A progress line for long runs: elapsed time and samples completed, on stderr."""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable


class Progress:
    def __init__(self, label: str, count: Callable[[], int], expected_s: float | None,
                 interval_s: float = 1.0, enabled: bool = True) -> None:
        self._label = label
        self._count = count
        self._expected_s = expected_s
        self._interval_s = interval_s if sys.stderr.isatty() else max(interval_s, 10.0)
        self._enabled = enabled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._start = time.monotonic()

    def __enter__(self) -> "Progress":
        if self._enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
            if sys.stderr.isatty():
                sys.stderr.write("\r\033[K")
                sys.stderr.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            elapsed = time.monotonic() - self._start
            of = f" of ~{self._expected_s:.0f} s" if self._expected_s else ""
            text = f"{self._label}: {elapsed:6.1f} s{of}, {self._count():,} samples completed"
            if sys.stderr.isatty():
                sys.stderr.write("\r\033[K" + text)
            else:
                sys.stderr.write(text + "\n")
            sys.stderr.flush()
