"""Comparison report CLI: python -m harness.compare STUDY_DIR... --baseline NAME --output REPORT_DIR

Writes into REPORT_DIR, from saved studies only: report.html (one self-contained page, plots
embedded), report.md with the PNG plots it links beside it, and csv/<table>.csv, one file per
table. An existing report is never replaced without --overwrite; other files there are kept.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script (python harness/compare.py): the project root on the path
    import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from reports import verdict
from plumbing.argtypes import DefaultsHelpFormatter, OneLineParser, add_json_flag, add_verbose_flag, run_report_cli
from reports.comparison import ComparisonReport
from reports.document import Report
from plumbing.errors import ConfigError, OutputError, exit_code_epilog
from reports.refdata import PUBLISHED_FILE, load_published
from reports.render import CSV_DIR, write_report
from reports.studies import Study, load_studies
from reports.summary import summary_section

log = logging.getLogger(__name__)
REPORT_FILES = ("report.md", "report.html")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m harness.compare", formatter_class=DefaultsHelpFormatter,
                      epilog=exit_code_epilog(), description="Comparison report of studies from different systems: a self-contained "
                      "HTML page, Markdown with PNG plots, and a CSV file per table.")
    p.add_argument("studies", nargs="+", type=Path, metavar="STUDY_DIR", help="study directories (study.json)")
    p.add_argument("--baseline", default=None, help="system name the speed-ups divide by (default: the first study)")
    p.add_argument("--model", default=None,
                   help="model the summary's question is about (default: the published benchmark's, "
                   "resnet50, when measured, else the first)")
    p.add_argument("--question", default=None,
                   help="the summary's question in your words (default: derived from the model and the SLO "
                   "the studies searched at)")
    p.add_argument("--output", type=Path, default=Path("deepgap-report"), help="report directory")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the report files of an earlier report there (default: off: refused)")
    p.add_argument("--published", type=Path, default=PUBLISHED_FILE, help="published MLPerf results YAML")
    add_json_flag(p)
    add_verbose_flag(p)
    return p


def pick_baseline(studies: list[Study], name: str | None) -> Study:
    if name is None:
        return studies[0]
    for study in studies:
        if study.name == name:
            return study
    raise ConfigError(f"unknown baseline {name!r}; the studies hold {', '.join(s.name for s in studies)}")


def _ours(output: Path) -> list[Path]:
    """The files an earlier report wrote there."""
    found = [p for p in output.iterdir() if p.is_file() and (p.name in REPORT_FILES or p.suffix == ".png")]
    csv = output / CSV_DIR
    return found + (sorted(csv.glob("*.csv")) if csv.is_dir() else [])


def _check_output(output: Path, overwrite: bool) -> list[Path]:
    """The earlier report files to replace; refuses anything it would silently overwrite."""
    if output.exists() and not output.is_dir():
        raise OutputError(f"{output} exists and is not a directory")
    if not output.exists() or not any(output.iterdir()):
        return []
    if not overwrite:
        raise OutputError(f"{output} is not empty; pass --overwrite to replace its report or --output to write elsewhere")
    if (output / CSV_DIR).exists() and not (output / CSV_DIR).is_dir():
        raise OutputError(f"{output / CSV_DIR} exists and is not a directory")
    return _ours(output)


def build_report(studies: list[Study], baseline: Study, published: Path, model: str | None = None,
                 question: str | None = None) -> Report:
    table = load_published(published)
    asked = verdict.ask(studies, model, question, table.benchmark)
    content = ComparisonReport(studies, baseline, table, asked)
    title = f"deepgap comparison: {', '.join(s.name for s in studies)}"
    return Report(title, summary_section(asked, studies, content.colors), content.sections())


def write(report: Report, output: Path, overwrite: bool) -> Path:
    stale = _check_output(output, overwrite)
    try:
        output.mkdir(parents=True, exist_ok=True)
        # Build in a scratch folder beside the target: a failure leaves no half-written report.
        with tempfile.TemporaryDirectory(dir=output, prefix=".report-") as scratch:
            work = Path(scratch)
            written = write_report(report, work)
            for path in stale:
                log.info("replacing %s (--overwrite)", path)
                path.unlink()
            (output / CSV_DIR).mkdir(exist_ok=True)
            for path in written:
                shutil.move(str(path), output / path.relative_to(work))
    except OSError as exc:
        raise OutputError(f"cannot write the report to {output}: {exc.strerror or exc}") from None
    return output / "report.html"


def _run(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    studies = load_studies(args.studies)
    baseline = pick_baseline(studies, args.baseline)
    report = build_report(studies, baseline, args.published, args.model, args.question)
    page = write(report, args.output, args.overwrite)
    text = (f"report: {page} (self-contained), {args.output / 'report.md'} with its PNG plots, "
            f"{len(report.tables())} tables as CSV in {args.output / CSV_DIR}; from {len(studies)} "
            f"stud{'y' if len(studies) == 1 else 'ies'}, baseline {baseline.name}")
    asked = verdict.ask(studies, args.model, args.question, load_published(args.published).benchmark)
    decided = verdict.decide(asked, verdict.options(asked, studies))
    fields = {"report": {"html": str(page), "markdown": str(args.output / "report.md"),
                         "csv": str(args.output / CSV_DIR)},
              "studies": [{"system": s.name, "directory": str(s.directory)} for s in studies],
              "baseline": baseline.name, "question": asked.text, "answer": decided.answer,
              "clear_winner": decided.clear}
    return text, fields


def main(argv: Sequence[str] | None = None) -> int:
    return run_report_cli(build_parser(), argv, _run, "compare")


if __name__ == "__main__":
    sys.exit(main())
