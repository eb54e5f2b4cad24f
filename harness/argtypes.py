"""Shared command-line pieces: a parser whose errors are one line, number parsers, hashing."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Callable

from harness.errors import ConfigError


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


def float_in(low: float, high: float) -> Callable[[str], float]:
    """A parser for a number in (low, high]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not low < value <= high:
            raise argparse.ArgumentTypeError(f"must be in ({low:g}, {high:g}], got {text}")
        return value

    return parse


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks. Raises OSError."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
