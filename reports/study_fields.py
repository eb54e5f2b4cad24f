"""Typed access to a study's JSON (reports/studies.py): every error names the file and the field."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from plumbing.errors import StudyError

NUMBER = (int, float)


class Fields:
    """Typed access to one JSON object, with errors that name the file and the field."""

    def __init__(self, source: Path, where: str, obj: Any):
        if not isinstance(obj, dict):
            raise StudyError(f"{source}: {where or 'top level'} must be an object")
        self.source, self.where, self.obj = source, where, obj

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, types: type | tuple[type, ...], nullable: bool = False) -> Any:
        if key not in self.obj:
            if nullable:
                return None
            raise StudyError(f"{self.source}: {self._name(key)} is missing")
        value = self.obj[key]
        if value is None and nullable:
            return None
        # bool is an int in Python; a count or rate given as true/false is a malformed file.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
            raise StudyError(f"{self.source}: {self._name(key)} has the wrong type ({type(value).__name__})")
        check_figure(self.source, self._name(key), value)
        return value

    def number(self, key: str, nullable: bool = False) -> float | None:
        value = self.get(key, NUMBER, nullable)
        return None if value is None else float(value)

    def child(self, key: str, nullable: bool = False) -> Fields | None:
        value = self.get(key, dict, nullable)
        return None if value is None else Fields(self.source, self._name(key), value)

    def children(self, key: str) -> list[Fields]:
        items = self.get(key, list)
        return [Fields(self.source, f"{self._name(key)}[{i}]", item) for i, item in enumerate(items)]


def check_figure(source: Path, name: str, value: Any) -> None:
    """Every number in a study (rates, latencies, watts, counts, batch sizes) is finite and
    not negative; a hand-edited NaN or -5 would otherwise be drawn and ranked as a figure."""
    if isinstance(value, NUMBER) and not isinstance(value, bool) and not (math.isfinite(value) and value >= 0):
        raise StudyError(f"{source}: {name} is {value!r}; a study's figures must be finite and not negative")


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)
