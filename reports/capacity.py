"""Capacity planning from saved studies: how many GPUs of each type serve a target load
within a latency SLO, at what power, energy and cost, and which measurements say so.

Definitions (the README repeats them):
  * option: a device, precision and stack ('torch-inductor' apart from 'torch'), pooled over host sizes.
  * capacity per device: an SLO search's max_qps at exactly the asked SLO, divided by the
    study's GPU count (one host for the CPU), where every run at that load (the confirmation
    and the ladder's repeats; or a stated fraction of them) met the SLO. Otherwise the
    highest load whose runs did ("stepped down"); with none, the maximum labelled
    "unconfirmed". Without such a search, the best Server point whose every run is valid and
    meets the SLO, a lower bound, labelled as such.
  * headroom h: each device is loaded to at most (1 - h) of its capacity, so
    N = ceil(target / (capacity x (1 - h))); N + spares devices are deployed (N+1 default).
  * watts at load: the N active devices at target/N each, interpolated on the measured
    Server power-vs-load points; else the Offline watts scaled by load (stated); the spare
    devices' idle power is not measured and not included.
  * energy per million inferences = total watts / target QPS x 1e6 J, in kWh.
  * cost per hour = deployed devices x price per device-hour; per month = that x 730 h;
    per million = that / (QPS x 3600) x 1e6. Prices older than the age limit on the plan's
    date (the newest study's, or --as-of) are flagged stale.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass
from typing import Sequence

from reports.capacity_evidence import LoadEvidence, Provenance, at_load, loads_of, point_evidence, provenance
from reports.constraints import Metric
from studies.slo import Slo
from plumbing.errors import ConfigError
from reports.refdata import Price, PriceTable, Published, PublishedTable, shown_path
from reports.studies import Point, SloSearch, Study

log = logging.getLogger(__name__)

J_PER_KWH = 3.6e6
HOURS_PER_MONTH = 730  # 8,760 hours a year / 12
# Float noise must not add a device: 3 x 1000 / 1000 is 3 devices, not 4.
_CEIL_SLACK = 1e-9

RANK_METRICS = {
    "cost": Metric("usd_per_million", "USD per 1M inferences", higher_is_better=False),
    "devices": Metric("deployed", "devices deployed", higher_is_better=False),
    "energy": Metric("kwh_per_million", "kWh per 1M inferences", higher_is_better=False),
}


# ---- arithmetic (pure) --------------------------------------------------------------------

def devices_needed(target_qps: float, qps_per_device: float, headroom: float) -> int:
    if not 0 <= headroom < 1:
        raise ConfigError(f"headroom must be at least 0 and below 1, got {headroom}")
    if not qps_per_device > 0 or not target_qps > 0:
        raise ConfigError("target QPS and capacity per device must be positive")
    return max(1, math.ceil(target_qps / (qps_per_device * (1.0 - headroom)) - _CEIL_SLACK))


def kwh_per_million(total_watts: float, qps: float) -> float:
    """Energy for one million inferences at `qps` drawing `total_watts`."""
    return total_watts / qps * 1e6 / J_PER_KWH


def usd_per_million(usd_per_hour: float, qps: float) -> float:
    return usd_per_hour / (qps * 3600.0) * 1e6


@dataclass(frozen=True)
class LoadPower:
    load: float  # samples/s per device
    watts: float  # per device
    source: str  # point id


def interpolate_watts(load: float, curve: Sequence[LoadPower]) -> tuple[float, str]:
    """Per-device watts at `load` on a measured power-vs-load curve, and how it was got.
    Outside the measured range the nearest end is used and the note says which way it errs."""
    pts = sorted(curve, key=lambda p: p.load)
    if not pts:
        raise ValueError("empty power curve")
    if load <= pts[0].load:
        how = "at" if math.isclose(load, pts[0].load) else "below"
        note = f"{how} the lowest measured load ({pts[0].load:,.0f}/s, point {pts[0].source})"
        if how == "below":
            note += ": its watts, an upper bound (idle power not measured)"
        return pts[0].watts, note
    if load >= pts[-1].load:
        how = "at" if math.isclose(load, pts[-1].load) else "above"
        note = f"{how} the highest measured load ({pts[-1].load:,.0f}/s, point {pts[-1].source})"
        if how == "above":
            note += ": its watts, likely low"
        return pts[-1].watts, note
    for lo, hi in zip(pts, pts[1:]):
        if lo.load <= load <= hi.load:
            share = (load - lo.load) / (hi.load - lo.load) if hi.load > lo.load else 0.0
            watts = lo.watts + share * (hi.watts - lo.watts)
            return watts, f"interpolated between points {lo.source} and {hi.source}"
    raise AssertionError("unreachable: load lies within the sorted curve")  # pragma: no cover


# ---- reading capacity and power from a study ------------------------------------------------

# Options resting on repeats that met the SLO rank first, then lower bounds, then unconfirmed maxima.
TIERS = {"confirmed": 0, "stepped down": 0, "lower bound": 1, "unconfirmed": 2}


@dataclass(frozen=True)
class Capacity:
    study: Study
    qps_per_device: float
    kind: str  # a key of TIERS
    basis: str
    evidence: LoadEvidence | None = None  # the runs at the capacity's load

    @property
    def tier(self) -> int:
        return TIERS[self.kind]


def _from_search(study: Study, search: SloSearch, slo: Slo, pass_fraction: float) -> Capacity | str:
    devices, unit = study.system.devices, study.system.unit
    if search.max_qps is None or search.max_qps <= 0:
        return f"the SLO search at {slo.label} in {study.name} found no load that met it"
    where = f"SLO search at {slo.label} in study {study.directory} ({study.name})"
    rule = "every run" if pass_fraction >= 1 else f"at least {pass_fraction:.0%} of the runs"
    loads = loads_of(study, search, slo)
    top = at_load(loads, search.max_qps)
    found = f"max {search.max_qps:,.0f} QPS on {devices} {unit}(s), {len(search.attempts)} attempts"
    if search.confirmed and top is not None and top.meets(pass_fraction):
        return Capacity(study, search.max_qps / devices, "confirmed",
                        f"{where}: {found}, confirmed: {top.summary()} met the SLO", top)
    if not search.confirmed:
        why = "NOT confirmed by a repeat run"
    elif top is None:
        why = "confirmed, but no run at that load besides the search's short ones"
    else:
        why = f"its confirmation passed, but only {top.summary()} met the SLO, short of {rule}"
    lower = [e for e in loads if e.load < search.max_qps and e.meets(pass_fraction)]
    if lower:
        best = max(lower, key=lambda e: e.load)
        return Capacity(study, best.load / devices, "stepped down", (
            f"{where}: {found}: {why}; STEPPED DOWN to {best.load:,.0f} QPS, the highest load where {rule} "
            f"met the SLO: {best.summary()}"), best)
    return Capacity(study, search.max_qps / devices, "unconfirmed", (
        f"{where}: {found}: {why}; NOT CONFIRMED and no lower load's runs met the SLO: an unconfirmed maximum"), top)


def capacity_at(study: Study, model: str, precision: str, backend: str, slo: Slo,
                pass_fraction: float = 1.0) -> Capacity | str:
    """The study's capacity per device at `slo`, or why there is none. A search's maximum
    stands only where `pass_fraction` of the runs at that load met the SLO (1: every run)."""
    for search in study.slo_searches:
        if (search.model, search.precision, search.backend) == (model, precision, backend) \
                and slo.matches(search.percentile, search.latency_ms):
            return _from_search(study, search, slo, pass_fraction)
    devices = study.system.devices
    best: tuple[Point, float, float | None, LoadEvidence] | None = None
    server = study.select("Server", model, precision, backend)
    for point in server:
        evidence = point_evidence(study, point.id, slo)
        if evidence.total and evidence.passed == evidence.total:
            floor = min(r.samples_per_s for r in point.runs)  # the worst run: a lower bound
            worst = max(r.latency_ms.get(slo.key) or 0.0 for r in point.runs)
            if best is None or floor > best[1]:
                best = (point, floor, worst, evidence)
    searched = sorted({f"p{s.percentile:g} <= {s.latency_ms:g} ms" for s in study.slo_searches
                       if (s.model, s.precision, s.backend) == (model, precision, backend)})
    searched_note = f" (searched: {', '.join(searched)})" if searched else ""
    if best is None:
        what = "no Server point has every run valid within it" if server else "no Server points measured"
        return f"needs an SLO search at {slo.label} in {study.name}{searched_note}: {what}"
    point, floor, worst, evidence = best
    basis = (f"LOWER BOUND: no SLO search at {slo.label} in {study.name}{searched_note}; Server point "
             f"{point.id} sustained {floor:,.0f}/s in its slowest of {len(point.runs)} valid runs with "
             f"{slo.key} at most {worst:,.2f} ms; run a search at this SLO for the real maximum")
    return Capacity(study, floor / devices, "lower bound", basis, evidence)


@dataclass(frozen=True)
class PowerEstimate:
    watts_per_device: float | None
    basis: str


def power_at(study: Study, model: str, precision: str, backend: str, load_per_device: float) -> PowerEstimate:
    # A point's watts (like its samples/s) are the whole system's: summed over its GPUs.
    devices = study.system.devices
    server = [p for p in study.select("Server", model, precision, backend) if p.stats.watts is not None]
    if server:
        curve = [LoadPower(p.stats.samples_per_s.mean / devices, p.stats.watts.mean / devices, p.id) for p in server]
        watts, how = interpolate_watts(load_per_device, curve)
        label = server[0].power_label() or "label not recorded"
        return PowerEstimate(watts, f"measured Server power vs load in {study.name} ({label}), {how}")
    offline = [p for p in study.select("Offline", model, precision, backend) if p.stats.watts is not None]
    if offline:
        top = max(offline, key=lambda p: p.stats.samples_per_s.mean)
        full_load = top.stats.samples_per_s.mean / devices
        full_watts = top.stats.watts.mean / devices
        watts = full_watts * min(1.0, load_per_device / full_load)
        return PowerEstimate(watts, (
            f"ASSUMPTION: no Server power measured; Offline point {top.id} in {study.name} drew "
            f"{full_watts:,.0f} W per {study.system.unit} at {full_load:,.0f}/s, scaled in proportion to "
            "load (ignores idle power, so likely low; the full-load figure is an upper bound)"))
    reasons = {r for p in study.select("Server", model, precision, backend) + study.select("Offline", model, precision, backend)
               if (r := p.power_absent_reason())}
    why = "; ".join(sorted(reasons)) or "no Server or Offline point of this configuration"
    return PowerEstimate(None, f"power absent in {study.name}: {why}")


# ---- the plan ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PlanRequest:
    model: str
    target_qps: float
    slo: Slo
    headroom: float = 0.2
    spares: int = 1
    rank_by: str = "cost"
    pass_fraction: float = 1.0  # of the runs at a search's maximum that must meet the SLO
    as_of: dt.date | None = None  # the plan's date; None: the newest study's
    price_max_age_days: int = 180

    def __post_init__(self) -> None:
        if not self.target_qps > 0:
            raise ConfigError(f"target QPS must be positive, got {self.target_qps}")
        if not 0 <= self.headroom < 1:
            raise ConfigError(f"headroom must be at least 0 and below 1, got {self.headroom}")
        if self.spares < 0:
            raise ConfigError(f"spares must not be negative, got {self.spares}")
        if self.rank_by not in RANK_METRICS:
            raise ConfigError(f"unknown ranking {self.rank_by!r}; choose from {', '.join(RANK_METRICS)}")
        if not 0 < self.pass_fraction <= 1:
            raise ConfigError(f"the pass fraction must lie in (0, 1], got {self.pass_fraction}")
        if self.price_max_age_days < 0:
            raise ConfigError(f"the price age limit must not be negative, got {self.price_max_age_days}")


@dataclass(frozen=True)
class PlanOption:
    device: str
    unit: str
    precision: str
    backend: str
    system: str | None  # the study the capacity figure comes from
    kind: str  # a key of TIERS, or "needs search"
    qps_per_device: float | None = None
    devices: int | None = None  # N at the headroom
    deployed: int | None = None  # N + spares
    watts: float | None = None  # GPU-only, the N active devices together at the target load
    kwh_per_million: float | None = None
    usd_per_hour: float | None = None
    usd_per_month: float | None = None
    usd_per_million: float | None = None
    basis: tuple[str, ...] = ()
    evidence: LoadEvidence | None = None  # the runs at the capacity's load
    provenance: Provenance | None = None
    price: Price | None = None
    price_age_days: int | None = None
    price_stale: bool | None = None
    published: Published | None = None
    published_ratio: float | None = None  # measured capacity / published Server QPS, per GPU

    def value(self, metric: Metric) -> float | None:
        return getattr(self, metric.name)


def _scaling_note(primary: Capacity, others: list[Capacity], needed: int) -> str:
    system = primary.study.system
    if system.devices == 1:
        return (f"ASSUMPTION: linear scaling across {system.unit}s; only single-{system.unit} "
                f"measurements of this configuration")
    # A one-GPU study of the same tier first; else the best there is, its tier named, since
    # an efficiency against an unconfirmed single-GPU figure is weaker evidence.
    singles = sorted((c for c in others if c.study.system.devices == 1),
                     key=lambda c: (c.tier != primary.tier, c.tier))
    note = f"measured scaling: {system.devices} GPUs in one host ({primary.study.name}) give {primary.qps_per_device:,.0f} QPS per GPU"
    if singles:
        single = singles[0]
        tier = "" if single.tier == primary.tier else f", {single.kind}"
        note += (f", {primary.qps_per_device / single.qps_per_device:.0%} of one GPU's "
                 f"{single.qps_per_device:,.0f} ({single.study.name}{tier})")
    else:
        note += " (no single-GPU study to compare)"
    if needed > system.devices:
        note += f"; beyond {system.devices} GPUs, further hosts are assumed to add capacity linearly"
    return note


def _published(request: PlanRequest, device: str, unit: str, qps_per_device: float,
               published: PublishedTable | None) -> tuple[Published | None, float | None]:
    if published is None or unit != "GPU" or request.model != published.benchmark:
        return None, None
    entry = published.for_device(device)
    return entry, (qps_per_device / entry.server if entry else None)


def _plan_option(request: PlanRequest, device: str, precision: str, stack: str, backend: str, found: list[Capacity | str],
                 prices: PriceTable, published: PublishedTable | None, on: dt.date) -> PlanOption:
    capacities = [c for c in found if isinstance(c, Capacity)]
    unit = next((c.study.system.unit for c in capacities), "GPU")
    if not capacities:
        return PlanOption(device, unit, precision, stack, None, "needs search",
                          basis=tuple(r for r in found if isinstance(r, str)))
    tier = min(c.tier for c in capacities)
    # The most devices measured in one host carries the measured scaling; then the newest.
    primary = max((c for c in capacities if c.tier == tier),
                  key=lambda c: (c.study.system.devices, c.study.created_utc))
    unit = primary.study.system.unit
    n = devices_needed(request.target_qps, primary.qps_per_device, request.headroom)
    deployed = n + request.spares
    load = request.target_qps / n
    basis = [f"capacity: {primary.basis}",
             f"scaling: {_scaling_note(primary, [c for c in capacities if c is not primary], n)}",
             f"load: {request.target_qps:,.0f} QPS over {n} active {unit}(s) = {load:,.0f}/s each, "
             f"{load / primary.qps_per_device:.0%} of capacity (headroom {request.headroom:.0%}); "
             f"{request.spares} spare(s)"]
    power = power_at(primary.study, request.model, precision, backend, load)
    watts = kwh = None
    if power.watts_per_device is not None:
        watts = power.watts_per_device * n
        kwh = kwh_per_million(watts, request.target_qps)
        spare_note = "; spare devices' idle power not measured, not included" if request.spares else ""
        basis.append(f"power: {power.watts_per_device:,.1f} W per {unit} x {n} active = {watts:,.0f} W, "
                     f"{power.basis}{spare_note}")
    else:
        basis.append(f"power: {power.basis}")
    price = prices.for_device(device)
    usd_h = usd_m = age = stale = None
    if price is not None:
        usd_h = price.usd_per_hour * deployed
        usd_m = usd_per_million(usd_h, request.target_qps)
        age = price.age_days(on)
        stale = age > request.price_max_age_days
        flag = f"; STALE: {age} days old on {on}, over {request.price_max_age_days}" if stale else ""
        basis.append(f"price: {price.usd_per_hour:.3f} {prices.currency}/{unit}-hour for {price.type} from "
                     f"{shown_path(prices.path)} ({price.source}; as of {price.as_of}{flag}; an editable assumption)")
    else:
        basis.append(f"price: no entry in {shown_path(prices.path)} matches device {device!r}")
    entry, ratio = _published(request, device, unit, primary.qps_per_device, published)
    return PlanOption(device, unit, precision, stack, primary.study.name, primary.kind, primary.qps_per_device, n,
                      deployed, watts, kwh, usd_h, None if usd_h is None else usd_h * HOURS_PER_MONTH, usd_m,
                      tuple(basis), primary.evidence, provenance(primary.study.plan, precision), price, age, stale,
                      entry, ratio)


@dataclass(frozen=True)
class Plan:
    request: PlanRequest
    ranked: tuple[PlanOption, ...]  # best first
    unplanned: tuple[PlanOption, ...]  # configurations that need a search at this SLO
    date: dt.date  # prices' ages are counted to it
    date_basis: str  # where the date comes from
    prices: PriceTable
    published: PublishedTable | None = None


def plan_date(studies: Sequence[Study], as_of: dt.date | None) -> tuple[dt.date, str]:
    """The given date, else the newest study's (never today's clock: the same studies give the same plan)."""
    if as_of is not None:
        return as_of, "given with --as-of"
    dated = []
    for study in studies:
        try:
            created = dt.datetime.fromisoformat(study.created_utc)
        except ValueError:
            raise ConfigError(f"{study.directory}: created_utc {study.created_utc!r} is not a date; "
                              "give the plan's date with --as-of") from None
        dated.append((created.replace(tzinfo=created.tzinfo or dt.timezone.utc), study.name))
    created, name = max(dated)
    return created.date(), f"the date of the newest study, {name}"


def make_plan(studies: Sequence[Study], request: PlanRequest, prices: PriceTable,
              published: PublishedTable | None = None) -> Plan:
    groups: dict[tuple[str, str, str, str], list[Capacity | str]] = {}
    for study in studies:
        combos = {(p.precision, p.backend) for p in study.points if p.model == request.model}
        combos |= {(s.precision, s.backend) for s in study.slo_searches if s.model == request.model}
        for precision, backend in sorted(combos):
            found = capacity_at(study, request.model, precision, backend, request.slo, request.pass_fraction)
            groups.setdefault((study.system.device, precision, study.system.stack(backend), backend), []).append(found)
    if not groups:
        names = ", ".join(s.name for s in studies)
        raise ConfigError(f"no measurements of {request.model} in the studies given ({names})")
    on, date_basis = plan_date(studies, request.as_of)
    options = [_plan_option(request, *key, found, prices, published, on) for key, found in sorted(groups.items())]
    planned = [o for o in options if o.kind != "needs search"]
    if not planned:
        raise ConfigError(f"no measurement supports {request.slo.label}: run an SLO search at that bound "
                          f"({options[0].basis[0]})")
    metric = RANK_METRICS[request.rank_by]
    planned.sort(key=lambda o: (TIERS[o.kind], metric.sort_key(o.value(metric)), o.deployed, o.device))
    log.info("planned %d configuration(s), %d need a search", len(planned), len(options) - len(planned))
    return Plan(request, tuple(planned), tuple(o for o in options if o.kind == "needs search"), on, date_basis,
                prices, published)
