"""The report as data: typed cells shown one way in every rendering, Markdown tables read
back cell for cell, CSV cells bare."""

from __future__ import annotations

import pytest

from reports.document import (INT, NUM, RATIO, SPREAD, VALIDITY, Column, Table, markdown_table, num,
                              parse_markdown_tables, slug, stat, validity)
from reports.studies import Stat


def test_markdown_tables_round_trip_even_with_pipes_and_backslashes():
    table = Table(["name", "value"])
    table.add("a|b", "1,234.5")
    table.add("c\\d", num(None))
    assert parse_markdown_tables(markdown_table(table)) == [[{"name": "a|b", "value": "1,234.5"},
                                                            {"name": "c\\d", "value": "n/a"}]]


def test_plain_text_tables_keep_their_markdown():
    # harness.plan renders its tables through markdown_table with plain columns.
    table = Table(["rank", "device"])
    table.add(1, "L4")
    assert markdown_table(table) == "| rank | device |\n|---|---|\n| 1 | L4 |"


def test_absent_values_are_never_zero():
    assert num(None) == "n/a" and stat(None) == "n/a"
    assert stat(Stat(1049.0, 11.1, 3)) == "1,049.0 ± 11.1 (n=3)"


def test_a_one_run_figure_has_no_fake_spread():
    assert stat(Stat(1049.0, 0.0, 1)) == "1,049.0 (n=1)"
    table = Table([Column("samples/s", SPREAD)], name="t")
    table.add(Stat(1049.0, 0.0, 1))
    assert table.rows == [["1,049.0 (n=1)"]] and table.csv_rows() == [["1049.0", "", "1"]]


def test_invalid_points_are_marked_in_the_cell_and_the_row():
    assert validity(3, 3) == "3 of 3" and validity(1, 3) == "INVALID (1 of 3 runs valid)"
    table = Table(["point", Column("valid runs", VALIDITY)], name="t")
    table.add("bs1", (0, 3))
    table.add("bs8", (3, 3))
    assert [flag for _, flag in table.row_flags()] == [True, False]


def test_csv_cells_are_bare_numbers_and_absent_is_empty():
    table = Table(["system", Column("batch", INT), Column("qps", NUM, 0), Column("rate", SPREAD),
                   Column("ratio", RATIO), Column("valid runs", VALIDITY)], name="t")
    table.add("H100x1", 512, 11426.702192207244, Stat(46682.26666666666, 158.76398626052628, 3), (1.2, 0.01),
              (3, 3))
    table.add("CPU", None, "none met the SLO", None, None, (0, 3))
    assert table.csv_header() == ["system", "batch", "qps", "rate", "rate std", "rate n", "ratio", "ratio spread",
                                  "valid runs", "valid runs of"]
    assert table.csv_rows() == [
        ["H100x1", "512", "11426.702192207244", "46682.26666666666", "158.76398626052628", "3", "1.2", "0.01",
         "3", "3"],
        ["CPU", "", "", "", "", "", "", "", "0", "3"]]
    assert table.rows[0][2:5] == ["11,427", "46,682.3 ± 158.8 (n=3)", "1.20x ± 0.01"]
    assert table.rows[1][1:5] == ["n/a", "none met the SLO", "n/a", "n/a"]


def test_columns_need_distinct_csv_names():
    with pytest.raises(ValueError, match="repeated column names"):
        Table([Column("rate", SPREAD), "rate n"], name="t")


def test_anchors_are_githubs():
    assert slug("p99 latency versus load (Server)") == "p99-latency-versus-load-server"
    assert slug("Speed-up against H100x1") == "speed-up-against-h100x1"
