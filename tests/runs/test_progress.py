"""The progress bar (tqdm): on a terminal it shows the samples completed and their rate; in a
log or CI it writes nothing."""

from __future__ import annotations

import io
import time

from runs import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_on_a_terminal_counts_samples_and_shows_their_rate(monkeypatch):
    screen = Terminal()
    monkeypatch.setattr(progress.sys, "stderr", screen)
    done = {"n": 0}
    with progress.Progress("Offline performance", lambda: done["n"], 5.0, interval_s=0.05) as bar:
        assert bar.shown
        for _ in range(6):
            done["n"] += 250
            time.sleep(0.05)
    text = screen.getvalue()
    assert "Offline performance (~5 s)" in text and "samples/s" in text
    assert any(f"{n} samples" in text for n in range(250, 1501, 250))


def test_no_bar_where_stderr_is_not_a_terminal(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(progress.sys, "stderr", log)
    with progress.Progress("Offline performance", lambda: 1, None, interval_s=0.01) as bar:
        time.sleep(0.05)
    assert not bar.shown and log.getvalue() == ""
