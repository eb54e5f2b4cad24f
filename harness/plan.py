"""Capacity planner CLI: python -m harness.plan --qps 20000 --slo p99:15ms STUDY_DIR...

Prints a ranked table (Markdown) of GPU types and precisions that serve the target load
within the SLO, and under it, for each option, the measurements each figure rests on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from harness.argtypes import OneLineParser, fraction, int_at_least, positive_float, run_report_cli
from harness.capacity import RANK_METRICS, Plan, PlanRequest, make_plan
from harness.constraints import parse_slo
from harness.document import Table, markdown_table, num
from harness.refdata import PRICES_FILE, load_prices
from harness.studies import load_studies


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m harness.plan", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                      description="How many GPUs of each measured type serve a target load within a latency SLO, "
                      "at what power and cost, from saved studies.")
    p.add_argument("studies", nargs="+", type=Path, metavar="STUDY_DIR", help="study directories (study.json)")
    p.add_argument("--qps", type=positive_float, required=True, help="target load, queries (samples) per second")
    p.add_argument("--slo", default="p99:15ms", help="latency SLO, pXX:LATENCYms (p50, p90 or p99)")
    p.add_argument("--model", default="resnet50", help="model to plan for")
    p.add_argument("--headroom", type=fraction, default=0.2,
                   help="fraction of each device's capacity kept unused (0.2: load devices to 80%%)")
    p.add_argument("--spares", type=int_at_least(0), default=1, help="spare devices on top of N (1: N+1)")
    p.add_argument("--prices", type=Path, default=PRICES_FILE, help="price table YAML (editable assumptions)")
    p.add_argument("--rank-by", choices=sorted(RANK_METRICS), default="cost", help="ranking metric")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def render_plan(plan: Plan) -> str:
    r = plan.request
    lines = [f"# Capacity plan: {r.model}, {r.target_qps:,.0f} QPS at {r.slo.label()}, headroom "
             f"{r.headroom:.0%}, N+{r.spares}", ""]
    table = Table(["rank", "device", "precision", "backend", "capacity basis", "max QPS per device",
                   "N (headroom)", f"N+{r.spares}", "watts at load", "kWh per 1M", "USD per hour", "USD per 1M"])
    for i, o in enumerate(plan.ranked, 1):
        table.add(i, o.device, o.precision, o.backend, o.kind, num(o.qps_per_device, 0), o.devices, o.deployed,
                  num(o.watts, 0), num(o.kwh_per_million, 3), num(o.usd_per_hour, 2), num(o.usd_per_million, 3))
    lines += [markdown_table(table), ""]
    metric = RANK_METRICS[r.rank_by]
    lines.append(f"Ranked by {metric.unit} (lower is better); options resting on a lower bound rank after "
                 "those resting on an SLO search; n/a means not measured or not priced, never zero. Watts are "
                 "those each study measured (GPU-only where labelled); prices are editable assumptions.")
    lines.append("")
    for i, o in enumerate(plan.ranked, 1):
        lines.append(f"{i}. {o.device} {o.precision} {o.backend}:")
        lines += [f"   - {b}" for b in o.basis]
    for o in plan.unplanned:
        lines.append(f"- not planned: {o.device} {o.precision} {o.backend}: {'; '.join(o.basis)}")
    return "\n".join(lines).rstrip() + "\n"


def _run(args: argparse.Namespace) -> str:
    request = PlanRequest(model=args.model, target_qps=args.qps, slo=parse_slo(args.slo),
                          headroom=args.headroom, spares=args.spares, rank_by=args.rank_by)
    return render_plan(make_plan(load_studies(args.studies), request, load_prices(args.prices)))


def main(argv: Sequence[str] | None = None) -> int:
    return run_report_cli(build_parser(), argv, _run)


if __name__ == "__main__":
    sys.exit(main())
