"""Reference data: price entries carry the date they were read; the published table's basis."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from plumbing.errors import ConfigError
from reports.refdata import load_prices, load_published, period_end


@pytest.mark.parametrize("as_of, end", [("2025", dt.date(2025, 12, 31)), ("2024-02", dt.date(2024, 2, 29)),
                                        ("2025-06-14", dt.date(2025, 6, 14))])
def test_a_date_means_the_last_day_of_its_period(as_of, end):
    assert period_end(as_of) == end


def test_every_shipped_price_has_a_date_and_the_published_table_says_how_it_was_made():
    assert all(period_end(p.as_of) for p in load_prices().entries)
    assert "TensorRT INT8" in load_published().basis


@pytest.mark.parametrize("as_of, message", [
    (None, "entries[0].as_of is missing"),
    ("'last spring'", "entries[0].as_of 'last spring': is not YYYY, YYYY-MM or YYYY-MM-DD"),
    ("2025-13", "has no month 13"),
    ("'2025-02-30'", "day is out of range"),
])
def test_a_price_without_a_readable_date_is_a_one_line_error(tmp_path, as_of, message):
    path = tmp_path / "prices.yaml"
    date = "" if as_of is None else f", as_of: {as_of}"
    path.write_text(f"entries:\n  - {{type: T4, match: 'T4', usd_per_hour: 0.5, source: test{date}}}\n")
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        load_prices(path)
    assert "\n" not in str(raised.value)


def test_an_unquoted_yaml_date_is_read_as_that_day(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text("entries:\n  - {type: T4, match: 'T4', usd_per_hour: 0.5, source: test, as_of: 2026-03-01}\n")
    (price,) = load_prices(path).entries
    assert price.as_of == "2026-03-01" and price.age_days(dt.date(2026, 3, 31)) == 30
