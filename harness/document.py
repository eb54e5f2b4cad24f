"""A report as data (sections of paragraphs, tables and figures) and its two renderings,
Markdown and HTML, so both always carry the same numbers.

Absent values are rendered as "n/a" with the reason beside them, never as zero.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from harness.studies import Stat

ABSENT = "n/a"


def num(value: float | None, digits: int = 1) -> str:
    """1234.5 -> '1,234.5'; None -> 'n/a'."""
    return ABSENT if value is None else f"{value:,.{digits}f}"


def stat(value: Stat | None, digits: int = 1) -> str:
    """Mean ± standard deviation and the run count: '1,234.5 ± 12.0 (n=3)'."""
    if value is None:
        return ABSENT
    return f"{value.mean:,.{digits}f} ± {value.std:,.{digits}f} (n={value.n})"


def ratio(value: float | None, spread: float | None = None) -> str:
    if value is None:
        return ABSENT
    return f"{value:.2f}x" if spread is None else f"{value:.2f}x ± {spread:.2f}"


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    caption: str = ""

    def add(self, *cells: object) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"row has {len(cells)} cells, table has {len(self.columns)} columns")
        self.rows.append([str(c) for c in cells])


@dataclass
class Figure:
    file: str  # PNG file name, relative to the report
    caption: str


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # bullet list after the tables


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    lines = []
    if table.caption:
        lines += [f"*{table.caption}*", ""]
    lines.append("| " + " | ".join(_md_cell(c) for c in table.columns) + " |")
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def render_markdown(title: str, sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for section in sections:
        out += [f"## {section.title}", ""]
        for paragraph in section.paragraphs:
            out += [paragraph, ""]
        for table in section.tables:
            out += [markdown_table(table), ""]
        for figure in section.figures:
            out += [f"![{figure.caption}]({figure.file})", ""]
        for note in section.notes:
            out.append(f"- {note}")
        if section.notes:
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def render_html(title: str, sections: list[Section]) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">", f"<title>{e(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:70em;margin:auto}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #999;padding:.2em .5em;"
           "text-align:right}th{background:#eee}td:first-child{text-align:left}img{max-width:100%}</style>",
           "</head><body>", f"<h1>{e(title)}</h1>"]
    for section in sections:
        out.append(f"<h2>{e(section.title)}</h2>")
        out += [f"<p>{e(p)}</p>" for p in section.paragraphs]
        for table in section.tables:
            out.append("<table>")
            if table.caption:
                out.append(f"<caption>{e(table.caption)}</caption>")
            out.append("<tr>" + "".join(f"<th>{e(c)}</th>" for c in table.columns) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in table.rows]
            out.append("</table>")
        for figure in section.figures:
            out.append(f"<figure><img src=\"{e(figure.file)}\" alt=\"{e(figure.caption)}\">"
                       f"<figcaption>{e(figure.caption)}</figcaption></figure>")
        if section.notes:
            out.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in section.notes) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


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
