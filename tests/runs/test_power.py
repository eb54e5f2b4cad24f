"""GPU power measurement against a fake NVML module: energy deltas, the sampling fallback,
absent readings, the highest power sample beside the average, clock-event reasons and
efficiency labels."""

from __future__ import annotations

import pytest

from runs.power import (AbsentMeter, GpuTarget, PowerMeter, Sample, open_meter, reason_names, summarize,
                           with_efficiency)


class NVMLError(Exception):
    pass


class FakeNvml:
    """What runs.power calls of pynvml, driven by a list of readings per call."""

    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, energy_mj=None, power_mw=None, reasons=0, init_error=None, counter=True):
        self.energy = list(energy_mj or [])
        self.power = list(power_mw or [])
        self.reasons = reasons
        self.init_error = init_error
        self.counter = counter
        self.calls: list[str] = []

    def nvmlInit(self):
        self.calls.append("init")
        if self.init_error:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlDeviceGetHandleByUUID(self, uuid):
        raise NVMLError("Not Found")

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("gpu", index)

    def nvmlDeviceGetName(self, handle):
        return b"Fake H100"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.counter:
            raise NVMLError("Not Supported")
        return self.energy.pop(0) if len(self.energy) > 1 else self.energy[0]

    def nvmlDeviceGetPowerUsage(self, handle):
        return self.power.pop(0) if len(self.power) > 1 else self.power[0]

    def nvmlDeviceGetClockInfo(self, handle, clock):
        return 1980

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 61

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return self.reasons


def test_energy_counter_difference_over_the_window():
    # Counter at 0 s: 1000 J, 10 s: 4000 J -> 300 W; window 2..8 s by interpolation: 1800 J.
    samples = [Sample(0.0, energy_mj=1_000_000, power_mw=250_000), Sample(5.0, energy_mj=2_500_000, power_mw=310_000),
               Sample(10.0, energy_mj=4_000_000, power_mw=290_000)]
    power = summarize([(0, "GPU", samples)], 2.0, 8.0)
    gpu = power["gpus"][0]
    assert power["source"] == "nvml" and power["label"] == "GPU-only"
    assert gpu["method"] == "energy_counter"
    assert gpu["energy_j"] == pytest.approx(1800.0)
    assert power["avg_w"] == pytest.approx(300.0)
    assert power["window_s"] == pytest.approx(6.0)
    assert gpu["max_power_sample_w"] == pytest.approx(310.0)  # the only power sample inside the window
    assert "note" not in power


def test_sampled_power_is_integrated_where_the_counter_is_missing():
    samples = [Sample(0.0, power_mw=100_000), Sample(1.0, power_mw=300_000), Sample(2.0, power_mw=300_000)]
    gpu = summarize([(0, "GPU", samples)], 0.0, 2.0)["gpus"][0]
    assert gpu["method"] == "sampled"
    assert gpu["energy_j"] == pytest.approx(200.0 + 300.0)  # trapezoids
    assert gpu["avg_w"] == pytest.approx(250.0)
    assert gpu["max_power_sample_w"] == pytest.approx(300.0)


def test_a_gpu_with_neither_energy_nor_power_makes_the_reading_absent():
    power = summarize([(3, "GPU", [Sample(0.0), Sample(1.0)])], 0.0, 1.0)
    assert power["source"] == "absent" and "GPU 3" in power["reason"]
    assert "energy_j" not in power and "avg_w" not in power


def test_short_windows_are_flagged():
    samples = [Sample(0.0, energy_mj=0), Sample(0.5, energy_mj=100_000)]
    assert "note" in summarize([(0, "GPU", samples)], 0.0, 0.5)


def test_clock_event_reason_names():
    assert reason_names(0) == []
    assert reason_names(0x1 | 0x4 | 0x40) == ["gpu_idle", "sw_power_cap", "hw_thermal_slowdown"]
    assert reason_names(0x8000) == ["unknown_0x8000"]


def test_meter_with_fake_nvml_counts_energy_from_the_first_issue():
    # The counter rises 1 J per reading; the clock 1 s per call.
    ticks = iter(float(t) for t in range(1000))
    nvml = FakeNvml(energy_mj=[i * 1000 for i in range(100)], power_mw=[200_000, 450_000, 300_000], reasons=0x4)
    meter = PowerMeter(nvml, [GpuTarget(0, "GPU-x")], interval_s=3600, clock=lambda: next(ticks))
    meter.start()  # clock 0 (started), 1 (first sample)
    power = meter.stop(begin=1.0)  # final sample at clock 2
    gpu = power["gpus"][0]
    assert power["source"] == "nvml" and gpu["name"] == "Fake H100" and gpu["index"] == 0
    assert gpu["method"] == "energy_counter"
    assert power["window_s"] == pytest.approx(1.0)
    assert gpu["energy_j"] == pytest.approx(1.0)
    assert gpu["max_power_sample_w"] == pytest.approx(450.0)
    assert gpu["sm_clock_mhz"] == {"mean": 1980, "min": 1980, "max": 1980}
    assert gpu["temperature_c"] == {"max": 61}
    assert gpu["throttle_reasons"] == ["sw_power_cap"]
    assert nvml.calls == ["init", "shutdown"]


def test_an_average_above_every_power_sample_is_never_called_a_peak():
    # The shipped H100 study: 198.3 W from the energy counter, 176.3 W the highest power
    # sample (NVML's ~1 s average, reaching back before a short window began).
    ticks = iter(float(t) for t in range(1000))
    nvml = FakeNvml(energy_mj=[0, 0, 198_000], power_mw=[150_000, 176_000])
    meter = PowerMeter(nvml, [GpuTarget(0)], interval_s=3600, clock=lambda: next(ticks))
    meter.start()  # clock 0 (started), 1 (first sample: 0 mJ, 150 W)
    power = meter.stop(begin=1.0)  # final sample at clock 2: 198,000 mJ, 176 W
    (gpu,) = power["gpus"]
    assert gpu["method"] == "energy_counter" and gpu["avg_w"] == pytest.approx(198.0)
    for row in (power, gpu):
        peaks = {k: v for k, v in row.items() if "peak" in k and isinstance(v, (int, float))}
        assert all(v >= row["avg_w"] for v in peaks.values()), f"a 'peak' below the average: {peaks}"
    assert gpu["max_power_sample_w"] == pytest.approx(176.0)
    assert "~1 s" in gpu["power_sample_note"] and "energy counter" in gpu["power_sample_note"]


def test_a_power_sample_above_the_average_needs_no_note():
    samples = [Sample(0.0, energy_mj=0, power_mw=300_000), Sample(2.0, energy_mj=500_000, power_mw=300_000)]
    gpu = summarize([(0, "GPU", samples)], 0.0, 2.0)["gpus"][0]
    assert gpu["avg_w"] == pytest.approx(250.0) and gpu["max_power_sample_w"] == pytest.approx(300.0)
    assert "power_sample_note" not in gpu


def test_meter_falls_back_to_sampling_when_the_counter_is_not_supported():
    ticks = iter(float(t) for t in range(1000))
    nvml = FakeNvml(power_mw=[100_000, 100_000], counter=False)
    meter = PowerMeter(nvml, [GpuTarget(0)], interval_s=3600, clock=lambda: next(ticks))
    meter.start()
    power = meter.stop()
    assert power["gpus"][0]["method"] == "sampled"
    assert power["avg_w"] == pytest.approx(100.0)


def test_meter_samples_in_its_thread():
    nvml = FakeNvml(energy_mj=[0, 1000, 2000, 3000], power_mw=[100_000])
    meter = PowerMeter(nvml, [GpuTarget(0)], interval_s=0.01)
    meter.start()
    import time

    deadline = time.monotonic() + 5
    while len(meter._gpus[0].samples) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    power = meter.stop()
    assert power["gpus"][0]["samples"] >= 3


def test_absent_readings_say_why_and_are_never_zero():
    assert open_meter("cpu").stop()["source"] == "absent"
    assert "CPU" in open_meter("cpu").stop()["reason"]
    failing = PowerMeter(FakeNvml(init_error="Driver Not Loaded"), [GpuTarget(0)])
    failing.start()
    power = failing.stop()
    assert power == {"source": "absent", "reason": "NVML could not start: Driver Not Loaded", "label": "GPU-only"}
    assert isinstance(open_meter("cpu"), AbsentMeter)


def test_efficiency_by_scenario():
    measured = {"source": "nvml", "label": "GPU-only", "energy_j": 500.0, "avg_w": 250.0}
    assert with_efficiency(measured, "Offline", 100_000, 1)["samples_per_joule"] == pytest.approx(200.0)
    assert with_efficiency(measured, "Server", 50_000, 50_000)["samples_per_joule"] == pytest.approx(100.0)
    single = with_efficiency(measured, "SingleStream", 1000, 1000)
    assert single["mj_per_query"] == pytest.approx(500.0) and "samples_per_joule" not in single
    assert with_efficiency(measured, "MultiStream", 8000, 1000)["mj_per_query"] == pytest.approx(500.0)
    gone = {"source": "absent", "reason": "CPU run", "label": "GPU-only"}
    assert with_efficiency(gone, "Offline", 100, 1) == gone


class FourGpuNvml(FakeNvml):
    """Four GPUs whose energy counters rise (index + 1) J per reading, so each device's
    figure, and the host's sum, are known."""

    def __init__(self):
        super().__init__(power_mw=[300_000])
        self.readings = [0, 0, 0, 0]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        index = handle[1]
        self.readings[index] += 1
        return self.readings[index] * (index + 1) * 1000

    def nvmlDeviceGetName(self, handle):
        return b"Fake H200"


def test_several_gpus_are_each_reported_and_summed_for_the_host():
    ticks = iter(float(t) for t in range(1000))
    meter = PowerMeter(FourGpuNvml(), [GpuTarget(i, None) for i in range(4)], interval_s=3600,
                       clock=lambda: next(ticks))
    meter.start()  # clock 0 (started), 1 (first samples)
    power = meter.stop(begin=1.0)  # final samples at clock 2: one more reading each
    assert power["gpu_count"] == 4
    assert [g["index"] for g in power["gpus"]] == [0, 1, 2, 3]
    assert [g["energy_j"] for g in power["gpus"]] == pytest.approx([1.0, 2.0, 3.0, 4.0])
    assert power["energy_j"] == pytest.approx(10.0) and power["avg_w"] == pytest.approx(10.0)
    assert with_efficiency(power, "Offline", 1000, 1000)["samples_per_joule"] == pytest.approx(100.0)


def test_a_run_with_a_cpu_device_has_no_gpu_meter():
    assert isinstance(open_meter(("cpu",)), AbsentMeter)
