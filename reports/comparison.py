"""The comparison report's content, built from saved studies only: a summary that answers one
question, then sections of tables (as data) and plots. Figures the studies hold are shown as
they are; the only arithmetic here is per-device division, ratios and their spread. Absent
values stay absent ("n/a" with the reason), never zero; INVALID points are marked in the
tables and drawn hollow.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterable

from reports import verdict
from reports.document import INT, NUM, RATIO, SPREAD, VALIDITY, Column, Figure, Section, Table
from reports.plots import Bar, Series, bar_plot, line_plot, system_colors
from reports.refdata import PublishedTable, shown_path
from reports.studies import Curve, Point, Stat, Study

log = logging.getLogger(__name__)
MLPERF_SLO = verdict.MLPERF_SLO  # the published Server results' bound


@dataclass(frozen=True)
class PerDevice:
    """A system figure divided by its devices (GPUs, or one CPU host)."""

    value: float
    rel_std: float | None  # None: no spread (a search's max QPS, or a single run)
    n: int | None
    basis: str  # e.g. "Offline bs128" or "Server search p99 <= 15 ms"

    @property
    def cell(self) -> Stat | float:
        if self.rel_std is None or self.n is None:
            return self.value
        return Stat(self.value, self.value * self.rel_std, self.n)


def _label(study: Study, precision: str, backend: str) -> str:
    return f"{study.name} {precision} {backend}"


def _valid(point: Point) -> tuple[int, int]:
    return point.valid_runs, len(point.runs)


def _all_valid(point: Point) -> bool:
    return point.valid_runs == len(point.runs)


def study_curve(study: Study, model: str, precision: str, backend: str) -> Curve | None:
    return next((c for c in study.curves if (c.model, c.precision, c.backend) == (model, precision, backend)), None)


def offline_curve_points(study: Study, curve: Curve) -> list[Point]:
    points = [p for p in study.select("Offline", curve.model, curve.precision, curve.backend)
              if p.batch_size is not None]
    return sorted(points, key=lambda p: p.batch_size)


def offline_peak(study: Study, model: str, precision: str, backend: str) -> PerDevice | None:
    """The Offline point at the curve's best batch size (its stats carry the spread)."""
    curve = study_curve(study, model, precision, backend)
    if curve is None or not curve.points:
        return None
    best_batch = max(curve.points, key=curve.points.get)
    point = next((p for p in offline_curve_points(study, curve) if p.batch_size == best_batch), None)
    devices = study.system.devices
    if point is None:
        return PerDevice(curve.peak / devices, None, None, f"Offline curve peak (bs{best_batch})")
    s = point.stats.samples_per_s
    marked = "" if _all_valid(point) else f", INVALID ({point.valid_runs} of {len(point.runs)} runs valid)"
    return PerDevice(s.mean / devices, s.rel_std if s.n > 1 else None, s.n, f"Offline bs{best_batch}{marked}")


def server_max(study: Study, model: str, precision: str, backend: str, percentile: float,
               latency_ms: float) -> PerDevice | None:
    for search in study.slo_searches:
        if ((search.model, search.precision, search.backend) == (model, precision, backend)
                and math.isclose(search.percentile, percentile) and math.isclose(search.latency_ms, latency_ms)
                and search.max_qps):
            confirmed = "" if search.confirmed else ", not confirmed by its full-length run"
            return PerDevice(search.max_qps / study.system.devices, None, None,
                             f"Server p{percentile:g} <= {latency_ms:g} ms search{confirmed}")
    return None


def ratio_of(a: PerDevice, b: PerDevice) -> tuple[float, float | None]:
    """a/b, and its spread from the two relative standard deviations when both have one."""
    value = a.value / b.value
    if a.rel_std is None or b.rel_std is None:
        return value, None
    return value, value * math.hypot(a.rel_std, b.rel_std)


def _combos(studies: Iterable[Study]) -> list[tuple[str, str, str]]:
    found = {(p.model, p.precision, p.backend) for s in studies for p in s.points}
    return sorted(found)


def per_device(stat: Stat, devices: int) -> Stat:
    return Stat(stat.mean / devices, stat.std / devices, stat.n)


class ComparisonReport:
    """The report: a summary answering `question`, then its sections; plots are made as PNG bytes."""

    def __init__(self, studies: list[Study], baseline: Study, published: PublishedTable,
                 question: verdict.Question):
        self.studies, self.baseline, self.published, self.question = studies, baseline, published, question
        self.models = sorted({p.model for s in studies for p in s.points})
        self.colors = system_colors([s.name for s in studies])
        self.slo = question.slo or MLPERF_SLO  # the SLO the speed-ups and the latency section use


    def sections(self) -> list[Section]:
        return [self.systems(), self.throughput(), self.knees(), self.speedups(), self.cpu_ratio(),
                self.latency(), self.efficiency(), self.published_results()]

    # ---- systems ----------------------------------------------------------------------
    def systems(self) -> Section:
        table = Table(["system", "device", "GPUs", "driver", "software", "study date (UTC)", Column("points", INT),
                       Column("runs", INT), "study"], name="systems", caption="Systems compared")
        commands = Table(["system", "sweep command"], name="commands", caption="The command each study recorded")
        for s in self.studies:
            software = ", ".join(f"{k} {v}" for k, v in sorted(s.system.software.items()) if v is not None) or "n/a"
            gpus = "0 (CPU)" if s.system.is_cpu else str(s.system.gpu_count)
            table.add(s.name, s.system.device, gpus, s.system.driver or "n/a", software, s.created_utc,
                      len(s.points), sum(len(p.runs) for p in s.points), str(s.directory))
            commands.add(s.name, s.command)
        return Section("Systems", paragraphs=[
            f"Rendered only from saved study files; baseline system: {self.baseline.name}. Figures are means "
            "± one standard deviation over repeated runs, with the run count n (a one-run figure shows n=1 and "
            "no spread); error bars in the plots are the same standard deviation. A point is INVALID when any "
            "of its runs was (LoadGen's verdict): tables say so, plots draw it hollow. Per-GPU figures divide "
            "a system's figure by its GPU count (a CPU system counts as one host). n/a marks a value that was "
            "not measured, never a zero."], tables=[table, commands])

    # ---- throughput vs batch size ---------------------------------------------------------
    def throughput(self) -> Section:
        section = Section("Throughput versus batch size (Offline)")
        table = Table(["system", "model", "precision", "backend", Column("batch size", INT),
                       Column("samples/s", SPREAD), Column("per device", SPREAD), Column("valid runs", VALIDITY)],
                      name="offline_throughput",
                      caption="Offline throughput at every batch size", empty="No study measured Offline.")
        for model in self.models:
            series = []
            for study in self.studies:
                for curve in (c for c in study.curves if c.model == model):
                    points = offline_curve_points(study, curve)
                    devices = study.system.devices
                    for p in points:
                        s = p.stats.samples_per_s
                        table.add(study.name, model, curve.precision, curve.backend, p.batch_size, s,
                                  per_device(s, devices), _valid(p))
                    if points:
                        series.append(Series(_label(study, curve.precision, curve.backend), study.name, curve.precision,
                                             tuple(float(p.batch_size) for p in points),
                                             tuple(p.stats.samples_per_s.mean / devices for p in points),
                                             tuple(p.stats.samples_per_s.std / devices for p in points),
                                             tuple(_all_valid(p) for p in points)))
            if series:
                png = line_plot(f"{model}: Offline throughput vs batch size", "batch size (log scale)",
                                "samples/s per device", series, self.colors, batch_axis=True)
                section.figures.append(Figure(f"throughput_vs_batch_{model}.png", f"{model}: Offline samples/s per "
                                              "device vs batch size, mean ± std; hollow: INVALID", png))
        section.tables.append(table)
        return section

    # ---- knees --------------------------------------------------------------------------
    def knees(self) -> Section:
        table = Table(["system", "model", "precision", "backend", Column("knee 90% (batch)", INT),
                       Column("knee 95% (batch)", INT), Column("peak samples/s", NUM), Column("peak per device", NUM)],
                      name="knees", caption="Knee batch sizes and peak Offline throughput",
                      empty="No study recorded an Offline batch curve.")
        for study in self.studies:
            for c in study.curves:
                table.add(study.name, c.model, c.precision, c.backend, c.knee_90, c.knee_95, c.peak,
                          c.peak / study.system.devices)
        return Section("Knee batch size", paragraphs=[
            "The knee is the smallest batch size reaching 90% (or 95%) of the curve's peak throughput, as the "
            "study recorded it: larger batches add latency for little throughput."], tables=[table])

    # ---- speed-ups --------------------------------------------------------------------------
    def speedups(self) -> Section:
        base = self.baseline
        if len(self.studies) == 1:
            return Section(f"Speed-up against {base.name}", paragraphs=[
                f"Only one system ({base.name}): no other system to compare with it."])
        bound = f"p{self.slo[0]:g} <= {self.slo[1]:g} ms"
        table = Table(["model", "precision", "system", "metric", Column("system per device", SPREAD),
                       "system basis", Column(f"{base.name} per device", SPREAD), f"{base.name} basis",
                       Column(f"ratio to {base.name}", RATIO)], name="speedups",
                      caption=f"Per-device speed-up against {base.name}",
                      empty=f"No other system measured what {base.name} measured.")
        skipped = []
        for model, precision, backend in _combos(self.studies):
            for study in self.studies:
                if study is base:
                    continue
                for metric, fetch in (("Offline peak", lambda s, b=backend: offline_peak(s, model, precision, b)),
                                      (f"Server max at {bound}",
                                       lambda s, b=backend: server_max(s, model, precision, b, *self.slo))):
                    mine, theirs = fetch(study), fetch(base)
                    if mine is None:
                        continue
                    if theirs is None:
                        skipped.append(f"{study.name} {model} {precision} {backend} {metric}")
                        continue
                    table.add(model, f"{precision} ({backend})", study.name, metric, mine.cell, mine.basis,
                              theirs.cell, theirs.basis, ratio_of(mine, theirs))
        notes = [f"no {base.name} figure to compare with: {', '.join(skipped)}"] if skipped else []
        return Section(f"Speed-up against {base.name}", paragraphs=[
            f"Each system against the baseline {base.name}, per device, for the same model, precision and "
            "backend. The ± on a ratio combines both sides' relative standard deviations; a Server search "
            "gives one maximum without a spread, so its ratio has none."], tables=[table], notes=notes)

    # ---- CPU baseline ---------------------------------------------------------------------
    def cpu_ratio(self) -> Section:
        section = Section("CPU baseline ratio")
        cpus = [s for s in self.studies if s.system.is_cpu]
        gpus = [s for s in self.studies if not s.system.is_cpu]
        if not cpus or not gpus:
            section.paragraphs.append("No CPU study among the inputs, so no CPU ratio." if not cpus else
                                      "No GPU study among the inputs, so no CPU ratio.")
            return section
        cpu = self.baseline if self.baseline.system.is_cpu else cpus[0]
        section.paragraphs.append(
            f"Each GPU system's best Offline throughput per GPU (any precision) against {cpu.name}'s best "
            "Offline throughput per host, per model. The precisions differ: the ratio is what the GPU buys "
            "over that CPU host as measured, not a like-for-like kernel comparison.")
        table = Table(["model", "system", "GPU best", Column("GPU best per GPU", SPREAD), f"{cpu.name} best",
                       Column(f"{cpu.name} best per host", SPREAD), Column("ratio", RATIO)], name="cpu_ratio",
                      caption=f"Best GPU throughput against {cpu.name}", empty="No model measured on a GPU.")
        for model in self.models:
            cpu_best = self._best_offline(cpu, model)
            for study in gpus:
                gpu_best = self._best_offline(study, model)
                if gpu_best is None:
                    continue
                if cpu_best is None:
                    table.add(model, study.name, self._best_basis(gpu_best), gpu_best[1].cell, "-",
                              "n/a (not measured)", None)
                    continue
                table.add(model, study.name, self._best_basis(gpu_best), gpu_best[1].cell, self._best_basis(cpu_best),
                          cpu_best[1].cell, ratio_of(gpu_best[1], cpu_best[1]))
        section.tables.append(table)
        return section

    @staticmethod
    def _best_offline(study: Study, model: str) -> tuple[str, PerDevice] | None:
        found = [(f"{c.precision} {c.backend}", offline_peak(study, c.model, c.precision, c.backend))
                 for c in study.curves if c.model == model]
        found = [(label, v) for label, v in found if v is not None]
        return max(found, key=lambda x: x[1].value) if found else None

    @staticmethod
    def _best_basis(best: tuple[str, PerDevice]) -> str:
        return f"{best[0]}, {best[1].basis}"

    # ---- latency vs load ----------------------------------------------------------------
    def latency(self) -> Section:
        section = Section("p99 latency versus load (Server)")
        table = Table(["system", "model", "precision", "backend", Column("target QPS", NUM, 0),
                       Column("achieved samples/s", SPREAD), Column("p99 ms", SPREAD, 2),
                       Column("valid runs", VALIDITY)],
                      name="server_latency", caption="Server latency at every measured load",
                      empty="No study measured the Server scenario.")
        searches = Table(["system", "model", "precision", "backend", "SLO", Column("max QPS", NUM, 0),
                          Column("max QPS per device", NUM, 0), "confirmed", Column("attempts", INT)],
                         name="slo_searches", caption="SLO searches: the highest load LoadGen called VALID",
                         empty="No study ran an SLO search.")
        for model in self.models:
            series, bounds = [], {}
            for study in self.studies:
                d = study.system.devices
                for model_, precision, backend in _combos([study]):
                    if model_ != model:
                        continue
                    points = sorted(study.select("Server", model, precision, backend), key=lambda p: p.target_qps or 0)
                    for p in points:
                        table.add(study.name, model, precision, backend, p.target_qps, p.stats.samples_per_s,
                                  p.stats.p99_ms, _valid(p))
                    with_p99 = [p for p in points if p.stats.p99_ms is not None]
                    if with_p99:
                        series.append(Series(_label(study, precision, backend), study.name, precision,
                                             tuple(p.stats.samples_per_s.mean / d for p in with_p99),
                                             tuple(p.stats.p99_ms.mean for p in with_p99),
                                             tuple(p.stats.p99_ms.std for p in with_p99),
                                             tuple(_all_valid(p) for p in with_p99)))
                for s in (s for s in study.slo_searches if s.model == model):
                    label = f"p{s.percentile:g} <= {s.latency_ms:g} ms"
                    bounds[label] = s.latency_ms
                    searches.add(study.name, model, s.precision, s.backend, label,
                                 s.max_qps if s.max_qps else "none met the SLO",
                                 s.max_qps / d if s.max_qps else "n/a", "yes" if s.confirmed else "no", len(s.attempts))
            if series:
                png = line_plot(f"{model}: Server p99 latency vs load", "achieved samples/s per device",
                                "p99 latency (ms)", series, self.colors, hlines=bounds)
                section.figures.append(Figure(f"latency_vs_load_{model}.png", f"{model}: Server p99 latency vs "
                                              "achieved load per device, mean ± std; hollow: INVALID", png))
        section.tables += [table, searches]
        return section

    # ---- perf per watt --------------------------------------------------------------------
    def efficiency(self) -> Section:
        section = Section("Performance per watt")
        table = Table(["system", "model", "precision", "backend", "scenario", "point",
                       Column("samples/s", SPREAD), Column("watts (all GPUs)", SPREAD), Column("samples/J", SPREAD, 2),
                       Column("mJ/query", SPREAD, 2), "power covers", Column("valid runs", VALIDITY)],
                      name="efficiency", caption="Throughput, power and efficiency per point")
        bars = []
        for study in self.studies:
            for model, precision, backend in _combos([study]):
                for p in self._efficiency_points(study, model, precision, backend):
                    s = p.stats
                    absent = f"n/a (power absent: {p.power_absent_reason() or 'not recorded'})"
                    where = f"{p.target_qps:,.0f} QPS" if p.scenario == "Server" else (
                        f"bs{p.batch_size}" if p.batch_size else "-")
                    table.add(study.name, model, precision, backend, p.scenario, where, s.samples_per_s,
                              s.watts or absent, s.samples_per_joule or "n/a", s.mj_per_query or "n/a",
                              (p.power_label() or "label not recorded") if s.watts else "-", _valid(p))
                    if p.scenario == "Offline" and s.samples_per_joule is not None:
                        e = s.samples_per_joule
                        sd = e.std if e.n > 1 else 0.0
                        bars.append(Bar(f"{study.name} {model} {precision} ({backend}) bs{p.batch_size}", study.name,
                                        e.mean, sd, sd, _all_valid(p)))
        section.paragraphs.append(
            "Offline at each curve's peak batch size, every Server load, and SingleStream/MultiStream. Watts "
            "are NVML readings of the GPUs only (labelled GPU-only): host CPU, memory, fans and power-supply "
            "losses are not included. CPU studies have no power reading: shown as absent with the reason.")
        if bars:
            png = bar_plot("Offline samples per joule at peak throughput (GPU-only power)", "samples/J", bars,
                           self.colors)
            section.figures.append(Figure("perf_per_watt.png", "Offline samples/J at the peak batch size, "
                                          "mean ± std (GPU-only); hatched: INVALID", png))
        section.tables.append(table)
        absent = sorted({s.name for s in self.studies for p in s.points if p.stats.watts is None})
        if absent:
            section.notes.append(f"power absent (not plotted): {', '.join(absent)}")
        return section

    @staticmethod
    def _efficiency_points(study: Study, model: str, precision: str, backend: str) -> list[Point]:
        chosen: list[Point] = []
        curve = study_curve(study, model, precision, backend)
        if curve is not None and curve.points:
            best = max(curve.points, key=curve.points.get)
            chosen += [p for p in offline_curve_points(study, curve) if p.batch_size == best]
        chosen += sorted(study.select("Server", model, precision, backend), key=lambda p: p.target_qps or 0)
        chosen += [p for scenario in ("SingleStream", "MultiStream")
                   for p in study.select(scenario, model, precision, backend)]
        return chosen

    # ---- published MLPerf -----------------------------------------------------------------
    def published_results(self) -> Section:
        pub = self.published
        section = Section(f"Published MLPerf {pub.benchmark} results beside the measured ones", paragraphs=[
            "NOT LIKE-FOR-LIKE: the published figures are closed-division vendor submissions with TensorRT and "
            "INT8, NVIDIA's C++ harness and full-length runs; measured figures here come from this harness, "
            "often at fp16/fp32 with another runtime and shortened runs. Read the ratio as the distance to what "
            f"the card has been shown to do, not as an error. Source: {shown_path(pub.path)}."])
        table = Table(["system", "device", "precision", "backend", "metric", Column("measured per GPU", SPREAD),
                       "measured basis", Column("published per GPU", NUM, 0), "published basis",
                       Column("measured / published", RATIO)], name="published_mlperf",
                      caption=f"Measured beside published MLPerf {pub.benchmark}",
                      empty=f"No study measured {pub.benchmark}.")
        missing = []
        for study in self.studies:
            entry = pub.for_device(study.system.device)
            for model, precision, backend in _combos([study]):
                if model != pub.benchmark:
                    continue
                measured = [("Offline", offline_peak(study, model, precision, backend)),
                            (f"Server ({pub.server_bound})", server_max(study, model, precision, backend, *MLPERF_SLO))]
                for metric, value in measured:
                    if value is None:
                        continue
                    if entry is None:
                        missing.append(study.name)
                        table.add(study.name, study.system.device, precision, backend, metric, value.cell, value.basis,
                                  "n/a (no published result for this device)", "-", None)
                        continue
                    published, basis = ((entry.offline, entry.offline_basis) if metric == "Offline"
                                        else (entry.server, entry.server_basis))
                    table.add(study.name, study.system.device, precision, backend, metric, value.cell, value.basis,
                              published, f"{entry.gpu}, {entry.round}, {basis}; TensorRT INT8",
                              (value.value / published, None))
        section.tables.append(table)
        if missing:
            section.notes.append(f"no published result matches the device of: {', '.join(sorted(set(missing)))}")
        return section
