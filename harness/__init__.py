"""deepgap's command-line tools: `python harness/run.py` (one run) and `python -m harness.sweep`,
`harness.compare`, `harness.plan` and `harness.bench`. They sit on top: runs/, studies/ and
reports/ below them do the work."""

from plumbing.version import __version__

__all__ = ["__version__"]
