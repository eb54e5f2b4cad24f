"""The comparison report's content, built from saved studies only: tables (as data) and
PNG plots. Figures the studies hold are shown as they are; the only arithmetic here is
per-device division, ratios and their spread. Absent values stay absent ("n/a" with the
reason), never zero.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from harness.document import Figure, Section, Table, num, ratio, stat
from harness.plots import Series, bar_plot, line_plot
from harness.refdata import PublishedTable, shown_path
from harness.studies import Curve, Point, Study

log = logging.getLogger(__name__)
MLPERF_SLO = (99.0, 15.0)  # the published Server results' bound


@dataclass(frozen=True)
class PerDevice:
    """A system figure divided by its devices (GPUs, or one CPU host)."""

    value: float
    rel_std: float | None  # None: a single figure without a spread (a search's max QPS)
    n: int | None
    basis: str  # e.g. "Offline bs128" or "Server search p99 <= 15 ms"


def _label(study: Study, precision: str, backend: str) -> str:
    return f"{study.name} {precision} {backend}"


def offline_curve_points(study: Study, curve: Curve) -> list[Point]:
    points = [p for p in study.select("Offline", curve.model, curve.precision, curve.backend) if p.batch_size is not None]
    return sorted(points, key=lambda p: p.batch_size)


def offline_peak(study: Study, model: str, precision: str, backend: str) -> PerDevice | None:
    """The Offline point at the curve's best batch size (its stats carry the spread)."""
    curve = next((c for c in study.curves if (c.model, c.precision, c.backend) == (model, precision, backend)), None)
    if curve is None or not curve.points:
        return None
    best_batch = max(curve.points, key=curve.points.get)
    point = next((p for p in offline_curve_points(study, curve) if p.batch_size == best_batch), None)
    devices = study.system.devices
    if point is None:
        return PerDevice(curve.peak / devices, None, None, f"Offline curve peak (bs{best_batch})")
    s = point.stats.samples_per_s
    return PerDevice(s.mean / devices, s.rel_std, s.n, f"Offline bs{best_batch}")


def server_max(study: Study, model: str, precision: str, backend: str, percentile: float,
               latency_ms: float) -> PerDevice | None:
    for search in study.slo_searches:
        if ((search.model, search.precision, search.backend) == (model, precision, backend)
                and math.isclose(search.percentile, percentile) and math.isclose(search.latency_ms, latency_ms)
                and search.max_qps):
            return PerDevice(search.max_qps / study.system.devices, None, None,
                             f"Server p{percentile:g} <= {latency_ms:g} ms search")
    return None


def ratio_of(a: PerDevice, b: PerDevice) -> tuple[float, float | None]:
    """a/b, and its spread from the two relative standard deviations when both have one."""
    value = a.value / b.value
    if a.rel_std is None or b.rel_std is None:
        return value, None
    return value, value * math.hypot(a.rel_std, b.rel_std)


def _per_device(value: PerDevice | None, unit: str) -> str:
    if value is None:
        return "n/a (not measured)"
    spread = "" if value.rel_std is None else f" ± {value.value * value.rel_std:,.1f}"
    runs = "" if value.n is None else f" (n={value.n})"
    return f"{value.value:,.1f}{spread}{runs} /s per {unit}, {value.basis}"


def _combos(studies: Iterable[Study]) -> list[tuple[str, str, str]]:
    found = {(p.model, p.precision, p.backend) for s in studies for p in s.points}
    return sorted(found)


def _power_cell(point: Point) -> tuple[str, str, str]:
    """(watts, efficiency, label) cells for one point."""
    s = point.stats
    if s.watts is None:
        reason = point.power_absent_reason() or "not recorded"
        return f"n/a (power absent: {reason})", "n/a", "-"
    label = point.power_label() or "label not recorded"
    if s.mj_per_query is not None:
        return stat(s.watts), f"{stat(s.mj_per_query, 2)} mJ/query", label
    return stat(s.watts), f"{stat(s.samples_per_joule, 2)} samples/J", label


class ComparisonReport:
    """Sections of the comparison report; plots are written into `out_dir` as they are made."""

    def __init__(self, studies: list[Study], baseline: Study, published: PublishedTable, out_dir: Path):
        self.studies, self.baseline, self.published, self.out_dir = studies, baseline, published, out_dir
        self.models = sorted({p.model for s in studies for p in s.points})

    def sections(self) -> list[Section]:
        return [self.systems(), self.throughput(), self.knees(), self.speedups(), self.cpu_ratio(),
                self.latency(), self.efficiency(), self.published_results()]

    # ---- systems ----------------------------------------------------------------------
    def systems(self) -> Section:
        table = Table(["system", "device", "GPUs", "driver", "software", "study date (UTC)", "points", "runs",
                       "study"])
        for s in self.studies:
            software = ", ".join(f"{k} {v}" for k, v in sorted(s.system.software.items()) if v is not None) or "n/a"
            runs = sum(len(p.runs) for p in s.points)
            gpus = "0 (CPU)" if s.system.is_cpu else str(s.system.gpu_count)
            table.add(s.name, s.system.device, gpus, s.system.driver or "n/a", software, s.created_utc,
                      len(s.points), runs, str(s.directory))
        return Section("Systems", paragraphs=[
            f"Rendered only from saved study files; baseline system: {self.baseline.name}. Figures are means "
            "± one standard deviation over repeated runs, with the run count n; error bars in the plots are "
            "the same standard deviation. Per-GPU figures divide a system's figure by its GPU count (a CPU "
            "system counts as one host). n/a marks a value that was not measured, never a zero."], tables=[table])

    # ---- throughput vs batch size ---------------------------------------------------------
    def throughput(self) -> Section:
        section = Section("Throughput versus batch size (Offline)")
        table = Table(["system", "model", "precision", "backend", "batch size", "samples/s", "per device",
                       "valid runs"])
        for model in self.models:
            series = []
            for study in self.studies:
                for curve in (c for c in study.curves if c.model == model):
                    points = offline_curve_points(study, curve)
                    for p in points:
                        s = p.stats.samples_per_s
                        table.add(study.name, model, curve.precision, curve.backend, p.batch_size, stat(s),
                                  num(s.mean / study.system.devices), f"{p.valid_runs}/{len(p.runs)}")
                    if points:
                        devices = study.system.devices
                        series.append(Series(_label(study, curve.precision, curve.backend),
                                             tuple(float(p.batch_size) for p in points),
                                             tuple(p.stats.samples_per_s.mean / devices for p in points),
                                             tuple(p.stats.samples_per_s.std / devices for p in points)))
            if series:
                name = f"throughput_vs_batch_{model}.png"
                line_plot(self.out_dir / name, f"{model}: Offline throughput vs batch size", "batch size",
                          "samples/s per device", series, log2_x=True)
                section.figures.append(Figure(name, f"{model}: Offline samples/s per device vs batch size, mean ± std"))
        section.tables.append(table)
        return section

    # ---- knees --------------------------------------------------------------------------
    def knees(self) -> Section:
        table = Table(["system", "model", "precision", "backend", "knee 90% (batch)", "knee 95% (batch)",
                       "peak samples/s", "peak per device"])
        for study in self.studies:
            for c in study.curves:
                table.add(study.name, c.model, c.precision, c.backend, c.knee_90 if c.knee_90 is not None else "n/a",
                          c.knee_95 if c.knee_95 is not None else "n/a", num(c.peak), num(c.peak / study.system.devices))
        return Section("Knee batch size", paragraphs=[
            "The knee is the smallest batch size reaching 90% (or 95%) of the curve's peak throughput, as the "
            "study recorded it: larger batches add latency for little throughput."], tables=[table])

    # ---- speed-ups --------------------------------------------------------------------------
    def speedups(self) -> Section:
        base = self.baseline
        table = Table(["model", "precision", "system", "metric", "system per device", f"{base.name} per device",
                       f"ratio to {base.name}"])
        skipped = []
        for model, precision, backend in _combos(self.studies):
            for study in self.studies:
                if study is base:
                    continue
                for metric, fetch in (("Offline peak", lambda s, b=backend: offline_peak(s, model, precision, b)),
                                      ("Server max at p99 <= 15 ms",
                                       lambda s, b=backend: server_max(s, model, precision, b, *MLPERF_SLO))):
                    mine, theirs = fetch(study), fetch(base)
                    if mine is None:
                        continue
                    if theirs is None:
                        skipped.append(f"{study.name} {model} {precision} {backend} {metric}")
                        continue
                    value, spread = ratio_of(mine, theirs)
                    table.add(model, f"{precision} ({backend})", study.name, metric, _per_device(mine, study.system.unit),
                              _per_device(theirs, base.system.unit), ratio(value, spread))
        notes = [f"no {base.name} figure to compare with: {', '.join(skipped)}"] if skipped else []
        return Section(f"Speed-up against {base.name}", paragraphs=[
            f"Each system against the baseline {base.name}, per device, for the same model, precision and "
            "backend. The ± on a ratio combines both sides' relative standard deviations; a Server search "
            "gives one maximum without a spread."], tables=[table], notes=notes)

    # ---- CPU baseline ---------------------------------------------------------------------
    def cpu_ratio(self) -> Section:
        section = Section("CPU baseline ratio")
        cpus = [s for s in self.studies if s.system.is_cpu]
        if not cpus:
            section.paragraphs.append("No CPU study among the inputs, so no CPU ratio.")
            return section
        cpu = self.baseline if self.baseline.system.is_cpu else cpus[0]
        section.paragraphs.append(
            f"Each GPU system's best Offline throughput per GPU (any precision) against {cpu.name}'s best "
            "Offline throughput per host, per model. The precisions differ: the ratio is what the GPU buys "
            "over that CPU host as measured, not a like-for-like kernel comparison.")
        table = Table(["model", "system", "GPU best per GPU", f"{cpu.name} best per host", "ratio"])
        for model in self.models:
            cpu_best = self._best_offline(cpu, model)
            for study in self.studies:
                if study.system.is_cpu:
                    continue
                gpu_best = self._best_offline(study, model)
                if gpu_best is None:
                    continue
                if cpu_best is None:
                    table.add(model, study.name, self._best_cell(gpu_best, "GPU"), "n/a (not measured)", "n/a")
                    continue
                value, spread = ratio_of(gpu_best[1], cpu_best[1])
                table.add(model, study.name, self._best_cell(gpu_best, "GPU"), self._best_cell(cpu_best, "host"),
                          ratio(value, spread))
        section.tables.append(table)
        return section

    @staticmethod
    def _best_offline(study: Study, model: str) -> tuple[str, PerDevice] | None:
        found = [(f"{c.precision} {c.backend}", offline_peak(study, c.model, c.precision, c.backend))
                 for c in study.curves if c.model == model]
        found = [(label, v) for label, v in found if v is not None]
        return max(found, key=lambda x: x[1].value) if found else None

    @staticmethod
    def _best_cell(best: tuple[str, PerDevice], unit: str) -> str:
        return f"{best[0]}: {_per_device(best[1], unit)}"

    # ---- latency vs load ----------------------------------------------------------------
    def latency(self) -> Section:
        section = Section("p99 latency versus load (Server)")
        table = Table(["system", "model", "precision", "backend", "target QPS", "achieved samples/s", "p99 ms",
                       "valid runs"])
        searches = Table(["system", "model", "precision", "backend", "SLO", "max QPS", "max QPS per device",
                          "confirmed", "attempts"])
        for model in self.models:
            series, bounds = [], {}
            for study in self.studies:
                for model_, precision, backend in _combos([study]):
                    if model_ != model:
                        continue
                    points = sorted(study.select("Server", model, precision, backend), key=lambda p: p.target_qps or 0)
                    for p in points:
                        table.add(study.name, model, precision, backend, num(p.target_qps, 0),
                                  stat(p.stats.samples_per_s), stat(p.stats.p99_ms, 2), f"{p.valid_runs}/{len(p.runs)}")
                    with_p99 = [p for p in points if p.stats.p99_ms is not None]
                    if with_p99:
                        series.append(Series(_label(study, precision, backend),
                                             tuple(p.stats.samples_per_s.mean / study.system.devices for p in with_p99),
                                             tuple(p.stats.p99_ms.mean for p in with_p99),
                                             tuple(p.stats.p99_ms.std for p in with_p99)))
                for s in (s for s in study.slo_searches if s.model == model):
                    bounds[f"p{s.percentile:g} <= {s.latency_ms:g} ms"] = s.latency_ms
                    searches.add(study.name, model, s.precision, s.backend, f"p{s.percentile:g} <= {s.latency_ms:g} ms",
                                 num(s.max_qps, 0) if s.max_qps else "none met the SLO",
                                 num(s.max_qps / study.system.devices, 0) if s.max_qps else "n/a",
                                 "yes" if s.confirmed else "no", len(s.attempts))
            if series:
                name = f"latency_vs_load_{model}.png"
                line_plot(self.out_dir / name, f"{model}: Server p99 latency vs load",
                          "achieved samples/s per device", "p99 latency (ms)", series, hlines=bounds)
                section.figures.append(Figure(name, f"{model}: Server p99 latency vs achieved load per device, mean ± std"))
        section.tables += [table, searches]
        return section

    # ---- perf per watt --------------------------------------------------------------------
    def efficiency(self) -> Section:
        section = Section("Performance per watt")
        table = Table(["system", "model", "precision", "backend", "scenario", "point", "throughput",
                       "watts (all GPUs)", "efficiency", "power covers"])
        labels, values, errors = [], [], []
        for study in self.studies:
            for model, precision, backend in _combos([study]):
                chosen = self._efficiency_points(study, model, precision, backend)
                for p in chosen:
                    watts, efficiency, covers = _power_cell(p)
                    where = f"bs{p.batch_size}" if p.scenario != "Server" else f"{num(p.target_qps, 0)} QPS"
                    table.add(study.name, model, precision, backend, p.scenario, where,
                              f"{stat(p.stats.samples_per_s)} samples/s", watts, efficiency, covers)
                    if p.scenario == "Offline" and p.stats.samples_per_joule is not None:
                        labels.append(f"{study.name}\n{model} {precision}")
                        values.append(p.stats.samples_per_joule.mean)
                        errors.append(p.stats.samples_per_joule.std)
        section.paragraphs.append(
            "Offline at each curve's peak batch size, every Server load, and SingleStream/MultiStream. Watts "
            "are NVML readings of the GPUs only (labelled GPU-only): host CPU, memory, fans and power-supply "
            "losses are not included. CPU studies have no power reading: shown as absent with the reason.")
        section.tables.append(table)
        if values:
            name = "perf_per_watt.png"
            bar_plot(self.out_dir / name, "Offline samples per joule at peak throughput (GPU-only power)",
                     "samples/J", labels, values, errors)
            section.figures.append(Figure(name, "Offline samples/J at the peak batch size, mean ± std (GPU-only)"))
        absent = sorted({s.name for s in self.studies for p in s.points if p.stats.watts is None})
        if absent:
            section.notes.append(f"power absent (not plotted): {', '.join(absent)}")
        return section

    @staticmethod
    def _efficiency_points(study: Study, model: str, precision: str, backend: str) -> list[Point]:
        chosen: list[Point] = []
        curve = next((c for c in study.curves if (c.model, c.precision, c.backend) == (model, precision, backend)), None)
        if curve is not None and curve.points:
            best = max(curve.points, key=curve.points.get)
            chosen += [p for p in offline_curve_points(study, curve) if p.batch_size == best]
        chosen += sorted(study.select("Server", model, precision, backend), key=lambda p: p.target_qps or 0)
        chosen += study.select("SingleStream", model, precision, backend) + study.select("MultiStream", model, precision, backend)
        return chosen

    # ---- published MLPerf -----------------------------------------------------------------
    def published_results(self) -> Section:
        pub = self.published
        section = Section(f"Published MLPerf {pub.benchmark} results beside the measured ones", paragraphs=[
            "NOT LIKE-FOR-LIKE: the published figures are closed-division vendor submissions with TensorRT and "
            "INT8, NVIDIA's C++ harness and full-length runs; measured figures here come from this harness, "
            "often at fp16/fp32 with another runtime and shortened runs. Read the ratio as the distance to what "
            f"the card has been shown to do, not as an error. Source: {shown_path(pub.path)}."])
        table = Table(["system", "device", "precision", "backend", "metric", "measured per GPU", "published per GPU",
                       "measured / published"])
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
                        table.add(study.name, study.system.device, precision, backend, metric,
                                  _per_device(value, study.system.unit), "n/a (no published result for this device)", "n/a")
                        continue
                    published, basis = ((entry.offline, entry.offline_basis) if metric == "Offline"
                                        else (entry.server, entry.server_basis))
                    table.add(study.name, study.system.device, precision, backend, metric,
                              _per_device(value, study.system.unit),
                              f"{published:,.0f} /s ({entry.gpu}, {entry.round}, {basis}; TensorRT INT8)",
                              ratio(value.value / published))
        section.tables.append(table)
        if missing:
            section.notes.append(f"no published result matches the device of: {', '.join(sorted(set(missing)))}")
        return section

