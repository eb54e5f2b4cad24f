"""Parsers for the files MLPerf LoadGen writes: the summary and the detail log (the accuracy
log: runs/accuracy_log.py).

Pure text/JSON parsing on purpose: nothing here imports ``mlperf_loadgen``, so results can
be inspected (and tested) on machines without LoadGen, and long after the run.

Formats were checked against mlcommons-loadgen 6.0.17. Notes that matter to callers:

* In AccuracyOnly mode LoadGen writes no results summary at all: the summary file holds
  only the "No warnings / No errors" footer. ``parse_summary`` raises for it.
* The summary's "Result is" ignores "Min queries satisfied" unless max duration is
  enforced, while the detail log's ``result_validity`` always includes it; the two can
  disagree. The submission checker reads the detail log.
* The SingleStream/MultiStream headline is the plain percentile; the early-stopping
  estimate the submission checker reports is a separate number
  (``Summary.early_stopping_estimates_ns`` / detail key ``early_stopping_latency_ss``
  or ``early_stopping_latency_ms``).
* Floating-point values are printed with C++ stream defaults (6 significant digits), so
  e.g. an Offline rate above a million reads "1.23457e+06".
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from plumbing.errors import OutputError

PathLike = str | os.PathLike[str]

_MLLOG_PREFIX = ":::MLLOG"
_PERCENTILE_KEY = re.compile(r"^(\d+(?:\.\d+)?) percentile latency \(ns\)$")
_ES_ESTIMATE = re.compile(
    r"^Early stopping (\d+(?:\.\d+)?)th percentile estimate:\s*([-+0-9.eE]+)$"
)
_INCIDENTS = re.compile(r"^(No|\d+) (warnings?|errors?) encountered", re.IGNORECASE)


# --------------------------------------------------------------------------- summary


@dataclass
class Summary:
    """What mlperf_log_summary.txt says about one performance run."""

    scenario: str
    mode: str
    headline_metric_name: str
    headline_value: float
    result_valid: bool | None = None
    # None where LoadGen printed "Skipped" or left the line out (e.g. perf constraints
    # exist only for Server).
    min_duration_satisfied: bool | None = None
    min_queries_satisfied: bool | None = None
    early_stopping_satisfied: bool | None = None
    perf_constraints_satisfied: bool | None = None
    invalid_reasons: list[str] = field(default_factory=list)
    # Keys as printed ("50.00", "99.90"); values in ns. Per-query figures in MultiStream.
    percentiles_ns: dict[str, float] = field(default_factory=dict)
    min_latency_ns: float | None = None
    max_latency_ns: float | None = None
    mean_latency_ns: float | None = None
    scheduled_samples_per_second: float | None = None
    qps_with_loadgen_overhead: float | None = None
    qps_without_loadgen_overhead: float | None = None
    # Bullets of the "Early Stopping Result:" section, wrapped lines joined.
    early_stopping_result: list[str] = field(default_factory=list)
    # {"90.0": 7080.0} from "Early stopping 90.0th percentile estimate: 7080".
    early_stopping_estimates_ns: dict[str, float] = field(default_factory=dict)
    # Every "Header:" section (Recommendations, Early Stopping Result, TTFT ...) -> bullets.
    sections: dict[str, list[str]] = field(default_factory=dict)
    sut_name: str | None = None
    num_warnings: int | None = None
    num_errors: int | None = None
    # Every "key : value" line, key whitespace-normalised; the first occurrence wins.
    raw: dict[str, str] = field(default_factory=dict)


def read_text(path: PathLike, what: str) -> str:
    p = Path(path)
    try:
        # errors="replace": a stray byte in a user-chosen SUT name must not hide results.
        return p.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise OutputError(f"LoadGen {what} not found: {p}") from None
    except IsADirectoryError:
        raise OutputError(f"LoadGen {what} path is a directory: {p}") from None
    except OSError as exc:
        raise OutputError(f"cannot read LoadGen {what} {p}: {exc.strerror or exc}") from None


def _norm_key(key: str) -> str:
    return " ".join(key.split())


def _yes_no(value: str | None) -> bool | None:
    if value is None:
        return None
    v = value.strip().lower()
    if v in ("yes", "true", "valid"):
        return True
    if v in ("no", "false", "invalid"):
        return False
    return None  # "Skipped" and anything unforeseen: unknown rather than a guess.


def _to_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip().split()[0])
    except (ValueError, IndexError):
        return None


def _is_banner(line: str) -> bool:
    s = line.strip()
    return len(s) >= 3 and set(s) == {"="}


def parse_summary(path: PathLike) -> Summary:
    """Parse mlperf_log_summary.txt; raise OutputError if it is missing or holds no result."""
    p = Path(path)
    text = read_text(p, "summary")
    lines = text.splitlines()

    raw: dict[str, str] = {}
    kv_order: list[tuple[str, str]] = []
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None  # bullets of the section being read
    num_warnings: int | None = None
    num_errors: int | None = None

    for line in lines:
        s = line.strip()
        if not s or _is_banner(s):
            current = None
            continue
        m = _INCIDENTS.match(s)
        if m:
            n = 0 if m.group(1).lower() == "no" else int(m.group(1))
            if m.group(2).lower().startswith("warning"):
                num_warnings = n
            else:
                num_errors = n
            current = None
            continue
        if s.startswith("*"):
            bullet = s.lstrip("*").strip()
            if current is None:
                # A bullet outside any header still explains something; keep it findable.
                current = sections.setdefault("", [])
            current.append(bullet)
            continue
        # "Recommendations:" is a header; "SUT name :" (space before the colon) is a
        # key with an empty value.
        if s.endswith(":") and ":" not in s[:-1] and not s[:-1].endswith(" "):
            current = sections.setdefault(_norm_key(s[:-1]), [])
            continue
        if current is not None and current:
            # LoadGen wraps long bullets onto indented lines without a "*".
            current[-1] = f"{current[-1]} {s}"
            continue
        current = None
        if ":" in s:
            key, _, value = s.partition(":")
            key, value = _norm_key(key), value.strip()
            if key:
                kv_order.append((key, value))
                raw.setdefault(key, value)

    if "Scenario" not in raw:
        if not text.strip():
            raise OutputError(
                f"LoadGen summary {p} is empty: the run did not finish (crashed or killed?)"
            )
        if num_warnings is not None or num_errors is not None:
            raise OutputError(
                f"LoadGen summary {p} holds no results (LoadGen writes none in AccuracyOnly mode)"
            )
        raise OutputError(f"LoadGen summary {p} has no 'Scenario' line: not a LoadGen summary")

    headline = _find_headline(kv_order)
    if headline is None:
        raise OutputError(
            f"LoadGen summary {p} has no headline metric line: the file is cut short"
        )
    headline_name, headline_value = headline

    percentiles: dict[str, float] = {}
    for key, value in kv_order:
        m = _PERCENTILE_KEY.match(key)
        num = _to_float(value)
        if m and num is not None and m.group(1) not in percentiles:
            percentiles[m.group(1)] = num

    es_result = sections.get("Early Stopping Result", [])
    estimates: dict[str, float] = {}
    for bullets in sections.values():
        for b in bullets:
            m = _ES_ESTIMATE.match(b)
            if m:
                estimates[m.group(1)] = float(m.group(2))

    summary = Summary(
        scenario=raw["Scenario"],
        mode=raw.get("Mode", ""),
        headline_metric_name=headline_name,
        headline_value=headline_value,
        result_valid=_yes_no(raw.get("Result is")),
        min_duration_satisfied=_yes_no(raw.get("Min duration satisfied")),
        min_queries_satisfied=_yes_no(raw.get("Min queries satisfied")),
        early_stopping_satisfied=_yes_no(raw.get("Early stopping satisfied")),
        perf_constraints_satisfied=_yes_no(raw.get("Performance constraints satisfied")),
        percentiles_ns=percentiles,
        min_latency_ns=_to_float(raw.get("Min latency (ns)")),
        max_latency_ns=_to_float(raw.get("Max latency (ns)")),
        mean_latency_ns=_to_float(raw.get("Mean latency (ns)")),
        scheduled_samples_per_second=_to_float(raw.get("Scheduled samples per second")),
        qps_with_loadgen_overhead=_to_float(raw.get("QPS w/ loadgen overhead")),
        qps_without_loadgen_overhead=_to_float(raw.get("QPS w/o loadgen overhead")),
        early_stopping_result=list(es_result),
        early_stopping_estimates_ns=estimates,
        sections=sections,
        sut_name=raw.get("SUT name"),
        num_warnings=num_warnings,
        num_errors=num_errors,
        raw=raw,
    )
    if summary.result_valid is False:
        summary.invalid_reasons = _invalid_reasons(kv_order, sections, summary)
    return summary


_CONSTRAINT_KEYS = (
    "Performance constraints satisfied",
    "Min duration satisfied",
    "Min queries satisfied",
    "Early stopping satisfied",
)


def _find_headline(kv_order: list[tuple[str, str]]) -> tuple[str, float] | None:
    # The headline is whatever LoadGen prints between "Mode" and "Result is"; going by
    # position rather than by name survives renamed metrics across LoadGen versions.
    seen_mode = False
    for key, value in kv_order:
        if key == "Mode":
            seen_mode = True
            continue
        if key == "Result is":
            break
        if seen_mode:
            num = _to_float(value)
            if num is not None:
                return key, num
    return None


def _invalid_reasons(
    kv_order: list[tuple[str, str]], sections: dict[str, list[str]], summary: Summary
) -> list[str]:
    reasons = [
        f"{key}: {value}" for key, value in kv_order
        if key in _CONSTRAINT_KEYS and _yes_no(value) is False
    ]
    reasons += sections.get("Recommendations", [])
    # With early stopping unmet the Recommendations section is often empty (Server); the
    # actionable text ("would need at least N more queries") is in the early-stopping one.
    if summary.early_stopping_satisfied is False:
        for name, bullets in sections.items():
            if name.endswith("Early Stopping Result"):
                reasons += bullets
    return reasons


# --------------------------------------------------------------------------- detail


@dataclass
class Detail:
    """Entries of mlperf_log_detail.txt, with the groups callers usually want."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    errors: list[tuple[str, Any]] = field(default_factory=list)
    warnings: list[tuple[str, Any]] = field(default_factory=list)
    effective: dict[str, Any] = field(default_factory=dict)
    requested: dict[str, Any] = field(default_factory=dict)
    # "result_" keys, prefix stripped: validity, samples_per_second, query_count,
    # "90.00_percentile_latency_ns", ... Absent for AccuracyOnly runs.
    result: dict[str, Any] = field(default_factory=dict)
    # "early_stopping_" keys (met, result, latency_ss, latency_ms): LoadGen does not
    # give these the "result_" prefix.
    early_stopping: dict[str, Any] = field(default_factory=dict)
    malformed_lines: int = 0
    _last: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def get(self, key: str, default: Any = None) -> Any:
        """Last logged value of ``key``; AccuracyOnly runs log some keys once per pass."""
        return self._last.get(key, default)


def parse_detail(path: PathLike) -> Detail:
    """Parse mlperf_log_detail.txt; unparsable lines are skipped and counted."""
    text = read_text(path, "detail log")
    detail = Detail()
    groups = (
        ("effective_", detail.effective),
        ("requested_", detail.requested),
        ("result_", detail.result),
        ("early_stopping_", detail.early_stopping),
    )
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if not s.startswith(_MLLOG_PREFIX):
            detail.malformed_lines += 1
            continue
        try:
            entry = json.loads(s[len(_MLLOG_PREFIX):])
        except json.JSONDecodeError:
            detail.malformed_lines += 1
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            detail.malformed_lines += 1
            continue
        key: str = entry["key"]
        value = entry.get("value")
        detail.entries.append(entry)
        detail._last[key] = value
        meta = entry.get("metadata")
        if isinstance(meta, dict):
            if meta.get("is_error") is True:
                detail.errors.append((key, value))
            if meta.get("is_warning") is True:
                detail.warnings.append((key, value))
        for prefix, group in groups:
            if key.startswith(prefix):
                group[key[len(prefix):]] = value
                break
    return detail


# --------------------------------------------------------------------------- accuracy
