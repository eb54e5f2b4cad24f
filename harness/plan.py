"""Capacity planner CLI: python -m harness.plan --qps 20000 --slo p99:15ms STUDY_DIR...

Prints the plan (Markdown, from templates/plan.md.j2): a one-line recommendation, a ranked
table of GPU types and precisions that serve the target load within the SLO, what each
capacity rests on (the runs at its load, run lengths, weights, profile, gate), the ratio to
the published MLPerf result, the prices with their dates, and each figure's basis.
`--csv DIR` writes every table as DIR/<table>.csv as well, numbers unformatted.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script (python harness/plan.py): the project root on the path
    import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import csv
import datetime as dt
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import jinja2

import reports
from plumbing.argtypes import (DefaultsHelpFormatter, OneLineParser, add_json_flag, add_verbose_flag, float_in,
                              fraction, int_at_least, positive_float, run_report_cli)
from reports.capacity import HOURS_PER_MONTH, RANK_METRICS, Plan, PlanOption, PlanRequest, make_plan
from reports.capacity_evidence import seconds
from reports.constraints import parse_slo
from reports.document import ABSENT, num
from plumbing.errors import ConfigError, OutputError, exit_code_epilog
from plumbing.files import write_atomic
from reports.refdata import PRICES_FILE, PUBLISHED_FILE, load_prices, load_published, shown_path
from reports.studies import load_studies

TEMPLATES = Path(reports.__file__).resolve().parent / "templates"


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m harness.plan", formatter_class=DefaultsHelpFormatter, epilog=exit_code_epilog(),
                      description="How many GPUs of each measured type serve a target load within a latency SLO, "
                      "at what power and cost, from saved studies.")
    p.add_argument("studies", nargs="+", type=Path, metavar="STUDY_DIR", help="study directories (study.json)")
    p.add_argument("--qps", type=positive_float, required=True, help="target load, queries (samples) per second")
    p.add_argument("--slo", default="p99:15ms",
                   help="latency SLO PERCENTILE:BOUND, as the sweep reads it (e.g. p99:15ms, p90:0.005s); p50, p90 "
                   "or p99, the percentiles studies record")
    p.add_argument("--model", default="resnet50", help="model to plan for")
    p.add_argument("--headroom", type=fraction, default=0.2,
                   help="fraction of each device's capacity kept unused (0.2: load devices to 80%%)")
    p.add_argument("--spares", type=int_at_least(0), default=1, help="spare devices on top of N (1: N+1)")
    p.add_argument("--pass-fraction", type=float_in(0.0, 1.0), default=1.0,
                   help="share of the runs at a search's maximum (confirmation and ladder repeats) that must "
                   "meet the SLO for it to stand; else the plan steps down (1: every run)")
    p.add_argument("--prices", type=Path, default=PRICES_FILE, help="price table YAML (editable assumptions)")
    p.add_argument("--price-max-age-days", type=int_at_least(0), default=180,
                   help="prices older than this on the plan's date are flagged stale")
    p.add_argument("--as-of", type=_date, default=None,
                   help="the plan's date, YYYY-MM-DD (default: the newest study's date, so output is reproducible)")
    p.add_argument("--published", type=Path, default=PUBLISHED_FILE, help="published MLPerf results YAML")
    p.add_argument("--rank-by", choices=sorted(RANK_METRICS), default="cost", help="ranking metric")
    p.add_argument("--csv", type=Path, default=None, metavar="DIR",
                   help="also write each table as DIR/<table>.csv (default: none)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the CSV files of an earlier plan in --csv DIR (default: off: refused)")
    add_json_flag(p)
    add_verbose_flag(p)
    return p


# ---- tables: one definition, shown in Markdown and written raw as CSV ---------------------------

@dataclass
class PlanTable:
    name: str  # the CSV file's stem
    title: str
    columns: list[str]
    rows: list[list[tuple[Any, str]]] = field(default_factory=list)  # (CSV value, Markdown text)

    def add(self, *cells: Any) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"row has {len(cells)} cells, table {self.name} has {len(self.columns)} columns")
        self.rows.append([c if isinstance(c, tuple) else (c, ABSENT if c is None else str(c)) for c in cells])

    def shown_rows(self) -> list[list[str]]:
        return [[text for _, text in row] for row in self.rows]

    def csv_text(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows([["" if raw is None else raw for raw, _ in row] for row in self.rows])
        return out.getvalue()


def figure(value: float | None, digits: int) -> tuple[float | None, str]:
    """A number: unformatted for CSV (rounded to what the plan shows, empty when absent), with
    thousands separators in Markdown ('n/a' when absent, never zero)."""
    raw = None if value is None else round(value) if digits == 0 else round(value, digits)
    return raw, num(value, digits)


def seconds_cell(value: float | None) -> tuple[float | None, str]:
    return value, ABSENT if value is None else f"{value:g}"


def _label(o: PlanOption) -> tuple[str, str, str]:
    return o.device, o.precision, o.backend


def tables(plan: Plan) -> list[PlanTable]:
    r = plan.request
    options = PlanTable("plan", "Options, best first", [
        "rank", "device", "precision", "backend", "capacity basis", "max QPS per device",
        "runs within SLO at that load", "N (headroom)", f"N+{r.spares}", "GPU-only watts, N active, total",
        "kWh per 1M", "USD per hour", f"USD per month ({HOURS_PER_MONTH} h)", "USD per 1M",
        "capacity / published MLPerf"])
    rests = PlanTable("evidence", "What each capacity rests on", [
        "rank", "device", "precision", "backend", "study", "load (system QPS)", "runs within SLO",
        "runs at that load", "point run s", "repeats", "search run s", "confirmation run s", "weights",
        "run profile", "accuracy gate"])
    mlperf = PlanTable("mlperf", "Against the published MLPerf result per GPU", [
        "rank", "device", "precision", "backend", "measured QPS per GPU", "published Server QPS per GPU",
        "published round", "measured / published", "published basis"])
    prices = PlanTable("prices", "Prices used (editable assumptions)", [
        "type", "USD per device-hour", "as of", "age on plan date (days)", "stale", "source"])
    seen_prices: set[str] = set()
    for i, o in enumerate(plan.ranked, 1):
        ev, pv = o.evidence, o.provenance
        options.add(i, *_label(o), o.kind, figure(o.qps_per_device, 0), ev.count() if ev else None, o.devices,
                    o.deployed, figure(o.watts, 0), figure(o.kwh_per_million, 3), figure(o.usd_per_hour, 2),
                    figure(o.usd_per_month, 0), figure(o.usd_per_million, 3), figure(o.published_ratio, 2))
        rests.add(i, *_label(o), o.system, figure(ev.load if ev else None, 0), ev.count() if ev else None,
                  ev.breakdown() if ev else None, seconds_cell(pv.point_s), pv.repeats, seconds_cell(pv.search_s),
                  seconds_cell(pv.confirm_s), pv.weights, pv.run_profile, pv.accuracy_gate)
        pub = o.published
        mlperf.add(i, *_label(o), figure(o.qps_per_device, 0), figure(pub.server if pub else None, 0),
                   pub.round if pub else None, figure(o.published_ratio, 2), pub.server_basis if pub else None)
        if o.price is not None and o.price.type not in seen_prices:
            seen_prices.add(o.price.type)
            prices.add(o.price.type, figure(o.price.usd_per_hour, 3), o.price.as_of, o.price_age_days,
                       ("yes" if o.price_stale else "no", "STALE" if o.price_stale else "no"), o.price.source)
    unplanned = PlanTable("not-planned", "Not planned", ["device", "precision", "backend", "why"])
    for o in plan.unplanned:
        unplanned.add(*_label(o), "; ".join(o.basis))
    return [options, rests, mlperf, prices, unplanned]


# ---- the recommendation ---------------------------------------------------------------------

def main_caveat(o: PlanOption) -> str:
    """The caveat most likely to change this option's device count."""
    if o.kind == "unconfirmed":
        return ("its capacity is a search maximum that no repeat at that load confirmed; rerun the search "
                "with longer runs before relying on it")
    if o.kind == "lower bound":
        return "its capacity is a lower bound from Server points (no SLO search at this SLO), so the count may be high"
    if o.published_ratio:
        return (f"the published MLPerf result for this card (TensorRT INT8) is {1 / o.published_ratio:.1f}x this "
                "capacity per GPU, so with TensorRT INT8 the count could fall by about that factor")
    return f"the capacity rests on short runs ({o.provenance.summary if o.provenance else 'not recorded'})"


def recommendation(plan: Plan) -> str:
    r, best = plan.request, plan.ranked[0]
    cost = (f"{best.usd_per_month:,.0f} USD a month ({best.usd_per_hour:,.2f} USD/hour x {HOURS_PER_MONTH} h)"
            if best.usd_per_month is not None else "cost not priced")
    return (f"deploy {best.deployed} x {best.device} ({best.precision}, {best.backend}; {best.devices} active + "
            f"{r.spares} spare) for {r.target_qps:,.0f} QPS at {r.slo.label}: {cost}; first of "
            f"{len(plan.ranked)} option(s) by {RANK_METRICS[r.rank_by].unit}. Caveat that weighs most: "
            f"{main_caveat(best)}.")


# ---- rendering --------------------------------------------------------------------------------

def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             autoescape=False, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["md_cell"] = _md_cell
    return env


def render_plan(plan: Plan) -> str:
    r = plan.request
    published = plan.published
    lengths = sorted({seconds(run.duration_ms) for o in plan.ranked if o.evidence for run in o.evidence.runs
                      if run.duration_ms is not None})
    text = _environment().get_template("plan.md.j2").render(
        plan=plan, request=r, tables={t.name: t for t in tables(plan)}, recommendation=recommendation(plan),
        metric=RANK_METRICS[r.rank_by], hours_per_month=HOURS_PER_MONTH, run_lengths=", ".join(lengths),
        published=published, published_path=shown_path(published.path) if published else None,
        prices_path=shown_path(plan.prices.path))
    return text.rstrip() + "\n"


def write_csv(plan: Plan, directory: Path, overwrite: bool) -> None:
    """Every table as directory/<name>.csv; an earlier plan's files only with `overwrite`."""
    written = tables(plan)
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{directory} exists and is not a directory")
    clash = [directory / f"{t.name}.csv" for t in written if (directory / f"{t.name}.csv").exists()]
    if clash and not overwrite:
        raise OutputError(f"{clash[0]} exists; pass --overwrite to replace the plan's CSV files or --csv elsewhere")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for table in written:
            write_atomic(directory / f"{table.name}.csv", table.csv_text())
    except OSError as exc:
        raise OutputError(f"{directory}: cannot write the CSV files ({exc.strerror or exc})") from None


def _run(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    request = PlanRequest(model=args.model, target_qps=args.qps, slo=parse_slo(args.slo), headroom=args.headroom,
                          spares=args.spares, rank_by=args.rank_by, pass_fraction=args.pass_fraction,
                          as_of=args.as_of, price_max_age_days=args.price_max_age_days)
    if args.overwrite and args.csv is None:
        raise ConfigError("--overwrite replaces CSV files: give --csv DIR with it")
    plan = make_plan(load_studies(args.studies), request, load_prices(args.prices), load_published(args.published))
    if args.csv is not None:
        write_csv(plan, args.csv, args.overwrite)
    return render_plan(plan), plan_fields(plan)


def plan_fields(plan: Plan) -> dict[str, Any]:
    """--json: the target and each option, ranked, with the figures its rank rests on."""
    r = plan.request
    figures = ("kind", "qps_per_device", "devices", "deployed", "watts", "usd_per_hour", "usd_per_month",
               "usd_per_million", "published_ratio")
    return {
        "request": {"model": r.model, "qps": r.target_qps, "slo": r.slo.label, "headroom": r.headroom,
                    "spares": r.spares, "rank_by": r.rank_by},
        "recommendation": recommendation(plan) if plan.ranked else None,
        "options": [{"rank": i, "device": o.device, "precision": o.precision, "backend": o.backend,
                     "study": o.system, **{k: getattr(o, k) for k in figures}} for i, o in enumerate(plan.ranked, 1)],
        "not_planned": [{"device": o.device, "precision": o.precision, "backend": o.backend, "why": "; ".join(o.basis)}
                        for o in plan.unplanned],
    }


def main(argv: Sequence[str] | None = None) -> int:
    return run_report_cli(build_parser(), argv, _run, "plan")


if __name__ == "__main__":
    sys.exit(main())
