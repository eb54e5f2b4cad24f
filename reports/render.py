"""The report's renderings, all from one `Report`: Markdown (PNG plots linked beside it), one
self-contained HTML page (plots embedded as data URIs) and a CSV file per table. Markdown and
HTML come from the Jinja2 templates in reports/templates/; the same report gives the same
bytes."""

from __future__ import annotations

import base64
import csv
import io
from pathlib import Path

import jinja2

from reports.document import Report, Table, markdown_table

CSV_DIR = "csv"
FOLD_ROWS = 12  # longer HTML tables start folded (<details>), after their plots

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("reports", "templates"),
    autoescape=lambda name: bool(name and name.endswith(".html.j2")),
    trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
)
_env.filters["markdown_table"] = markdown_table
_env.filters["data_uri"] = lambda png: "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def csv_file(table: Table) -> str:
    return f"{CSV_DIR}/{table.name}.csv"


_env.globals.update(csv_file=csv_file, fold_rows=FOLD_ROWS)


def render_markdown(report: Report) -> str:
    return _env.get_template("report.md.j2").render(report=report)


def render_html(report: Report) -> str:
    return _env.get_template("report.html.j2").render(report=report)


def table_csv(table: Table) -> str:
    """Header row, then one row per table row; numbers bare (no separators), absent empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.csv_header())
    writer.writerows(table.csv_rows())
    return out.getvalue()


def write_report(report: Report, folder: Path) -> list[Path]:
    """report.md, report.html, the PNGs report.md links and csv/<table>.csv into `folder`."""
    written = [folder / "report.md", folder / "report.html"]
    written[0].write_text(render_markdown(report))
    written[1].write_text(render_html(report))
    for figure in report.figures():
        (folder / figure.file).write_bytes(figure.png)
        written.append(folder / figure.file)
    (folder / CSV_DIR).mkdir(exist_ok=True)
    names = [t.name for t in report.tables()]
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"every table needs its own name for its CSV file: {names}")
    for table in report.tables():
        path = folder / csv_file(table)
        path.write_text(table_csv(table))
        written.append(path)
    return written
