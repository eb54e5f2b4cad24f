"""Comparison report rendered from golden studies: files, table numbers (read back from the
Markdown), absent power, and one-line errors."""

from __future__ import annotations

import json

import pytest

from harness.compare import main
from harness.document import parse_markdown_tables

STUDIES = ("t4", "l4", "l4x4", "cpu")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(golden, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "r"
    assert main([*(str(golden(n)) for n in STUDIES), "--baseline", "T4x1_torch", "--output", str(out)]) == 0
    return out


def _json(golden, name):
    return json.loads((golden(name) / "study.json").read_text())


def _table(report, column):
    """The report's table that has `column`."""
    tables = parse_markdown_tables((report / "report.md").read_text())
    (table,) = [t for t in tables if t and column in t[0]]
    return table


def _stats(study, point_id):
    return next(p for p in study["points"] if p["id"] == point_id)["stats"]


def test_report_files_and_plots_exist(report):
    names = {p.name for p in report.iterdir()}
    assert {"report.md", "report.html", "throughput_vs_batch_resnet50.png", "latency_vs_load_resnet50.png",
            "perf_per_watt.png"} <= names
    for png in report.glob("*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    html = (report / "report.html").read_text()
    for png in report.glob("*.png"):
        assert f'<img src="{png.name}"' in html
    assert not [p for p in report.iterdir() if p.name.startswith(".report-")]


def test_speedup_table_holds_per_gpu_ratios_to_the_baseline(report, golden):
    rows = _table(report, "ratio to T4x1_torch")
    by = {(r["system"], r["precision"], r["metric"]): r for r in rows}
    t4, l4, l4x4 = _json(golden, "t4"), _json(golden, "l4"), _json(golden, "l4x4")
    t4_peak = _stats(t4, "resnet50-fp16-torch-Offline-bs128")["samples_per_s"]
    l4_peak = _stats(l4, "resnet50-fp16-torch-Offline-bs128")["samples_per_s"]
    value = l4_peak["mean"] / t4_peak["mean"]
    spread = value * ((l4_peak["std"] / l4_peak["mean"]) ** 2 + (t4_peak["std"] / t4_peak["mean"]) ** 2) ** 0.5
    assert by[("L4x1_torch", "fp16 (torch)", "Offline peak")]["ratio to T4x1_torch"] == f"{value:.2f}x ± {spread:.2f}"
    # Server: each study's search maximum per GPU; L4x4 divides by its 4 GPUs.
    t4_max = t4["slo_searches"][0]["max_qps"]
    assert by[("L4x1_torch", "fp16 (torch)", "Server max at p99 <= 15 ms")]["ratio to T4x1_torch"] == \
        f"{l4['slo_searches'][0]['max_qps'] / t4_max:.2f}x"
    assert by[("L4x4_torch", "fp16 (torch)", "Server max at p99 <= 15 ms")]["ratio to T4x1_torch"] == \
        f"{l4x4['slo_searches'][0]['max_qps'] / 4 / t4_max:.2f}x"
    assert by[("L4x4_torch", "fp16 (torch)", "Server max at p99 <= 15 ms")]["system per device"].startswith("1,405.0 /s per GPU")
    assert not any(r["system"] == "T4x1_torch" for r in rows)  # the baseline is not compared with itself


def test_knee_table_shows_the_studys_knees_and_per_gpu_peak(report, golden):
    rows = _table(report, "knee 90% (batch)")
    for name in ("t4", "l4x4"):
        study = _json(golden, name)
        for curve in study["curves"]:
            (row,) = [r for r in rows if r["system"] == study["system"]["name"] and r["precision"] == curve["precision"]]
            assert (row["knee 90% (batch)"], row["knee 95% (batch)"]) == (str(curve["knee_90"]), str(curve["knee_95"]))
            assert row["peak per device"] == f"{curve['peak'] / study['system']['gpu_count']:,.1f}"


def test_throughput_table_has_every_batch_with_spread_and_run_count(report, golden):
    rows = _table(report, "batch size")
    t4 = _json(golden, "t4")
    s = _stats(t4, "resnet50-fp16-torch-Offline-bs32")["samples_per_s"]
    (row,) = [r for r in rows if r["system"] == "T4x1_torch" and r["precision"] == "fp16" and r["batch size"] == "32"]
    assert row["samples/s"] == f"{s['mean']:,.1f} ± {s['std']:,.1f} (n={s['n']})" and row["valid runs"] == "3/3"


def test_cpu_study_power_is_absent_never_zero(report):
    rows = [r for r in _table(report, "power covers") if r["system"] == "CPU_onnxruntime"]
    assert rows and all(r["watts (all GPUs)"].startswith("n/a (power absent: CPU run") and r["efficiency"] == "n/a" for r in rows)
    gpu = [r for r in _table(report, "power covers") if r["system"] == "T4x1_torch"]
    assert all(r["power covers"] == "GPU-only" for r in gpu)
    text = (report / "report.md").read_text()
    assert "power absent (not plotted): CPU_onnxruntime" in text
    systems = {r["system"]: r for r in _table(report, "driver")}
    assert systems["CPU_onnxruntime"]["driver"] == "n/a" and systems["CPU_onnxruntime"]["GPUs"] == "0 (CPU)"
    assert "torch 2.11.0+cu130" in systems["L4x1_torch"]["software"]


def test_cpu_ratio_and_published_results(report, golden):
    cpu = _stats(_json(golden, "cpu"), "resnet50-fp32-onnxruntime-Offline-bs16")["samples_per_s"]["mean"]
    l4 = _stats(_json(golden, "l4"), "resnet50-fp16-torch-Offline-bs128")["samples_per_s"]["mean"]
    (row,) = [r for r in _table(report, "CPU_onnxruntime best per host") if r["system"] == "L4x1_torch"]
    assert row["ratio"].startswith(f"{l4 / cpu:.2f}x")
    published = {(r["system"], r["precision"], r["metric"]): r for r in _table(report, "published per GPU")}
    row = published[("L4x1_torch", "fp16", "Offline")]
    assert row["published per GPU"].startswith("12,882 /s (L4, v3.1") and "TensorRT INT8" in row["published per GPU"]
    assert row["measured / published"] == f"{l4 / 12882:.2f}x"
    assert published[("CPU_onnxruntime", "fp32", "Offline")]["published per GPU"].startswith("n/a")
    assert "NOT LIKE-FOR-LIKE" in (report / "report.md").read_text()


def test_rendering_is_reproducible(report, golden, tmp_path):
    again = tmp_path / "again"
    assert main([*(str(golden(n)) for n in STUDIES), "--baseline", "T4x1_torch", "--output", str(again)]) == 0
    for name in ("report.md", "report.html", "perf_per_watt.png"):
        assert (again / name).read_bytes() == (report / name).read_bytes(), name


def test_existing_report_is_not_replaced_without_overwrite(golden, tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "report.md").write_text("earlier")
    (out / "notes.txt").write_text("mine")
    assert main([str(golden("cpu")), "--output", str(out)]) == 2
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    assert (out / "report.md").read_text() == "earlier"
    assert main([str(golden("cpu")), "--output", str(out), "--overwrite"]) == 0
    assert (out / "report.md").read_text() != "earlier" and (out / "notes.txt").read_text() == "mine"
    # A CPU-only study: no power anywhere, so no efficiency plot, and the report still renders.
    assert not (out / "perf_per_watt.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--baseline", "A100x1"], "unknown baseline 'A100x1'; the studies hold T4x1_torch"),
    (["MISSING"], "no such study directory"),
])
def test_errors_are_one_line_with_nonzero_exit(golden, tmp_path, capsys, args, message):
    args = [a if a != "MISSING" else str(tmp_path / "missing") for a in args]
    assert main([str(golden("t4")), *args, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("deepgap: error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_corrupt_study_json_is_one_line(tmp_path, capsys):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "study.json").write_text('{"schema": "deepgap.study/1", "points": [')
    assert main([str(tmp_path / "s"), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "study.json: not valid JSON" in err and err.count("\n") == 1


@pytest.mark.parametrize("tool", ["compare", "plan"])
@pytest.mark.parametrize("edit, field", [
    (lambda d: d["points"][0]["stats"]["samples_per_s"].update(mean=float("nan")), "points[0].stats.samples_per_s.mean"),
    (lambda d: d["points"][0]["runs"][0].update(samples_per_s=-120.0), "points[0].runs[0].samples_per_s"),
    (lambda d: d["curves"][0]["points"].update({"8": float("inf")}), "curves[0].points['8']"),
    (lambda d: d["slo_searches"][0].update(max_qps=-1), "slo_searches[0].max_qps"),
])
def test_hand_edited_impossible_figures_are_refused(edited_study, tmp_path, capsys, tool, edit, field):
    """NaN, infinite or negative figures in a study are one line naming the file and the
    field, in compare and in plan alike (both read studies through harness.studies)."""
    from harness.plan import main as plan_main

    study = edited_study("t4", edit)
    if tool == "compare":
        code = main([str(study), "--output", str(tmp_path / "out")])
    else:
        code = plan_main(["--qps", "1000", str(study)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("deepgap: error: ") and err.count("\n") == 1, err
    assert str(study / "study.json") in err and field in err and "finite and not negative" in err
    assert not (tmp_path / "out").exists()
