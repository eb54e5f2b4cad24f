"""Reference data kept as YAML beside the profiles: the price table (editable assumptions)
and published MLPerf ResNet50 results. Entries are matched to a study's device name by the
regular expression each one carries; the first match wins. Every price carries the date it
was read (`as_of`: a day, a month or a year), so a plan can flag the ones grown stale."""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml

import scenarios
from plumbing.errors import ConfigError

# The data files ship inside the scenarios package (package_data), beside the GPU profiles.
DATA_DIR = Path(scenarios.__file__).resolve().parent
PRICES_FILE = DATA_DIR / "prices.yaml"
PUBLISHED_FILE = DATA_DIR / "published_mlperf.yaml"


_AS_OF = re.compile(r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2}))?)?$")


def period_end(as_of: str) -> dt.date:
    """The last day a date of the given precision can mean: '2025' -> 2025-12-31,
    '2025-06' -> 2025-06-30, '2025-06-14' -> itself. Raises ValueError."""
    match = _AS_OF.match(as_of.strip())
    if not match:
        raise ValueError("is not YYYY, YYYY-MM or YYYY-MM-DD")
    year, month = int(match["year"]), int(match["month"] or 12)
    if not 1 <= month <= 12:
        raise ValueError(f"has no month {month}")
    day = int(match["day"]) if match["day"] else calendar.monthrange(year, month)[1]
    return dt.date(year, month, day)  # ValueError for a day the month lacks


@dataclass(frozen=True)
class Price:
    type: str
    match: str
    usd_per_hour: float
    source: str
    as_of: str  # when the price was read: YYYY, YYYY-MM or YYYY-MM-DD

    def age_days(self, on: dt.date) -> int:
        """Days from the latest day `as_of` can mean to `on`: never overstates the age."""
        return (on - period_end(self.as_of)).days


@dataclass(frozen=True)
class Published:
    gpu: str
    match: str
    round: str
    offline: float
    offline_basis: str
    server: float
    server_basis: str


E = TypeVar("E", Price, Published)


def shown_path(path: Path) -> str:
    """The project's own data files by their place in the project (the same text on every
    machine, so reports stay reproducible); any other file as given."""
    try:
        return f"scenarios/{Path(path).resolve().relative_to(DATA_DIR)}"
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class MatchTable(Generic[E]):
    path: Path
    entries: tuple[E, ...]

    def for_device(self, device: str) -> E | None:
        """The first entry whose `match` finds the device name (case-insensitive)."""
        for entry in self.entries:
            if re.search(entry.match, device, re.IGNORECASE):
                return entry
        return None


@dataclass(frozen=True)
class PriceTable(MatchTable[Price]):
    currency: str


@dataclass(frozen=True)
class PublishedTable(MatchTable[Published]):
    benchmark: str
    server_bound: str
    basis: str = ""  # how every entry was made (runtime, precision, division)


def _entries(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise ConfigError(f"{path}: expected a mapping with a list of entries")
    for i, entry in enumerate(data["entries"]):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: entries[{i}] must be a mapping")
        try:
            re.compile(str(entry.get("match", "")))
        except re.error as exc:
            raise ConfigError(f"{path}: entries[{i}].match is not a regular expression ({exc})") from None
    return data, data["entries"]


def _field(path: Path, i: int, entry: dict[str, Any], key: str, kind: type) -> Any:
    value = entry.get(key)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{path}: entries[{i}].{key} must be a positive number, got {value!r}")
        return float(value)
    if value is None or str(value).strip() == "":
        raise ConfigError(f"{path}: entries[{i}].{key} is missing")
    return str(value)


def _as_of(path: Path, i: int, entry: dict[str, Any]) -> str:
    # YAML reads an unquoted 2025-06-14 as a date and 2025 as an int: both are fine.
    value = entry.get("as_of")
    text = value.isoformat() if isinstance(value, dt.date) else "" if value is None else str(value)
    if not text:
        raise ConfigError(f"{path}: entries[{i}].as_of is missing (the date the price was read, e.g. 2025-06-14)")
    try:
        period_end(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: entries[{i}].as_of {text!r}: {exc}") from None
    return text


def load_prices(path: Path | None = None) -> PriceTable:
    path = Path(path or PRICES_FILE)
    data, raw = _entries(path)
    entries = tuple(Price(type=_field(path, i, e, "type", str), match=_field(path, i, e, "match", str),
                          usd_per_hour=_field(path, i, e, "usd_per_hour", float),
                          source=_field(path, i, e, "source", str), as_of=_as_of(path, i, e))
                    for i, e in enumerate(raw))
    return PriceTable(path=path, currency=str(data.get("currency", "USD")), entries=entries)


def load_published(path: Path | None = None) -> PublishedTable:
    path = Path(path or PUBLISHED_FILE)
    data, raw = _entries(path)
    entries = tuple(Published(gpu=_field(path, i, e, "gpu", str), match=_field(path, i, e, "match", str),
                              round=_field(path, i, e, "round", str), offline=_field(path, i, e, "offline", float),
                              offline_basis=_field(path, i, e, "offline_basis", str),
                              server=_field(path, i, e, "server", float),
                              server_basis=_field(path, i, e, "server_basis", str)) for i, e in enumerate(raw))
    return PublishedTable(path=path, benchmark=str(data.get("benchmark", "resnet50")),
                          server_bound=str(data.get("server_bound", "")), basis=str(data.get("basis", "")),
                          entries=entries)
