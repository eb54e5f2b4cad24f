"""GPU power, energy, clocks and throttling over a LoadGen test, read through NVML.

A `PowerMeter` brackets the test: `start()` just before LoadGen's StartTest, `stop()` just
after it returns. A thread samples every GPU the run uses every `interval_s` (energy
counter, power, SM clock, temperature, clock-event reasons). The reported window runs from
the first query LoadGen issued (LoadGen loads the performance set inside StartTest, before
timing; that part is left out) to the end of the test, and energy over it is

* `energy_counter`: the difference of `nvmlDeviceGetTotalEnergyConsumption` (mJ since the
  driver loaded), interpolated linearly to the window's edges; or, where that counter is
  not supported,
* `sampled`: the power samples (`nvmlDeviceGetPowerUsage`, itself a ~1 s average on Ampere
  and newer) integrated over the window.

and `avg_w` is that energy over the window. Beside it, `max_power_sample_w` is the highest
power sample taken in the window: not a peak of instantaneous power but of NVML's ~1 s
moving average, which on a short window reaches back to before the window began (the
backend idling while LoadGen loads samples) and so can lie below `avg_w`. The two are named
for what they are and not forced into order; where the sample lies below the average a note
says why.

Everything is GPU-only (no host CPU, memory or fans) and labelled so. A CPU run, a host
without NVML, or a GPU that reports neither energy nor power gives
`{"source": "absent", "reason": ...}`, never zeros.

The NVML module is injectable, so tests use a fake one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

log = logging.getLogger(__name__)

LABEL = "GPU-only"
DEFAULT_INTERVAL_S = 0.1
# NVML clock-event ("throttle") reason bits, stable across driver versions (nvml.h).
CLOCK_EVENT_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# Energy counters update every 20-100 ms: shorter windows carry a large relative error.
SHORT_WINDOW_S = 1.0
# What each energy method is, for notes and readers of measurements.json.
METHOD_NAMES = {"energy_counter": "energy counter over the window",
                "sampled": "power samples integrated over the window"}
EFFICIENCY_BY_SAMPLES = ("Offline", "Server")
EFFICIENCY_BY_QUERY = ("SingleStream", "MultiStream")


def reason_names(mask: int) -> list[str]:
    """Names of the reason bits set in `mask`; unknown bits as hex."""
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENT_REASONS)
    if unknown:
        names.append(f"unknown_0x{unknown:x}")
    return names


def absent(reason: str) -> dict[str, Any]:
    return {"source": "absent", "reason": reason, "label": LABEL}


@dataclass(frozen=True)
class Sample:
    """One GPU at one moment; None where NVML did not answer."""

    t: float
    energy_mj: float | None = None
    power_mw: float | None = None
    sm_mhz: float | None = None
    temp_c: float | None = None
    reasons: int | None = None


@dataclass(frozen=True)
class GpuTarget:
    """A GPU the run uses: the CUDA ordinal in this process and, where known, its UUID."""

    cuda_index: int
    uuid: str | None = None


class Meter(Protocol):
    def start(self) -> None: ...

    def stop(self, begin: float | None = None) -> dict[str, Any]: ...


class AbsentMeter:
    """Stands in where nothing can be measured; says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def start(self) -> None:
        pass

    def stop(self, begin: float | None = None) -> dict[str, Any]:
        return absent(self.reason)


@dataclass
class _Gpu:
    index: int
    name: str
    handle: Any
    has_counter: bool
    samples: list[Sample] = field(default_factory=list)


class PowerMeter:
    def __init__(self, nvml: Any, targets: list[GpuTarget], interval_s: float = DEFAULT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._nvml = nvml
        self._targets = targets
        self._interval_s = interval_s
        self._clock = clock
        self._gpus: list[_Gpu] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._failed: str | None = None
        self._started_at: float | None = None

    def start(self) -> None:
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except Exception as exc:  # NVMLError, or a library that cannot load
            self._failed = f"NVML could not start: {exc}"
            return
        try:
            for target in self._targets:
                handle, index = self._handle(target)
                self._gpus.append(_Gpu(index, _text(nvml.nvmlDeviceGetName(handle)), handle,
                                       _answers(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle))))
        except Exception as exc:
            self._failed = f"NVML could not open the GPU: {exc}"
            self._shutdown()
            return
        self._started_at = self._clock()
        self._sample_all()
        self._thread = threading.Thread(target=self._loop, name="power-sampler", daemon=True)
        self._thread.start()

    def _handle(self, target: GpuTarget) -> tuple[Any, int]:
        nvml = self._nvml
        if target.uuid:
            try:
                handle = nvml.nvmlDeviceGetHandleByUUID(target.uuid)
                return handle, int(nvml.nvmlDeviceGetIndex(handle))
            except Exception:
                log.debug("NVML does not know UUID %s; using the device index", target.uuid)
        index = _physical_index(target.cuda_index)
        return nvml.nvmlDeviceGetHandleByIndex(index), index

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample_all()

    def _sample_all(self) -> None:
        now = self._clock()
        with self._lock:
            for gpu in self._gpus:
                gpu.samples.append(self._read(gpu, now))

    def _read(self, gpu: _Gpu, now: float) -> Sample:
        nvml, h = self._nvml, gpu.handle
        reasons_fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
        return Sample(
            t=now,
            energy_mj=_query(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(h)) if gpu.has_counter else None,
            power_mw=_query(lambda: nvml.nvmlDeviceGetPowerUsage(h)),
            sm_mhz=_query(lambda: nvml.nvmlDeviceGetClockInfo(h, getattr(nvml, "NVML_CLOCK_SM", 1))),
            temp_c=_query(lambda: nvml.nvmlDeviceGetTemperature(h, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))),
            reasons=_query(lambda: reasons_fn(h)) if reasons_fn else None,
        )

    def stop(self, begin: float | None = None) -> dict[str, Any]:
        """End the measurement; `begin` (same clock) is when the timed part began."""
        if self._failed:
            return absent(self._failed)
        if self._thread is None:
            return absent("the power meter was never started")
        self._stop.set()
        self._thread.join()
        self._sample_all()
        end = self._gpus[0].samples[-1].t
        self._shutdown()
        start = self._started_at if begin is None else max(begin, self._started_at)
        return summarize([(g.index, g.name, g.samples) for g in self._gpus], start, end)

    def _shutdown(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception as exc:
            log.debug("nvmlShutdown: %s", exc)


def summarize(gpus: list[tuple[int, str, list[Sample]]], begin: float, end: float, source: str = "nvml",
              label: str = LABEL) -> dict[str, Any]:
    """The power dict for samples of each GPU over the window [begin, end], read from
    `source` (NVML here; a server's Prometheus metrics in runs/remote_power.py)."""
    window = end - begin
    if not window > 0:
        return absent(f"empty measurement window ({window:.3f} s)")
    rows = []
    for index, name, samples in gpus:
        row = summarize_gpu(index, name, samples, begin, end)
        if row is None:
            return absent(f"{source} reports neither energy nor power for GPU {index} ({name})")
        rows.append(row)
    energy = sum(r["energy_j"] for r in rows)
    out: dict[str, Any] = {
        "source": source, "label": label, "window_s": window,
        "window": "first query issued to the end of the LoadGen test",
        # Energy and watts are the sum over the run's GPUs: the host's GPU figure.
        "gpus": rows, "gpu_count": len(rows), "energy_j": energy, "avg_w": energy / window,
    }
    if window < SHORT_WINDOW_S:
        out["note"] = f"window under {SHORT_WINDOW_S:.0f} s: NVML energy updates every 20-100 ms, expect a large error"
    return out


def summarize_gpu(index: int, name: str, samples: list[Sample], begin: float, end: float) -> dict[str, Any] | None:
    window = end - begin
    counter = [(s.t, s.energy_mj) for s in samples if s.energy_mj is not None]
    power = [(s.t, s.power_mw) for s in samples if s.power_mw is not None]
    if len(counter) >= 2 and counter[0][0] <= begin and counter[-1][0] >= end:
        method = "energy_counter"
        energy_j = (_interpolate(counter, end) - _interpolate(counter, begin)) / 1000.0
    elif power:
        method = "sampled"
        energy_j = _integrate(power, begin, end) / 1000.0
    else:
        return None
    inside = [s for s in samples if begin <= s.t <= end] or [min(samples, key=lambda s: abs(s.t - end))]
    watts = [s.power_mw / 1000.0 for s in inside if s.power_mw is not None]
    avg_w = energy_j / window
    max_sample_w = max(watts) if watts else None
    clocks = [s.sm_mhz for s in inside if s.sm_mhz is not None]
    temps = [s.temp_c for s in inside if s.temp_c is not None]
    mask = 0
    for s in inside:
        mask |= s.reasons or 0
    row = {
        "index": index, "name": name, "method": method,
        "energy_j": energy_j, "avg_w": avg_w,
        "max_power_sample_w": max_sample_w,
        "samples": len(inside),
        "sm_clock_mhz": {"mean": sum(clocks) / len(clocks), "min": min(clocks), "max": max(clocks)} if clocks else None,
        "temperature_c": {"max": max(temps)} if temps else None,
        "throttle_reasons": reason_names(mask),
    }
    if max_sample_w is not None and max_sample_w < avg_w:
        row["power_sample_note"] = (
            f"max_power_sample_w is below avg_w ({METHOD_NAMES[method]}): each power sample is NVML's ~1 s "
            f"moving average, which over a {window:.2f} s window reaches back before the window began")
    return row


def with_efficiency(power: dict[str, Any], scenario: str, samples: int, queries: int) -> dict[str, Any]:
    """Add samples per joule (Offline, Server) or millijoules per query (SingleStream,
    MultiStream), MLPerf's efficiency metrics, to a measured power dict."""
    if power.get("source") != "nvml" or not power.get("energy_j"):
        return power
    out = dict(power)
    if scenario in EFFICIENCY_BY_SAMPLES:
        out["samples_per_joule"] = samples / power["energy_j"]
    elif scenario in EFFICIENCY_BY_QUERY and queries:
        out["mj_per_query"] = power["energy_j"] * 1000.0 / queries
    return out


def open_meter(devices: str | tuple[str, ...], nvml: Any = None, interval_s: float = DEFAULT_INTERVAL_S) -> Meter:
    """The meter for a run on `devices` ("cpu", or the "cuda:N" devices of the run): every
    GPU sampled, each reported, their energy and watts summed for the host."""
    devices = (devices,) if isinstance(devices, str) else tuple(devices)
    if "cpu" in devices:
        return AbsentMeter("CPU run: there is no GPU to measure")
    if nvml is None:
        try:
            import pynvml as nvml  # nvidia-ml-py
        except ImportError:
            return AbsentMeter("nvidia-ml-py (pynvml) is not installed")
    return PowerMeter(nvml, [cuda_target(device) for device in devices], interval_s)


def cuda_target(device: str) -> GpuTarget:
    import torch

    index = torch.device(device).index or 0
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    text = str(uuid) if uuid else None
    if text and not text.startswith(("GPU-", "MIG-")):
        text = f"GPU-{text}"
    return GpuTarget(index, text)


def _physical_index(cuda_index: int) -> int:
    """NVML counts every GPU; CUDA only the visible ones. Map through CUDA_VISIBLE_DEVICES
    where it lists plain indices."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if visible and all(v.isdigit() for v in visible) and cuda_index < len(visible):
        return int(visible[cuda_index])
    return cuda_index


def _answers(query: Callable[[], Any]) -> bool:
    return _query(query) is not None


def _query(query: Callable[[], Any]) -> Any:
    try:
        return query()
    except Exception:  # NVMLError_NotSupported and friends: this figure is unavailable
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _interpolate(points: list[tuple[float, float]], t: float) -> float:
    """Piecewise-linear value at t, held constant beyond the ends."""
    if t <= points[0][0]:
        return points[0][1]
    for (t0, v0), (t1, v1) in zip(points, points[1:]):
        if t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return points[-1][1]


def _integrate(points: list[tuple[float, float]], begin: float, end: float) -> float:
    """Integral over [begin, end] of the piecewise-linear curve through `points`."""
    times = [begin] + [t for t, _ in points if begin < t < end] + [end]
    values = [_interpolate(points, t) for t in times]
    return sum((t1 - t0) * (v0 + v1) / 2 for t0, t1, v0, v1 in zip(times, times[1:], values, values[1:]))
