"""LoadGen's accuracy log (mlperf_log_accuracy.json): its entries, a truncated log's
salvage, the int32 answers they hold, one answer per sample. Pure JSON parsing, as
runs/loadgen_log.py is for the summary and detail logs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from plumbing.errors import OutputError
from runs.loadgen_log import PathLike, read_text


@dataclass(frozen=True)
class AccuracyEntry:
    """One logged response: the bytes the SUT returned for sample ``qsl_idx``."""

    seq_id: int
    qsl_idx: int
    data: bytes


def parse_accuracy_log(path: PathLike, allow_truncated: bool = False) -> list[AccuracyEntry]:
    """Parse mlperf_log_accuracy.json.

    A run that crashes leaves the file without its closing ']' (or empty). That raises
    OutputError unless ``allow_truncated``, in which case the complete entries are returned
    (useful for diagnosing, never for reporting accuracy).
    """
    p = Path(path)
    text = read_text(p, "accuracy log")
    if not text.strip():
        raise OutputError(
            f"LoadGen accuracy log {p} is empty: the run did not finish (crashed or killed?)"
        )
    try:
        items = json.loads(text)
    except json.JSONDecodeError:
        salvaged = _salvage(text)
        if salvaged is None:
            raise OutputError(f"LoadGen accuracy log {p} is not valid JSON") from None
        if not allow_truncated:
            raise OutputError(
                f"LoadGen accuracy log {p} is truncated ({len(salvaged)} complete entries, "
                "no closing ']'): the run crashed or was killed before LoadGen finished"
            ) from None
        items = salvaged
    if not isinstance(items, list):
        raise OutputError(f"LoadGen accuracy log {p} is not a JSON list")
    return [_to_entry(item, p, i) for i, item in enumerate(items)]


def _salvage(text: str) -> list[Any] | None:
    lines = text.strip().splitlines()
    # LoadGen writes "[" and then one entry per line, each starting with "{"; anything
    # else is some other corruption, and guessing at it could invent entries.
    if not lines or lines[0].strip() != "[" or not all(
        ln.lstrip().startswith("{") for ln in lines[1:]
    ):
        return None
    # Only the last line can be partial (LoadGen flushes whole entries, but a kill can
    # still land mid-write).
    for end in (len(lines), len(lines) - 1):
        candidate = "\n".join(lines[:end]).rstrip().rstrip(",") + "\n]"
        try:
            items = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        return items if isinstance(items, list) else None
    return None


def _to_entry(item: Any, p: Path, i: int) -> AccuracyEntry:
    try:
        return AccuracyEntry(
            seq_id=int(item["seq_id"]),
            qsl_idx=int(item["qsl_idx"]),
            data=bytes.fromhex(item["data"]),
        )
    except (KeyError, TypeError, ValueError):
        raise OutputError(
            f"LoadGen accuracy log {p}: entry {i} lacks a valid seq_id/qsl_idx/hex data"
        ) from None


def decode_int32(entry: AccuracyEntry | bytes) -> np.ndarray:
    """Response bytes as little-endian int32 values (the byte order LoadGen copied)."""
    data = entry.data if isinstance(entry, AccuracyEntry) else entry
    if len(data) % 4:
        raise OutputError(f"accuracy log response of {len(data)} bytes is not a whole int32 array")
    # astype copies into a writable, native-order array; frombuffer alone is read-only.
    return np.frombuffer(data, dtype="<i4").astype(np.int32)


def deduplicate_by_qsl_idx(entries: Iterable[AccuracyEntry]) -> dict[int, bytes]:
    """First response per sample, as MLPerf's accuracy scripts count each sample once."""
    seen: dict[int, bytes] = {}
    for e in entries:
        seen.setdefault(e.qsl_idx, e.data)
    return seen
