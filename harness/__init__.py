"""deepgap's command-line tools: `python harness/run.py` (one run) and `python -m harness.sweep`,
`harness.compare`, `harness.plan`, `harness.bench` and `harness.verify_tensorrt` (with
`harness.trt_build`). They sit on top: runs/, studies/ and
reports/ below them do the work."""

from plumbing.version import __version__

__all__ = ["__version__"]
