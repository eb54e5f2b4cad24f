"""Comparison report CLI: python -m harness.compare STUDY_DIR... --baseline NAME --output REPORT_DIR

Writes REPORT_DIR/report.md, report.html and the PNG plots they show, from saved studies
only. An existing report is never replaced without --overwrite.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from harness.argtypes import OneLineParser, run_report_cli
from harness.comparison import ComparisonReport
from harness.document import render_html, render_markdown
from harness.errors import ConfigError, OutputError
from harness.refdata import PUBLISHED_FILE, load_published
from harness.studies import Study, load_studies

log = logging.getLogger(__name__)
REPORT_FILES = ("report.md", "report.html")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m harness.compare", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                      description="Markdown and HTML comparison report, with PNG plots, of studies from "
                      "different systems.")
    p.add_argument("studies", nargs="+", type=Path, metavar="STUDY_DIR", help="study directories (study.json)")
    p.add_argument("--baseline", default=None, help="system name the speed-ups divide by (default: the first study)")
    p.add_argument("--output", type=Path, default=Path("deepgap-report"), help="report directory")
    p.add_argument("--overwrite", action="store_true", help="replace the report files of an earlier report there")
    p.add_argument("--published", type=Path, default=PUBLISHED_FILE, help="published MLPerf results YAML")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def pick_baseline(studies: list[Study], name: str | None) -> Study:
    if name is None:
        return studies[0]
    for study in studies:
        if study.name == name:
            return study
    raise ConfigError(f"unknown baseline {name!r}; the studies hold {', '.join(s.name for s in studies)}")


def _check_output(output: Path, overwrite: bool) -> list[Path]:
    """The earlier report files to replace; refuses anything it would silently overwrite."""
    if output.exists() and not output.is_dir():
        raise OutputError(f"{output} exists and is not a directory")
    if not output.exists() or not any(output.iterdir()):
        return []
    ours = [p for p in output.iterdir() if p.name in REPORT_FILES or p.suffix == ".png"]
    if not overwrite:
        raise OutputError(f"{output} is not empty; pass --overwrite to replace its report or --output to write elsewhere")
    return ours


def write_report(studies: list[Study], baseline: Study, output: Path, overwrite: bool, published: Path) -> Path:
    stale = _check_output(output, overwrite)
    table = load_published(published)
    try:
        output.mkdir(parents=True, exist_ok=True)
        # Build in a scratch folder beside the target: a failure leaves no half-written report.
        with tempfile.TemporaryDirectory(dir=output, prefix=".report-") as scratch:
            work = Path(scratch)
            sections = ComparisonReport(studies, baseline, table, work).sections()
            title = f"deepgap comparison: {', '.join(s.name for s in studies)}"
            (work / "report.md").write_text(render_markdown(title, sections))
            (work / "report.html").write_text(render_html(title, sections))
            for path in stale:
                log.info("replacing %s (--overwrite)", path)
                path.unlink()
            for path in sorted(work.iterdir()):
                shutil.move(str(path), output / path.name)
    except OSError as exc:
        raise OutputError(f"cannot write the report to {output}: {exc.strerror or exc}") from None
    return output / "report.md"


def _run(args: argparse.Namespace) -> str:
    studies = load_studies(args.studies)
    baseline = pick_baseline(studies, args.baseline)
    report = write_report(studies, baseline, args.output, args.overwrite, args.published)
    return f"report: {report} (and report.html, plots) from {len(studies)} studies, baseline {baseline.name}"


def main(argv: Sequence[str] | None = None) -> int:
    return run_report_cli(build_parser(), argv, _run)


if __name__ == "__main__":
    sys.exit(main())
