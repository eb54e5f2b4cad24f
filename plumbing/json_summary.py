"""Where a command's --json summary goes (a file, or - for stdout), and where its
human-readable output goes then. The summary's fields come from each command (for a run:
runs/jsonsummary.py); this is only the target, schema deepgap.summary/1."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from plumbing.errors import OutputError
from plumbing.files import write_atomic

SUMMARY_SCHEMA = "deepgap.summary/1"


class SummaryTarget:
    """Where --json goes (None: nowhere) and where the human-readable output goes then:
    stderr when the summary takes stdout, so that stdout is the JSON alone."""

    def __init__(self, command: str, target: str | None = None) -> None:
        self.command = command
        self.target = target
        self.written = False

    @property
    def screen(self) -> TextIO:
        return sys.stderr if self.target == "-" else sys.stdout

    def write(self, exit_code: int, fields: dict[str, Any]) -> None:
        if self.target is None:
            return
        self.written = True
        text = json.dumps({"schema": SUMMARY_SCHEMA, "command": self.command, "exit_code": exit_code, **fields},
                          indent=2, default=str) + "\n"
        if self.target == "-":
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        try:
            write_atomic(Path(self.target), text)
        except OSError as exc:
            raise OutputError(f"cannot write the --json summary {self.target}: {exc.strerror or exc}") from None

    def failed(self, exit_code: int, message: str) -> None:
        """The summary of a command that stopped with an error, unless one that says more
        was written (a sweep's saved points); never raises (the error is already on stderr)."""
        if self.written:
            return
        try:
            self.write(exit_code, {"error": message})
        except Exception as exc:  # noqa: BLE001 - reporting a failure must not mask it
            print(f"{self.command}: cannot write the --json summary: {exc}", file=sys.stderr)
