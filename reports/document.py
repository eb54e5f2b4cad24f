"""A report as data: a summary and sections of paragraphs, figures and tables whose cells keep
their values. The renderings (reports/render.py: Markdown, HTML, CSV) all read the same
cells, so every copy carries the same numbers.

A cell is shown by its column's kind: a number with thousands separators, a mean with its
spread and run count (a one-run figure has no "± 0.0"), a ratio, or a valid-run count that
reads INVALID when any run was. Absent values are "n/a" or the reason, never zero; in a CSV
a number column holds the bare number or nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from reports.studies import Stat

ABSENT = "n/a"
TEXT, INT, NUM, SPREAD, RATIO, VALIDITY = "text", "int", "num", "spread", "ratio", "validity"


def num(value: float | None, digits: int = 1) -> str:
    """1234.5 -> '1,234.5'; None -> 'n/a'."""
    return ABSENT if value is None else f"{value:,.{digits}f}"


def stat(value: Stat | None, digits: int = 1) -> str:
    """Mean ± standard deviation and the run count: '1,234.5 ± 12.0 (n=3)'. One run has no
    spread to show: '1,234.5 (n=1)'."""
    if value is None:
        return ABSENT
    if value.n < 2:
        return f"{value.mean:,.{digits}f} (n={value.n})"
    return f"{value.mean:,.{digits}f} ± {value.std:,.{digits}f} (n={value.n})"


def ratio(value: float | None, spread: float | None = None) -> str:
    if value is None:
        return ABSENT
    return f"{value:.2f}x" if spread is None else f"{value:.2f}x ± {spread:.2f}"


def validity(valid: int, total: int) -> str:
    """'3 of 3'; any invalid run marks the point: 'INVALID (1 of 3 runs valid)'."""
    return f"{valid} of {total}" if valid == total else f"INVALID ({valid} of {total} runs valid)"


@dataclass(frozen=True)
class Column:
    name: str
    kind: str = TEXT
    digits: int = 1

    @property
    def numeric(self) -> bool:
        return self.kind != TEXT

    def csv_names(self) -> list[str]:
        extra = {SPREAD: [f"{self.name} std", f"{self.name} n"], RATIO: [f"{self.name} spread"],
                 VALIDITY: [f"{self.name} of"]}
        return [self.name, *extra.get(self.kind, [])]

    def text(self, cell: Any) -> str:
        if isinstance(cell, str) or (cell is not None and self.kind == TEXT):
            return str(cell)  # text, or the reason a number is absent
        if cell is None:
            return ABSENT
        if self.kind == INT:
            return str(cell)
        if self.kind == NUM:
            return num(cell, self.digits)
        if self.kind == SPREAD:
            return stat(cell, self.digits) if isinstance(cell, Stat) else num(cell, self.digits)
        if self.kind == RATIO:
            return ratio(*cell) if isinstance(cell, tuple) else ratio(cell)
        return validity(*cell)

    def csv(self, cell: Any) -> list[str]:
        width = len(self.csv_names())
        if self.kind == TEXT:
            return ["" if cell is None else str(cell)]
        if cell is None or isinstance(cell, str):
            return [""] * width
        if self.kind == SPREAD and isinstance(cell, Stat):
            return [_bare(cell.mean), _bare(cell.std) if cell.n > 1 else "", str(cell.n)]
        if self.kind in (RATIO, VALIDITY) and isinstance(cell, tuple):
            return [_bare(v) for v in cell]
        return [_bare(cell)] + [""] * (width - 1)


def _bare(value: float | int | None) -> str:
    """A number as a CSV cell: no separators, full precision (repr round-trips)."""
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else repr(float(value))


class Table:
    """Rows of cells under typed columns. `name` is the table's stable file name (CSV)
    and `empty` the sentence shown instead of a table with no rows."""

    def __init__(self, columns: list[str | Column], name: str = "", caption: str = "", empty: str = ""):
        self.columns = [c if isinstance(c, Column) else Column(c) for c in columns]
        self.name, self.caption = name, caption
        self.empty = empty or "Nothing measured for this table."
        self.cells: list[list[Any]] = []
        names = [n for c in self.columns for n in c.csv_names()]
        if len(set(names)) != len(names):
            raise ValueError(f"table {name!r} has repeated column names: {names}")

    def add(self, *cells: object) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"row has {len(cells)} cells, table has {len(self.columns)} columns")
        self.cells.append(list(cells))

    @property
    def header(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def rows(self) -> list[list[str]]:
        return [[c.text(v) for c, v in zip(self.columns, row)] for row in self.cells]

    def row_flags(self) -> Iterator[tuple[list[str], bool]]:
        """Each row's cells as text, and whether a valid-run cell marks it INVALID."""
        for row, text in zip(self.cells, self.rows):
            invalid = any(c.kind == VALIDITY and isinstance(v, tuple) and v[0] != v[1]
                          for c, v in zip(self.columns, row))
            yield text, invalid

    def csv_header(self) -> list[str]:
        return [n for c in self.columns for n in c.csv_names()]

    def csv_rows(self) -> list[list[str]]:
        return [[x for c, v in zip(self.columns, row) for x in c.csv(v)] for row in self.cells]


@dataclass
class Figure:
    file: str  # PNG file name, beside the report (the Markdown links it; the HTML embeds it)
    caption: str
    png: bytes = field(default=b"", repr=False)


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # bullet list after the tables
    facts: list[tuple[str, str]] = field(default_factory=list)  # "Question: ..." lines, first
    highlights: list[str] = field(default_factory=list)  # numbered list after the facts

    @property
    def anchor(self) -> str:
        return slug(self.title)


@dataclass
class Report:
    title: str
    summary: Section
    sections: list[Section]

    def figures(self) -> list[Figure]:
        return [f for s in (self.summary, *self.sections) for f in s.figures]

    def tables(self) -> list[Table]:
        return [t for s in (self.summary, *self.sections) for t in s.tables]


def slug(title: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    """A pipe table; number columns are right-aligned ('---:')."""
    lines = [f"*{table.caption}*", ""] if table.caption else []
    lines.append("| " + " | ".join(_md_cell(c) for c in table.header) + " |")
    lines.append("|" + "|".join("---:" if c.numeric else "---" for c in table.columns) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def parse_markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """The pipe tables of a Markdown text as lists of {column: cell}: what tests (and
    scripts) read back from a rendered report."""
    tables: list[list[dict[str, str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = _split_row(lines[i])
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("| "):
                rows.append(dict(zip(header, _split_row(lines[i]))))
                i += 1
            tables.append(rows)
        else:
            i += 1
    return tables


def _split_row(line: str) -> list[str]:
    cells, current, escaped = [], "", False
    for ch in line.strip()[1:-1]:
        if escaped:
            current += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "|":
            cells.append(current.strip())
            current = ""
        else:
            current += ch
    cells.append(current.strip())
    return cells
