"""The capacity plan as rendered: the golden plan, the shipped plan, the recommendation,
stale prices, the plan's date and the CSV tables."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import pytest

from reports.capacity import PlanRequest, make_plan
from reports.constraints import parse_slo
from reports.document import parse_markdown_tables
from harness.plan import main, recommendation
from reports.refdata import load_prices, load_published
from reports.studies import load_study

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_PLAN = ROOT / "tests/golden/plans/t4-l4-l4x4-cpu-20k-qps.md"
GOLDEN_ARGS = ["--qps", "20000", "--slo", "p99:15ms"] + [f"tests/golden/studies/{n}" for n in
                                                          ("t4", "l4", "l4x4", "cpu")]
SHIPPED_PLAN = ROOT / "docs/report-2026-12-04/plan-resnet50-20k-qps.md"
SHIPPED_ARGS = ["--qps", "20000", "--slo", "p99:15ms", "docs/studies/2026-11-26/h100", "docs/studies/2026-11-26/h200",
                "docs/studies/2026-12-04/h200-compiled", "docs/studies/2026-11-26/cpu"]
CSV_TABLES = {"plan.csv", "evidence.csv", "mlperf.csv", "prices.csv", "not-planned.csv"}


def _render(args, monkeypatch, capsys) -> str:
    monkeypatch.chdir(ROOT)  # the plan names studies as given: relative paths keep it machine-independent
    assert main(args) == 0
    return capsys.readouterr().out


def test_rendered_plan_matches_the_golden_file(monkeypatch, capsys):
    # To accept a deliberate change: python -m harness.plan <GOLDEN_ARGS> > tests/golden/plans/...md
    assert _render(GOLDEN_ARGS, monkeypatch, capsys) == GOLDEN_PLAN.read_text()


def test_the_shipped_plan_is_what_the_planner_renders_from_the_shipped_studies(monkeypatch, capsys):
    out = _render(SHIPPED_ARGS, monkeypatch, capsys)
    assert out == SHIPPED_PLAN.read_text()
    options = parse_markdown_tables(out)[0]
    rows = {(r["device"], r["precision"]): r for r in options if r["backend"] == "torch"}
    # The compiled H200 study is its own option, named by its stack, not pooled with the eager one.
    first = options[0]
    assert (first["device"], first["precision"], first["backend"]) == ("NVIDIA H200", "fp16", "torch-inductor")
    assert rows[("NVIDIA H200", "fp16")]["max QPS per device"] == "14,446"
    # The H100 fp32 search maximum (5,770) passed its confirmation but 1 of the ladder's 3 repeats there.
    h100_fp32 = rows[("NVIDIA H100 80GB HBM3", "fp32")]
    assert h100_fp32["capacity basis"] == "stepped down" and h100_fp32["max QPS per device"] == "5,193"
    assert "ladder repeat 1 of 3 at 1 s" in out and "2 of 4 runs at 5,770 QPS" in out


def test_the_plan_says_what_its_figures_rest_on(monkeypatch, capsys):
    out = _render(SHIPPED_ARGS, monkeypatch, capsys)
    rests = {(r["device"], r["precision"]): r for r in parse_markdown_tables(out)[1] if r["study"] == "H200x1"}
    h200 = rests[("NVIDIA H200", "fp16")]
    assert (h200["point run s"], h200["search run s"], h200["confirmation run s"], h200["repeats"]) == (
        "1", "0.6", "3", "3")
    assert h200["accuracy gate"] == "skipped (--skip-accuracy-gate)" and h200["weights"] == "seeded random weights (not trained)"
    assert h200["run profile"].startswith("quick") and h200["runs within SLO"] == "4 of 4"
    assert rests[("NVIDIA H200", "fp32")]["accuracy gate"].startswith("not applicable")


def test_recommendation_names_the_first_option_its_monthly_cost_and_its_main_caveat(golden):
    studies = [load_study(golden(n)) for n in ("t4", "l4", "l4x4")]
    plan = make_plan(studies, PlanRequest("resnet50", 20000, parse_slo("p99:15ms")), load_prices(), load_published())
    line = recommendation(plan)
    best = plan.ranked[0]
    assert best.usd_per_month == pytest.approx(19 * 0.805 * 730)
    assert line.startswith("deploy 19 x NVIDIA L4 (fp16, torch; 18 active + 1 spare)")
    assert f"{19 * 0.805 * 730:,.0f} USD a month" in line
    # 1400 QPS per GPU against L4's published 12,204 (TensorRT INT8): 8.7x.
    assert best.published_ratio == pytest.approx(1400 / 12204)
    assert "TensorRT INT8" in line and "8.7x" in line


def _prices(tmp_path, t4_as_of: str, l4_as_of: str) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text("entries:\n"
                    f"  - {{type: T4, match: 'T4', usd_per_hour: 0.5, source: test, as_of: '{t4_as_of}'}}\n"
                    f"  - {{type: L4, match: 'L4', usd_per_hour: 0.8, source: test, as_of: {l4_as_of}}}\n")
    return path


def test_stale_prices_are_flagged_against_the_plan_date(golden, tmp_path, capsys):
    prices = _prices(tmp_path, "2025-01", "2026-10-01")
    studies = [str(golden(n)) for n in ("t4", "l4")]
    assert main(["--qps", "20000", "--prices", str(prices), *studies]) == 0
    out = capsys.readouterr().out
    # The plan's date is the newest study's (L4, 2026-11-21): T4's Jan 2025 is 659 days old,
    # counted from the month's last day; L4's 51.
    assert "Plan date 2026-11-21" in out
    table = {r["type"]: r for r in parse_markdown_tables(out)[3]}
    assert (table["T4"]["stale"], table["T4"]["age on plan date (days)"]) == ("STALE", "659")
    assert (table["L4"]["stale"], table["L4"]["age on plan date (days)"]) == ("no", "51")
    assert "STALE: 659 days old on 2026-11-21, over 180" in out
    assert main(["--qps", "20000", "--prices", str(prices), "--price-max-age-days", "30", *studies]) == 0
    table = {r["type"]: r for r in parse_markdown_tables(capsys.readouterr().out)[3]}
    assert table["L4"]["stale"] == "STALE"


def test_the_plan_date_comes_from_the_studies_or_as_of_never_the_clock(golden, tmp_path):
    prices = load_prices(_prices(tmp_path, "2026-11-20", "2026-11-20"))
    studies = [load_study(golden("t4"))]
    request = PlanRequest("resnet50", 1000, parse_slo("p99:15ms"))
    plan = make_plan(studies, request, prices)
    assert plan.date == dt.date(2026, 11, 20) and plan.ranked[0].price_age_days == 0
    later = make_plan(studies, PlanRequest("resnet50", 1000, parse_slo("p99:15ms"), as_of=dt.date(2027, 6, 1)), prices)
    assert later.date_basis == "given with --as-of" and later.ranked[0].price_stale


def test_csv_writes_every_table_with_plain_numbers(monkeypatch, capsys, tmp_path):
    out_dir = tmp_path / "csv"
    markdown = _render([*GOLDEN_ARGS, "--csv", str(out_dir)], monkeypatch, capsys)
    assert {p.name for p in out_dir.iterdir()} == CSV_TABLES
    with (out_dir / "plan.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["device"] for r in rows] == [r["device"] for r in parse_markdown_tables(markdown)[0]]
    l4 = rows[0]
    assert (l4["max QPS per device"], l4["USD per hour"], l4["N+1"]) == ("1400", "15.3", "19")
    assert l4["runs within SLO at that load"] == "4 of 4"
    with (out_dir / "evidence.csv").open(newline="") as handle:
        assert list(csv.DictReader(handle))[0]["point run s"] == ""  # not recorded: empty, never zero


def test_csv_never_replaces_an_earlier_plan_silently(golden, tmp_path, capsys):
    out_dir = tmp_path / "csv"
    out_dir.mkdir()
    (out_dir / "plan.csv").write_text("earlier\n")
    args = ["--qps", "2000", str(golden("t4")), "--csv", str(out_dir)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "plan.csv exists; pass --overwrite" in err and err.count("\n") == 1
    assert (out_dir / "plan.csv").read_text() == "earlier\n"
    assert main([*args, "--overwrite"]) == 0
    assert (out_dir / "plan.csv").read_text().startswith("rank,device,")
    assert main(["--qps", "2000", str(golden("t4")), "--overwrite"]) == 2
    assert "give --csv DIR" in capsys.readouterr().err


def test_plan_json_lists_its_options_ranked(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(ROOT)
    summary = tmp_path / "plan.json"
    assert main([*GOLDEN_ARGS, "--json", str(summary)]) == 0
    text = capsys.readouterr().out
    assert text == GOLDEN_PLAN.read_text()  # the plan itself is unchanged by --json
    import json

    data = json.loads(summary.read_text())
    assert (data["schema"], data["command"], data["exit_code"]) == ("deepgap.summary/1", "plan", 0)
    assert data["request"]["qps"] == 20000 and data["request"]["slo"] == "p99 <= 15 ms"
    table = parse_markdown_tables(text)[0]
    assert [o["rank"] for o in data["options"]] == list(range(1, len(table) + 1))
    for option, row in zip(data["options"], table):
        assert (option["device"], option["precision"], option["backend"]) == (row["device"], row["precision"],
                                                                                row["backend"])
        assert str(option["deployed"]) == row["N+1"]
    assert data["recommendation"] in text
