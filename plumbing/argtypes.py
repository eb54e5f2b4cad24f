"""Shared command-line pieces: a parser whose errors are one line, number parsers, the help
formatter, --json and -v, and `guarded`, the one edge where errors become exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from plumbing.errors import INTERRUPTED_EXIT, OK_EXIT, ConfigError, DeepgapError

if TYPE_CHECKING:
    from plumbing.json_summary import SummaryTarget


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise ConfigError(message)


def int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be {'positive' if minimum == 1 else f'>= {minimum}'}, got {value}"
            )
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {value}")
        return value

    return parse


def float_in(low: float, high: float, low_open: bool = True, high_open: bool = False) -> Callable[[str], float]:
    """A number parser for an interval, by default (low, high]; positive_float and fraction
    below are the usual ones."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (above and below):
            if (low, low_open, high) == (0, True, float("inf")):
                what = "a positive finite number"
            else:
                what = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


positive_float = float_in(0.0, float("inf"), low_open=True, high_open=True)
fraction = float_in(0.0, 1.0, low_open=False, high_open=True)  # 0 <= x < 1


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help with each option's real default. A value default is appended as
    "(default: X)" (lists space-separated, as typed); a flag (store_true, store_false) and
    a computed default (None) must state theirs in their own words, "(default: ...)":
    argparse's ArgumentDefaultsHelpFormatter would print "(default: True)" for a
    --no-something flag and "(default: None)" for a computed one. The description and the
    epilog keep their line breaks. tests/harness/test_help.py checks every option."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "(default:" in text or action.nargs == 0 or action.required
                or default is None or default is argparse.SUPPRESS):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def json_target(text: str) -> str:
    """--json's value: '-' (stdout) or a file path whose folder exists, checked before any
    work so that a run is never measured only to fail writing its summary."""
    if text == "-":
        return text
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file path, or - for stdout")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such folder {str(path.parent)!r}")
    return str(path)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=json_target, default=None, metavar="PATH",
                        help="also write a machine-readable summary (schema deepgap.summary/1) to PATH, "
                        "or to stdout with - (the rest of the output then goes to stderr) (default: none)")


def add_verbose_flag(parser: argparse.ArgumentParser, console: str = "warnings only") -> None:
    """-v; `console` says what the console shows without it."""
    parser.add_argument("-v", "--verbose", action="store_true",
                        help=f"log INFO and DEBUG lines on the console too (default: off: {console})")


def guarded(prog: str, body: Callable[[], int], interrupted: str = "interrupted",
            summary: "SummaryTarget | None" = None) -> int:
    """Run a command's body: each DeepgapError becomes one line on stderr and its exit code
    (and, where the command was given --json, a summary saying so)."""
    try:
        return body()
    except DeepgapError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        if summary is not None:
            summary.failed(exc.exit_code, str(exc))
        if exc.exit_now:  # e.g. LoadGen's thread still running: leaving now is the only way out
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        if summary is not None:
            summary.failed(INTERRUPTED_EXIT, interrupted)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(INTERRUPTED_EXIT)


def run_report_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                   body: Callable[[argparse.Namespace], tuple[str, dict[str, Any]]], command: str) -> int:
    """A read-only tool's main (plan, compare): parse, set up logging, print the text
    `body` returns and write its summary where --json asks; a DeepgapError is one line on
    stderr and its exit code."""
    from plumbing import logs
    from plumbing.json_summary import SummaryTarget

    summary = SummaryTarget(command)

    def run() -> int:
        args = parser.parse_args(argv)
        logs.setup(verbose=getattr(args, "verbose", False))
        summary.target = getattr(args, "json", None)
        text, fields = body(args)
        print(text, end="" if text.endswith("\n") else "\n", file=summary.screen)
        summary.write(OK_EXIT, fields)
        return OK_EXIT

    return guarded("deepgap", run, summary=summary)
