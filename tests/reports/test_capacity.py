"""Capacity planner: the arithmetic on fixed inputs, the plan from golden studies, the CLI's errors."""

from __future__ import annotations

import json
import math

import pytest

from reports.capacity import (LoadPower, PlanRequest, capacity_at, devices_needed, interpolate_watts,
                              kwh_per_million, make_plan, power_at, usd_per_million)
from reports.constraints import check, parse_slo
from studies.slo import Slo
from reports.document import parse_markdown_tables
from plumbing.errors import ConfigError
from harness.plan import main
from reports.refdata import load_prices
from reports.studies import load_study


@pytest.mark.parametrize("target, capacity, headroom, expected", [
    (20000, 1000, 0.2, 25),   # 20000 / 800
    (20001, 1000, 0.2, 26),
    (3000, 1000, 0.0, 3),     # exact: float noise must not add a device
    (0.3 * 10, 0.1 * 10, 0.0, 3),
    (1, 1000, 0.5, 1),
])
def test_devices_needed_keeps_each_device_below_one_minus_headroom(target, capacity, headroom, expected):
    assert devices_needed(target, capacity, headroom) == expected


def test_devices_needed_refuses_impossible_headroom():
    with pytest.raises(ConfigError, match="headroom"):
        devices_needed(100, 10, 1.0)


def test_energy_and_cost_per_million():
    # 1000 W for 1e6 inferences at 20000/s: 50 s -> 50 kJ = 0.013889 kWh
    assert kwh_per_million(1000.0, 20000.0) == pytest.approx(50_000 / 3.6e6)
    # 10 USD/hour at 1000/s: 3.6e6 inferences an hour -> 2.7778 USD per million
    assert usd_per_million(10.0, 1000.0) == pytest.approx(10 / 3.6)


def test_watts_interpolate_between_measured_loads_and_say_so_outside():
    curve = [LoadPower(800, 62.0, "c"), LoadPower(400, 38.0, "a"), LoadPower(600, 50.0, "b")]
    watts, how = interpolate_watts(500, curve)
    assert watts == pytest.approx(44.0) and "points a and b" in how
    watts, how = interpolate_watts(100, curve)
    assert watts == 38.0 and "upper bound" in how
    watts, how = interpolate_watts(900, curve)
    assert watts == 62.0 and "likely low" in how


def test_constraint_check_is_pass_fail_with_margin():
    result = check({"p99_latency_ms": {"max": 15.0}}, {"p99_latency_ms": 12.0})
    assert result.passed and result.margin == pytest.approx(0.2)
    result = check({"p99_latency_ms": {"max": 15.0}, "qps": {"min": 100}}, {"p99_latency_ms": 18.0, "qps": 150})
    assert not result.passed and result.margin == pytest.approx(-0.2)
    result = check({"p99_latency_ms": {"max": 15.0}}, {"p99_latency_ms": None})
    assert not result.passed and result.missing == ("p99_latency_ms",)


@pytest.mark.parametrize("text, expected", [("p99:15ms", Slo(99.0, 15.0)), ("P90:2.5", Slo(90.0, 2.5)),
                                            ("p99:0.015s", Slo(99.0, 15.0)), ("p50:800us", Slo(50.0, 0.8))])
def test_slo_parses(text, expected):
    assert parse_slo(text) == expected


@pytest.mark.parametrize("text", ["p99", "99:15ms", "p99:15h", "p95:15ms", "p99:0ms"])
def test_unknown_slo_is_a_config_error(text):
    with pytest.raises(ConfigError, match="unknown SLO"):
        parse_slo(text)


def _plan(golden, *names, qps=20000.0, slo="p99:15ms", **kw):
    studies = [load_study(golden(n)) for n in names]
    return make_plan(studies, PlanRequest("resnet50", qps, parse_slo(slo), **kw), load_prices())


def test_plan_uses_measured_multi_gpu_scaling_and_ranks_by_cost(golden):
    plan = _plan(golden, "t4", "l4", "l4x4", "cpu", headroom=0.2, spares=1)
    l4, t4 = plan.ranked
    # L4: the 4-GPU host's search found 5620 QPS but never confirmed it, so the plan steps down
    # to its ladder's 5600 rung, whose every run met the SLO: 1400 per GPU;
    # 20000 / (1400 x 0.8) = 17.9 -> 18, N+1 = 19.
    assert (l4.device, l4.system, l4.kind) == ("NVIDIA L4", "L4x4_torch", "stepped down")
    assert l4.qps_per_device == pytest.approx(1400.0) and (l4.devices, l4.deployed) == (18, 19)
    assert l4.evidence.load == 5600 and l4.evidence.count() == "4 of 4"
    assert l4.usd_per_hour == pytest.approx(19 * 0.805)
    assert l4.usd_per_million == pytest.approx(19 * 0.805 / (20000 * 3600) * 1e6)
    # 1111/s per GPU lies between the 4-GPU host's ladder points at 4400 and 5600 system QPS.
    per_gpu = 20000 / 18
    lo, hi = (4400 * 0.999, 222.0), (5600 * 0.999, 274.0)
    share = (per_gpu * 4 - lo[0]) / (hi[0] - lo[0])
    expected_watts = 18 * (lo[1] + share * (hi[1] - lo[1])) / 4
    assert l4.watts == pytest.approx(expected_watts, rel=2e-3)
    assert l4.kwh_per_million == pytest.approx(l4.watts / 20000 * 1e6 / 3.6e6)
    assert any("measured scaling" in b and "97% of one GPU" in b for b in l4.basis)
    assert any("NOT confirmed" in b for b in l4.basis)
    # T4: one GPU measured, so the linear-scaling assumption is stated.
    assert (t4.devices, t4.deployed) == (math.ceil(20000 / (820 * 0.8)), 32)
    assert any("ASSUMPTION: linear scaling" in b for b in t4.basis)
    assert any(b.startswith("price:") and "editable assumption" in b for b in t4.basis)
    # CPU and fp32 have no search at this SLO: listed as needing one, never given figures.
    unplanned = {(o.device, o.precision): o for o in plan.unplanned}
    assert "found no load that met it" in unplanned[("CPU", "fp32")].basis[0]
    assert all(o.devices is None for o in plan.unplanned)


def test_slo_without_a_search_plans_from_ladder_points_as_a_labelled_lower_bound(golden):
    plan = _plan(golden, "t4", qps=5000, slo="p99:10ms")
    (t4,) = plan.ranked
    assert t4.kind == "lower bound" and "LOWER BOUND" in t4.basis[0]
    # The 600 QPS rung (p99 8.9 ms) is the best within 10 ms; its slowest run: 599.4 x 0.988.
    assert t4.qps_per_device == pytest.approx(round(600 * 0.999 * 0.988, 2))


def test_missing_price_is_absent_not_zero_and_ranks_last(golden, tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text("entries:\n  - {type: T4, match: 'T4', usd_per_hour: 0.5, source: test, as_of: 2026-11}\n")
    studies = [load_study(golden(n)) for n in ("t4", "l4")]
    plan = make_plan(studies, PlanRequest("resnet50", 20000, parse_slo("p99:15ms")), load_prices(prices))
    assert [o.device for o in plan.ranked] == ["Tesla T4", "NVIDIA L4"]
    assert plan.ranked[1].usd_per_hour is None and "no entry" in plan.ranked[1].basis[-1]


def test_power_falls_back_to_offline_watts_scaled_by_load_and_says_so(golden):
    t4 = load_study(golden("t4"))
    estimate = power_at(t4, "resnet50", "fp32", "torch", 200.0)
    top = t4.point("resnet50-fp32-torch-Offline-bs128").stats
    assert estimate.watts_per_device == pytest.approx(top.watts.mean * 200.0 / top.samples_per_s.mean)
    assert "ASSUMPTION" in estimate.basis and "upper bound" in estimate.basis
    cpu = power_at(load_study(golden("cpu")), "resnet50", "fp32", "onnxruntime", 10.0)
    assert cpu.watts_per_device is None and "NVML" in cpu.basis


def test_capacity_reason_when_no_server_points(golden):
    reason = capacity_at(load_study(golden("t4")), "resnet50", "fp32", "torch", parse_slo("p99:15ms"))
    assert isinstance(reason, str) and "no Server points measured" in reason


def test_plan_cli_prints_a_ranked_table(golden, capsys):
    assert main(["--qps", "20000", "--slo", "p99:15ms", str(golden("t4")), str(golden("l4"))]) == 0
    out = capsys.readouterr().out
    rows = parse_markdown_tables(out)[0]
    assert [r["device"] for r in rows] == ["NVIDIA L4", "Tesla T4"]
    assert rows[0]["N (headroom)"] == "18" and rows[0]["N+1"] == "19" and rows[0]["USD per hour"] == "15.30"


@pytest.mark.parametrize("args, message", [
    (["--slo", "p95:15ms"], "unknown SLO 'p95:15ms'"),
    (["--slo", "p99:1ms"], "no measurement supports p99 <= 1 ms"),
    (["--headroom", "1.5"], "argument --headroom"),
    (["--model", "resnet18"], "no measurements of resnet18"),
])
def test_plan_cli_errors_are_one_line(golden, capsys, args, message):
    assert main(["--qps", "1000", *args, str(golden("t4"))]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err and captured.err.count("\n") == 1
    assert captured.err.startswith("deepgap: error: ")


def test_plan_cli_missing_or_corrupt_study(tmp_path, capsys):
    assert main(["--qps", "1000", str(tmp_path / "nothing")]) == 2
    assert "no such study directory" in capsys.readouterr().err
    (tmp_path / "study.json").write_text("{not json")
    assert main(["--qps", "1000", str(tmp_path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_cpu_plan_without_power_prints_absent_not_zero(edited_study, golden, capsys):
    def searched_at_500ms(data):
        data["slo_searches"][0].update(latency_ms=500.0, max_qps=20.0, confirmed=True)
        data["slo_searches"][0]["attempts"][0]["valid"] = True  # p99 420 ms: within 500
        for point in data["points"]:
            for run in point["runs"] if point["scenario"] == "Server" else ():
                run["valid"] = True

    cpu = edited_study("cpu", searched_at_500ms)
    assert main(["--qps", "100", "--slo", "p99:500ms", "--headroom", "0", str(cpu)]) == 0
    out = capsys.readouterr().out
    (row,) = parse_markdown_tables(out)[0]
    # 100 / 20 per host = 5 hosts, +1 spare; no NVML on a CPU: watts and energy are n/a.
    assert (row["device"], row["N (headroom)"], row["N+1"]) == ("CPU", "5", "6")
    assert row["GPU-only watts, N active, total"] == "n/a" and row["kWh per 1M"] == "n/a"
    assert row["USD per hour"] == f"{6 * 0.101:.2f}"
    assert "power absent in CPU_onnxruntime: CPU run: NVML measures NVIDIA GPUs only" in out
    assert "linear scaling across hosts" in out


# ---- a capacity stands only where the runs at its load met the SLO --------------------------

def _ladder_top(p99s, valid=None):
    """Golden T4 with its search recorded as the sweep records one today: phases, a 3 s
    confirmation at the 820 QPS maximum that passed, and the ladder's 1 s repeats at 820."""
    valid = valid or [True] * len(p99s)

    def edit(data):
        search = data["slo_searches"][0]
        for attempt in search["attempts"]:
            attempt.update(phase="search", duration_ms=600)
        search["attempts"].append({"target_qps": 820, "duration_ms": 3000, "valid": True, "phase": "confirm",
                                   "latency_ms": {"p50": 6.5, "p90": 11.6, "p99": 14.5}})
        rung = json.loads(json.dumps(next(p for p in data["points"] if p["id"] == search["ladder"][-1])))
        rung.update(id="resnet50-fp16-torch-Server-q820", target_qps=820)
        for run, p99, ok in zip(rung["runs"], p99s, valid):
            run["valid"], run["latency_ms"]["p99"] = ok, p99
        data["points"].append(rung)
        search["ladder"].append(rung["id"])
        data["plan"] = {"duration_ms": 1000, "search_ms": 600, "confirm_ms": 3000, "repeats": 3,
                        "scenarios": ["Server"], "base": {"skip_accuracy_gate": True}}
    return edit


def test_a_confirmed_maximum_whose_repeats_fail_is_not_confirmed_and_shows_the_count(edited_study, capsys):
    # As the shipped H100 fp32 search: confirmation passed, 1 of the ladder's 3 repeats at that load met the SLO.
    t4 = edited_study("t4", _ladder_top([14.4, 16.4, 17.9], valid=[True, False, False]))
    study = load_study(t4)
    capacity = capacity_at(study, "resnet50", "fp16", "torch", parse_slo("p99:15ms"))
    assert capacity.kind == "stepped down" and capacity.kind != "confirmed"
    assert capacity.qps_per_device == 800  # the highest rung whose 3 runs all met it
    assert "ladder repeat 1 of 3 at 1 s" in capacity.basis and "2 of 4 runs at 820 QPS" in capacity.basis
    assert main(["--qps", "2000", str(t4)]) == 0
    out = capsys.readouterr().out
    row = parse_markdown_tables(out)[0][0]
    assert row["capacity basis"] == "stepped down" and row["max QPS per device"] == "800"
    assert row["runs within SLO at that load"] == "3 of 3"
    assert "ladder repeat 1 of 3" in out and "confirmed:" not in out


def test_a_stated_pass_fraction_lets_the_maximum_stand_with_its_count(edited_study):
    study = load_study(edited_study("t4", _ladder_top([14.4, 16.4, 14.9], valid=[True, False, True])))
    slo = parse_slo("p99:15ms")
    assert capacity_at(study, "resnet50", "fp16", "torch", slo).qps_per_device == 800  # 3/4 is not every run
    capacity = capacity_at(study, "resnet50", "fp16", "torch", slo, pass_fraction=0.75)
    assert (capacity.kind, capacity.qps_per_device, capacity.evidence.count()) == ("confirmed", 820, "3 of 4")
    assert ("confirmed: 3 of 4 runs at 820 QPS (confirmation 1 of 1 at 3 s; ladder repeat 2 of 3 at 1 s)"
            in capacity.basis)


def test_every_repeat_passing_confirms_the_maximum(edited_study):
    study = load_study(edited_study("t4", _ladder_top([14.4, 14.1, 14.9])))
    capacity = capacity_at(study, "resnet50", "fp16", "torch", parse_slo("p99:15ms"))
    assert (capacity.kind, capacity.qps_per_device, capacity.evidence.count()) == ("confirmed", 820, "4 of 4")


def test_a_maximum_no_run_supports_is_unconfirmed_and_ranks_after_lower_bounds(edited_study, golden):
    def failing(data):
        _ladder_top([16.0, 16.4, 17.9], valid=[False] * 3)(data)
        data["slo_searches"][0]["attempts"][-1].update(valid=False)
        data["slo_searches"][0]["confirmed"] = False
        for point in data["points"]:
            for run in point["runs"] if point["scenario"] == "Server" else ():
                run["valid"] = False
    study = load_study(edited_study("t4", failing))
    capacity = capacity_at(study, "resnet50", "fp16", "torch", parse_slo("p99:15ms"))
    assert capacity.kind == "unconfirmed" and "NOT CONFIRMED" in capacity.basis
    l4 = load_study(golden("l4"))
    plan = make_plan([study, l4], PlanRequest("resnet50", 2000, parse_slo("p99:15ms")), load_prices())
    assert [o.kind for o in plan.ranked] == ["confirmed", "unconfirmed"]


def test_pass_fraction_must_be_a_share(golden):
    with pytest.raises(ConfigError, match="pass fraction"):
        PlanRequest("resnet50", 100, parse_slo("p99:15ms"), pass_fraction=0.0)


def test_an_eager_and_a_compiled_study_of_one_card_are_two_options_named_by_stack(edited_study, golden):
    def compiled(data):
        data["system"].update(name="T4x1-inductor", torch_compile="default")
    eager, inductor = load_study(golden("t4")), load_study(edited_study("t4", compiled))
    plan = make_plan([eager, inductor], PlanRequest("resnet50", 2000, parse_slo("p99:15ms")), load_prices())
    by_stack = {(o.device, o.precision, o.backend): o.system for o in plan.ranked}
    assert by_stack == {("Tesla T4", "fp16", "torch"): eager.name,
                        ("Tesla T4", "fp16", "torch-inductor"): "T4x1-inductor"}
