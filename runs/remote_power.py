"""A remote server's GPU power over a run, from its Prometheus metrics (`--metrics-url`).

Triton publishes, per GPU (label `gpu_uuid`), `nv_energy_consumption` (joules since the
server started) and `nv_gpu_power_usage` (watts, instantaneous). The meter reads the
endpoint when the run starts, every `interval_s` while it runs, and when it ends; energy
over the window is the counter's difference (interpolated to the window's edges) where the
server has it, else the power readings integrated. Without `--metrics-url`, or when the
endpoint cannot be read, power is absent with the reason, never zero: a remote server's
power cannot be seen from the client.

The text format is parsed by prometheus_client's own parser (a well-kept library), fetched
with the standard library's urllib (one GET, no client state worth a dependency).
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable

from runs.power import AbsentMeter, Meter, Sample, absent, summarize

log = logging.getLogger(__name__)

ENERGY = "nv_energy_consumption"
POWER = "nv_gpu_power_usage"
LABEL = "server GPUs (Prometheus metrics)"
DEFAULT_INTERVAL_S = 1.0  # Triton refreshes its GPU metrics about once a second
FETCH_TIMEOUT_S = 2.0
Fetch = Callable[[str], str]


def parse_gpu_metrics(text: str) -> dict[str, dict[str, float]]:
    """{gpu_uuid: {"energy_j": ..., "power_w": ...}} from Prometheus text; GPUs without
    either metric are left out."""
    from prometheus_client.parser import text_string_to_metric_families

    gpus: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = {ENERGY: "energy_j", POWER: "power_w"}.get(sample.name)
            if key is not None:
                gpus.setdefault(sample.labels.get("gpu_uuid", "gpu"), {})[key] = float(sample.value)
    return gpus


def _http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:  # noqa: S310 (the user's URL)
        return response.read().decode("utf-8", "replace")


class PrometheusMeter:
    def __init__(self, url: str, interval_s: float = DEFAULT_INTERVAL_S, fetch: Fetch = _http_get,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url, self._interval_s, self._fetch, self._clock = url, interval_s, fetch, clock
        self._readings: dict[str, list[Sample]] = {}
        self._failed: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _read(self) -> None:
        now = self._clock()
        try:
            gpus = parse_gpu_metrics(self._fetch(self.url))
        except (OSError, urllib.error.URLError, ValueError) as exc:
            log.warning("cannot read the server's metrics at %s: %s", self.url, exc)
            return
        with self._lock:
            for uuid, values in gpus.items():
                energy, power = values.get("energy_j"), values.get("power_w")
                self._readings.setdefault(uuid, []).append(Sample(
                    now, energy_mj=None if energy is None else energy * 1000.0,
                    power_mw=None if power is None else power * 1000.0))

    def start(self) -> None:
        self._read()
        if not self._readings:
            self._failed = f"no {ENERGY} or {POWER} readings at {self.url}"
            return
        self._thread = threading.Thread(target=self._loop, name="server-metrics", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._read()

    def stop(self, begin: float | None = None) -> dict[str, Any]:
        if self._failed:
            return absent(self._failed)
        if self._thread is None:
            return absent("the server's metrics were never read")
        self._stop.set()
        self._thread.join()
        self._read()
        with self._lock:
            readings = {uuid: list(samples) for uuid, samples in self._readings.items()}
        first = min(s[0].t for s in readings.values())
        end = max(s[-1].t for s in readings.values())
        power = summarize([(i, uuid, samples) for i, (uuid, samples) in enumerate(sorted(readings.items()))],
                          first if begin is None else max(begin, first), end, source="prometheus", label=LABEL)
        return {**power, "url": self.url} if power.get("source") == "prometheus" else power


def open_remote_meter(metrics_url: str | None) -> Meter:
    if not metrics_url:
        return AbsentMeter("remote endpoint: the server's power is not visible from the client "
                           "(--metrics-url reads Triton's GPU power and energy metrics)")
    return PrometheusMeter(metrics_url)
