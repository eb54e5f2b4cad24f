"""One report structure, two renderings; Markdown tables read back cell for cell."""

from __future__ import annotations

from harness.document import Section, Table, num, parse_markdown_tables, render_html, render_markdown, stat
from harness.studies import Stat


def test_markdown_tables_round_trip_even_with_pipes_and_backslashes():
    table = Table(["name", "value"])
    table.add("a|b", "1,234.5")
    table.add("c\\d", num(None))
    text = render_markdown("T", [Section("S", tables=[table])])
    assert parse_markdown_tables(text) == [[{"name": "a|b", "value": "1,234.5"}, {"name": "c\\d", "value": "n/a"}]]


def test_html_escapes_and_carries_the_same_cells():
    table = Table(["x"])
    table.add("<b>&</b>")
    html = render_html("T", [Section("S", tables=[table], notes=["note"])])
    assert "<td>&lt;b&gt;&amp;&lt;/b&gt;</td>" in html and "<li>note</li>" in html


def test_absent_values_are_never_zero():
    assert num(None) == "n/a" and stat(None) == "n/a"
    assert stat(Stat(1049.0, 11.1, 3)) == "1,049.0 ± 11.1 (n=3)"
