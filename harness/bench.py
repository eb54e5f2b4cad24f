"""GPU benchmark of the harness against the backend's own loop, in one process on one GPU.

For each model and precision it measures, side by side and repeated:
  * tight loop: the backend's own back-to-back batches at the Offline batch size;
  * LoadGen Offline throughput through the full harness;
  * the highest Server target QPS that stays VALID at p99 <= 15 ms (bisection on short
    runs, then repeated confirmation runs at that load);
  * SingleStream p90 through LoadGen against the backend's own batch-1 round trip p90.

    python -m harness.bench --models resnet50 --precisions fp16 fp32 --compile none default --output OUT

Each --compile mode is measured in turn for each model and precision, in the same process
on the same card, so the compiled and eager rows are side by side. Every backend load is
timed (its compile included) with the Inductor cache state it found.

Writes OUT/bench.json (every repeat's raw figures) and prints a Markdown table.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script (python harness/bench.py): the project root on the path
    import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # noqa: E401,E702

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from runs.config import CliRequest, RunConfig, resolve
from studies.curves import latency_bound_qps, spread
from studies.slo import Attempt, SearchSettings, search_max_qps
from plumbing.argtypes import OneLineParser, guarded, int_at_least
from plumbing.errors import DeepgapError, OutputError, exit_code_epilog
from plumbing.files import write_atomic
from plumbing import logs
from runs.runner import execute, load_backend, make_dataset
from runs.saved_run import LoadgenSummary, SavedRun
from sut.backends import backend_info
from sut.backends.base import MODELS, Backend
from sut.compiling import COMPILE_MODES

log = logging.getLogger("deepgap.bench")


def stats(values: list[float]) -> dict[str, Any]:
    return {"runs": values, **spread(values)}


class Bench:
    def __init__(self, model: str, precision: str, output: Path, repeats: int, duration_ms: int,
                 search_ms: int, gpu: str, compile_mode: str = "default", instances: int = 1) -> None:
        self.model, self.precision, self.compile = model, precision, compile_mode
        self.instances = instances
        self.loads: list[dict[str, Any]] = []
        self.output, self.repeats = output, repeats
        self.duration_ms, self.search_ms = duration_ms, search_ms
        self.gpu = gpu
        self.runs = 0
        self.server_grid_knobs: list[dict[str, int]] = []

    def config(self, scenario: str, **overrides: Any) -> RunConfig:
        self.runs += 1
        request = CliRequest(
            scenario=scenario, model=self.model, precision=self.precision, gpu=self.gpu,
            backend="torch", compile=self.compile, instances=self.instances,
            output=self.output / f"run{self.runs:03d}", overwrite=True,
            min_duration_ms=overrides.pop("min_duration_ms", self.duration_ms), **overrides,
        )
        return resolve(request)

    def load(self, config: RunConfig) -> Backend:
        """load_backend, timed: the startup a user waits for (compilation included)."""
        started = time.perf_counter()
        backend = load_backend(config)
        self.loads.append({"scenario": config.scenario, "max_batch": int(config.knobs["max_batch"]),
                           "seconds": round(time.perf_counter() - started, 2),
                           "compile": backend.describe().get("compile")})
        return backend

    def run(self, config: RunConfig, backend: Backend, dataset) -> LoadgenSummary:
        outcome = execute(config, show_progress=False, backend=backend, dataset=dataset)
        summary = SavedRun.from_record(outcome.result).summary
        if summary is None:
            raise DeepgapError(f"{config.scenario} run wrote no LoadGen summary (status {outcome.result.get('status')})")
        return summary

    def measure(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "precision": self.precision, "compile": self.compile,
                               "instances": self.instances, "loads": self.loads}
        offline_cfg = self.config("Offline")
        dataset = make_dataset(offline_cfg)
        offline_backend = self.load(offline_cfg)
        batch = int(offline_cfg.knobs["max_batch"])
        out["offline_batch"] = batch
        tight, offline = [], []
        self.run(offline_cfg, offline_backend, dataset)  # warm-up; stages the data
        for _ in range(self.repeats):
            iterations = max(10, int(2.0 / (offline_backend.time_tight_loop(batch, 3) / 3)))
            tight.append(batch * iterations / offline_backend.time_tight_loop(batch, iterations))
            offline.append(self.run(self.config("Offline"), offline_backend, dataset).value)
        offline_backend.close()
        out["tight_loop_qps"], out["offline_qps"] = stats(tight), stats(offline)
        out["offline_vs_tight"] = out["offline_qps"]["mean"] / out["tight_loop_qps"]["mean"]
        if self.server_grid_knobs:
            out["server_grid"] = self.server_grid(out["offline_qps"]["mean"], dataset, self.server_grid_knobs)
            return out
        out.update(self.server(out["offline_qps"]["mean"], dataset))
        if self.instances == 1:  # one query at a time: more instances only take turns
            out.update(self.single_stream(dataset))
        return out

    def server_grid(self, offline_qps: float, dataset, grid: list[dict[str, int]],
                    loads: tuple[float, ...] = (0.75, 0.82)) -> list[dict[str, Any]]:
        """p99 latency per Server batching setting at fixed fractions of Offline load."""
        rows = []
        for knobs in grid:
            backend = self.load(self.config("Server", target_qps=offline_qps, **knobs))
            for fraction in loads:
                cfg = self.config("Server", target_qps=fraction * offline_qps, min_duration_ms=self.search_ms, **knobs)
                summary = self.run(cfg, backend, dataset)
                rows.append({**knobs, "load": fraction, "valid": summary.valid,
                             "p99_ms": summary.latency_ms("p99"), "p50_ms": summary.latency_ms("p50")})
                log.info("grid %s load %.2f: %s p50 %.2f p99 %.2f ms", knobs, fraction,
                         "VALID" if summary.valid else "INVALID", rows[-1]["p50_ms"], rows[-1]["p99_ms"])
            backend.close()
        return rows

    def server(self, offline_qps: float, dataset) -> dict[str, Any]:
        probe = self.config("Server", target_qps=offline_qps)
        backend = self.load(probe)
        knobs = {k: probe.knobs[k] for k in ("max_batch", "batch_timeout_us", "in_flight")}

        confirmations: dict[float, list[LoadgenSummary]] = {}

        def trial(qps: float, duration_ms: int, phase: str) -> Attempt:
            """The study's search (studies.slo) with the bench's stricter confirmation: every
            one of `repeats` full-length runs at the load must be VALID."""
            config = self.config("Server", target_qps=qps, min_duration_ms=duration_ms)
            runs = self.repeats if phase == "confirm" else 1
            summaries = [self.run(config, backend, dataset) for _ in range(runs)]
            if phase == "confirm":
                confirmations[qps] = summaries
            valid = all(s.valid for s in summaries)
            p99 = max(s.latency_ms("p99") or 0.0 for s in summaries)
            log.info("server %.0f qps: %s p99 %.2f ms", qps, "VALID" if valid else "INVALID", p99)
            return Attempt(target_qps=qps, duration_ms=duration_ms, phase=phase, valid=valid, latency_ms={"p99": p99})

        # From 80% of Offline: bracket, bisect to 2%, then step down 4% at a time (at most
        # three steps) until the confirmations all pass.
        found = search_max_qps(trial, SearchSettings(start_qps=0.8 * offline_qps, search_ms=self.search_ms,
                                                     confirm_ms=self.duration_ms, tolerance=0.02, growth=1.25,
                                                     step_down=0.04, max_step_downs=3))
        if found.max_qps is None or not confirmations:
            raise DeepgapError(f"no Server load found that stays valid ({found.stopped or 'search exhausted'})")
        lo = found.max_qps if found.max_qps in confirmations else list(confirmations)[-1]
        confirm = [(s.valid, s) for s in confirmations[lo]]
        curve = self.throughput_curve(backend, int(knobs["max_batch"]))
        backend.close()
        return {
            "throughput_curve": curve,
            "server_bound_qps": latency_bound_qps(curve, 15.0),
            "server_knobs": knobs,
            "server_target_qps": lo,
            "server_confirm_valid": [ok for ok, _ in confirm],
            "server_qps": stats([s.value for _, s in confirm]),
            "server_p99_ms": stats([s.latency_ms("p99") or 0.0 for _, s in confirm]),
            "server_vs_offline": lo / offline_qps,
        }

    def throughput_curve(self, backend: Backend, max_batch: int) -> dict[int, float]:
        """Tight-loop img/s at several batch sizes (staged data must be loaded)."""
        curve = {}
        for batch in (8, 16, 32, 48, 64, 96, 128, 192, 256):
            if batch > max_batch:
                break
            per_batch = backend.time_tight_loop(batch, 3) / 3
            iterations = max(5, int(0.3 / per_batch))
            curve[batch] = batch * iterations / backend.time_tight_loop(batch, iterations)
        return curve

    def single_stream(self, dataset) -> dict[str, Any]:
        config = self.config("SingleStream")
        backend = self.load(config)
        loadgen_p90, backend_p90 = [], []
        self.run(config, backend, dataset)  # warm-up; stages the data
        rows = np.zeros(1, dtype=np.int64)
        for _ in range(self.repeats):
            samples = []
            for i in range(2000):
                rows[0] = i % 1024
                start = time.perf_counter()
                pending = backend.run_batch(rows)
                pending.wait()
                pending.release()
                samples.append(time.perf_counter() - start)
            backend_p90.append(float(np.percentile(samples, 90)) * 1e3)
            summary = self.run(self.config("SingleStream"), backend, dataset)
            loadgen_p90.append(summary.latency_ms("p90") or 0.0)
        backend.close()
        return {
            "backend_bs1_p90_ms": stats(backend_p90),
            "singlestream_p90_ms": stats(loadgen_p90),
            "singlestream_overhead_us": (statistics.fmean(loadgen_p90) - statistics.fmean(backend_p90)) * 1e3,
        }


def startup(row: dict[str, Any]) -> str:
    """Each backend load's seconds, in order (Offline, Server, SingleStream), with the
    Inductor cache state where it compiled: '41 miss / 12 hit / 6 hit'."""
    parts = []
    for load in row["loads"]:
        compiled = load.get("compile") or {}
        parts.append(f"{load['seconds']:.0f}" + (f" {compiled['cache']}" if compiled.get("compiled") else ""))
    return " / ".join(parts)


def table(rows: list[dict[str, Any]]) -> str:
    def ms(d: dict[str, Any]) -> str:
        return f"{d['mean']:,.0f} ± {d['std']:,.0f}"

    lines = [
        "| model | prec | compile | inst | bs | startup s | tight loop img/s | Offline img/s | Off/tight | Server QPS (VALID) | Srv/Off | Server p99 ms | 2-batch-time bound | bs1 p90 ms | SS p90 ms | SS overhead us |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        single = (f"{r['backend_bs1_p90_ms']['mean']:.3f} ± {r['backend_bs1_p90_ms']['std']:.3f} | "
                  f"{r['singlestream_p90_ms']['mean']:.3f} ± {r['singlestream_p90_ms']['std']:.3f} | "
                  f"{r['singlestream_overhead_us']:.0f} |") if "singlestream_p90_ms" in r else "- | - | - |"
        lines.append(
            f"| {r['model']} | {r['precision']} | {r['compile']} | {r.get('instances', 1)} | {r['offline_batch']} | "
            f"{startup(r)} | {ms(r['tight_loop_qps'])} | "
            f"{ms(r['offline_qps'])} | {r['offline_vs_tight']:.3f} | {r['server_target_qps']:,.0f} "
            f"({sum(r['server_confirm_valid'])}/{len(r['server_confirm_valid'])}) | {r['server_vs_offline']:.3f} | "
            f"{r['server_p99_ms']['mean']:.2f} | {r['server_bound_qps']:,.0f} | {single}"
        )
    return "\n".join(lines)


def server_grid_spec(text: str) -> dict[str, int]:
    """'64:2000:3' -> {"max_batch": 64, "batch_timeout_us": 2000, "in_flight": 3}."""
    parts = text.split(":")
    if len(parts) != 3 or not all(x.isdigit() for x in parts) or int(parts[0]) < 1 or int(parts[2]) < 1:
        raise argparse.ArgumentTypeError(f"expected MAX_BATCH:TIMEOUT_US:IN_FLIGHT (whole numbers, batch and "
                                         f"in flight at least 1), got {text!r}")
    return dict(zip(("max_batch", "batch_timeout_us", "in_flight"), map(int, parts)))


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m harness.bench", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=exit_code_epilog())
    p.add_argument("--models", nargs="+", choices=MODELS, default=["resnet18", "resnet50", "resnet101"])
    p.add_argument("--precisions", nargs="+", choices=backend_info("torch").precisions(), default=["fp16", "fp32"])
    p.add_argument("--repeats", type=int_at_least(1), default=3)
    p.add_argument("--duration-ms", type=int_at_least(1), default=5000, help="min duration of measured runs")
    p.add_argument("--search-ms", type=int_at_least(1), default=2500, help="min duration of Server search runs")
    p.add_argument("--gpu", default="auto")
    p.add_argument("--compile", nargs="+", choices=COMPILE_MODES, default=["none", "default"],
                   help="torch backend compile modes, each measured in turn (default: none default)")
    p.add_argument("--instances", nargs="+", type=int_at_least(1), default=[1],
                   help="backend instances per device, each count measured in turn (default: 1); "
                   "SingleStream only with 1")
    p.add_argument("--output", type=Path, default=Path("deepgap-bench"))
    p.add_argument("--server-grid", nargs="*", type=server_grid_spec, default=None, metavar="MB:TIMEOUT_US:IN_FLIGHT",
                   help="instead of the full benchmark: Offline, then Server p99 for each batching setting")
    return p


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        args = build_parser().parse_args(argv)
        # deepgap's one logging setup: warnings, and the bench's and the sizing's progress lines
        logs.setup(shown=(log.name, "runs.sizing"), timestamps=True)
        rows = []
        for model in args.models:
            for precision, mode, count in ((p, m, k) for p in args.precisions for m in args.compile
                                           for k in args.instances):
                started = time.monotonic()
                bench = Bench(model, precision, args.output, args.repeats, args.duration_ms, args.search_ms,
                              args.gpu, mode, count)
                bench.server_grid_knobs.extend(args.server_grid or [])
                rows.append(bench.measure())
                rows[-1]["wall_s"] = time.monotonic() - started
                log.info("%s %s %s x%d done in %.0f s", model, precision, mode, count, rows[-1]["wall_s"])
                try:  # each group's rows as soon as they exist: a later failure keeps them
                    write_atomic(args.output / "bench.json", json.dumps(rows, indent=2, default=str))
                except OSError as exc:
                    raise OutputError(f"cannot write {args.output / 'bench.json'}: {exc.strerror or exc}") from None
        if args.server_grid is None:
            print(table(rows))
        else:
            for row in rows:
                for g in row["server_grid"]:
                    print(f"{row['model']} {row['precision']} offline {row['offline_qps']['mean']:,.0f}: {g}")
        return 0

    return guarded("bench", body)


if __name__ == "__main__":
    sys.exit(main())
