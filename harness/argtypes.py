"""Shared command-line pieces: a parser whose errors are one line, number parsers, hashing."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from harness.errors import ConfigError, DeepgapError
from harness.files import file_sha256  # noqa: F401  (imported from here by calibration/)


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise ConfigError(message)


def int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be {'positive' if minimum == 1 else f'>= {minimum}'}, got {value}"
            )
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


def run_report_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                   body: Callable[[argparse.Namespace], str]) -> int:
    """A read-only tool's main (plan, compare): parse, log to stderr (-v: debug), print what
    `body` returns; a DeepgapError is one line on stderr and its exit code."""
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
                            format="%(levelname).1s %(name)s: %(message)s", stream=sys.stderr)
        text = body(args)
        print(text, end="" if text.endswith("\n") else "\n")
        return 0
    except DeepgapError as exc:
        print(f"deepgap: error: {exc}", file=sys.stderr)
        return exc.exit_code
