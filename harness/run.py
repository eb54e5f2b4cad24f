"""Entry point: `python harness/run.py ...` or the installed `deepgap` command."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the project root importable without an install.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
