"""Comparison report rendered from golden studies: files, table numbers (read back from the
Markdown and the CSVs), the summary first, integrity of the figures, and one-line errors."""

from __future__ import annotations

import base64
import csv
import json
import re
import shlex
from pathlib import Path

import pytest

from harness.compare import main
from reports.document import parse_markdown_tables

STUDIES = ("t4", "l4", "l4x4", "cpu")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _render(golden, out, *names, args=()):
    assert main([*(str(golden(n)) for n in names), *args, "--output", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def report(golden, tmp_path_factory):
    return _render(golden, tmp_path_factory.mktemp("report") / "r", *STUDIES, args=("--baseline", "T4x1_torch"))


def _json(golden, name):
    return json.loads((golden(name) / "study.json").read_text())


def _table(report, column):
    """The report's table that has `column`."""
    tables = parse_markdown_tables((report / "report.md").read_text())
    (table,) = [t for t in tables if t and column in t[0]]
    return table


def _csv(report, name):
    with open(report / "csv" / f"{name}.csv", newline="") as f:
        return list(csv.DictReader(f))


def _stats(study, point_id):
    return next(p for p in study["points"] if p["id"] == point_id)["stats"]


def test_report_files_and_plots_exist(report):
    names = {p.name for p in report.iterdir()}
    assert {"report.md", "report.html", "throughput_vs_batch_resnet50.png", "latency_vs_load_resnet50.png",
            "perf_per_watt.png", "summary_resnet50.png", "csv"} <= names
    for png in report.glob("*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    assert not [p for p in report.iterdir() if p.name.startswith(".report-")]


def test_html_stands_alone_with_every_plot_embedded(report):
    html = (report / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]*)"', html)
    assert len(sources) == len(list(report.glob("*.png")))
    embedded = {base64.b64decode(s.removeprefix("data:image/png;base64,")) for s in sources}
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert embedded == {p.read_bytes() for p in report.glob("*.png")}
    assert "<link" not in html and "<script" not in html


def test_summary_then_contents_come_first(report):
    text = (report / "report.md").read_text()
    headings = re.findall(r"^## (.*)$", text, flags=re.M)
    assert headings[:3] == ["Summary", "Contents", "Systems"]
    summary = text.split("## Contents")[0]
    assert "**Question:** Which system and precision serve the most resnet50 queries per second per device at " \
           "p99 <= 15 ms?" in summary
    # L4 met 1,450 and missed 1,500; T4 met 820, missed 850: 1450 > 850, a clear winner.
    assert "**Answer:** L4x1_torch fp16 (torch): 1,450 queries/s per GPU" in summary
    assert "1.77x the runner-up T4x1_torch fp16 (torch)" in summary
    assert "1. L4x1_torch fp16 (torch)" in summary and "3. Margin: 1.77x" in summary
    contents = text.split("## Contents")[1].split("## Systems")[0]
    assert "- [p99 latency versus load (Server)](#p99-latency-versus-load-server)" in contents
    html = (report / "report.html").read_text()
    order = [html.index(tag) for tag in ('<section id="summary"', '<nav id="contents">', '<section id="systems">')]
    assert order == sorted(order)


def test_the_report_says_what_its_figures_rest_on(golden, edited_study, tmp_path):
    def plan(study):
        study["plan"] = {"repeats": 3, "scenarios": ["Offline", "Server"], "duration_ms": 1000, "search_ms": 600,
                         "confirm_ms": 3000, "base": {"skip_accuracy_gate": True}}
    out = _render(golden, tmp_path / "r", "cpu", args=())
    text = (out / "report.md").read_text()
    assert "**Rests on:** run lengths, weights and profile not recorded (study.json has no plan)" in text
    out = tmp_path / "planned"
    assert main([str(edited_study("t4", plan)), "--output", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert ("**Rests on:** 3 runs of 1 s per point, SLO search runs of 0.6 s, confirmed by a 3 s run, accuracy gate "
            "skipped, seeded random weights (not trained), quick run profile; 36 of 36 point runs VALID; a quick "
            "study, not submission-grade") in text
    (row,) = _table(out, "point run s")
    assert (row["point run s"], row["search run s"], row["confirmation run s"], row["accuracy gate"]) == \
        ("1.0", "0.6", "3.0", "skipped")


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
    row = by[("L4x4_torch", "fp16 (torch)", "Server max at p99 <= 15 ms")]
    assert row["ratio to T4x1_torch"] == f"{l4x4['slo_searches'][0]['max_qps'] / 4 / t4_max:.2f}x"
    assert row["system per device"] == "1,405.0" and "not confirmed" in row["system basis"]
    assert not any(r["system"] == "T4x1_torch" for r in rows)  # the baseline is not compared with itself


def test_knee_table_shows_the_studys_knees_and_per_gpu_peak(report, golden):
    rows = _table(report, "knee 90% (batch)")
    for name in ("t4", "l4x4"):
        study = _json(golden, name)
        for curve in study["curves"]:
            (row,) = [r for r in rows
                      if r["system"] == study["system"]["name"] and r["precision"] == curve["precision"]]
            assert (row["knee 90% (batch)"], row["knee 95% (batch)"]) == (str(curve["knee_90"]), str(curve["knee_95"]))
            assert row["peak per device"] == f"{curve['peak'] / study['system']['gpu_count']:,.1f}"


def test_throughput_table_has_every_batch_with_spread_and_run_count(report, golden):
    rows = _table(report, "batch size")
    s = _stats(_json(golden, "t4"), "resnet50-fp16-torch-Offline-bs32")["samples_per_s"]
    (row,) = [r for r in rows if r["system"] == "T4x1_torch" and r["precision"] == "fp16" and r["batch size"] == "32"]
    assert row["samples/s"] == f"{s['mean']:,.1f} ± {s['std']:,.1f} (n={s['n']})" and row["valid runs"] == "3 of 3"


def test_every_table_is_a_csv_with_bare_numbers(report, golden):
    assert sorted(p.name for p in (report / "csv").iterdir()) == sorted(
        f"{n}.csv" for n in ("summary_options", "run_basis", "systems", "commands", "offline_throughput", "knees",
                             "speedups", "cpu_ratio", "server_latency", "slo_searches", "efficiency",
                             "published_mlperf"))
    s = _stats(_json(golden, "l4x4"), "resnet50-fp16-torch-Offline-bs128")["samples_per_s"]
    (row,) = [r for r in _csv(report, "offline_throughput") if r["system"] == "L4x4_torch" and r["batch size"] == "128"]
    assert float(row["samples/s"]) == s["mean"] and float(row["samples/s std"]) == s["std"]
    assert int(row["samples/s n"]) == s["n"]
    assert float(row["per device"]) == s["mean"] / 4 and (row["valid runs"], row["valid runs of"]) == ("3", "3")
    cpu = [r for r in _csv(report, "efficiency") if r["system"] == "CPU_onnxruntime"]
    assert cpu and all(r["watts (all GPUs)"] == "" and r["samples/J"] == "" for r in cpu)  # absent, never 0
    assert all("," not in r["samples/s"] for r in _csv(report, "efficiency"))


def test_invalid_points_are_tabulated_apart(report):
    (row,) = [r for r in _table(report, "achieved samples/s") if r["system"] == "CPU_onnxruntime"]
    assert row["valid runs"] == "INVALID (0 of 3 runs valid)"
    html = (report / "report.html").read_text()
    invalid_rows = re.findall(r'<tr class="invalid">(.*?)</tr>', html)
    assert len(invalid_rows) == 2 and all("INVALID (0 of 3 runs valid)" in r for r in invalid_rows)


def test_cpu_study_power_is_absent_never_zero(report):
    rows = [r for r in _table(report, "power covers") if r["system"] == "CPU_onnxruntime"]
    assert rows and all(r["watts (all GPUs)"].startswith("n/a (power absent: CPU run") and r["samples/J"] == "n/a"
                        for r in rows)
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
    assert row["published per GPU"] == "12,882" and row["published basis"].startswith("L4, v3.1")
    assert "TensorRT INT8" in row["published basis"] and row["measured / published"] == f"{l4 / 12882:.2f}x"
    assert published[("CPU_onnxruntime", "fp32", "Offline")]["published per GPU"].startswith("n/a")
    assert "NOT LIKE-FOR-LIKE" in (report / "report.md").read_text()


def test_one_system_renders_no_empty_table(golden, tmp_path):
    out = _render(golden, tmp_path / "r", "t4")
    text = (out / "report.md").read_text()
    assert all(parse_markdown_tables(text)) and "Only one system (T4x1_torch)" in text
    html = (out / "report.html").read_text()
    assert all("<td" in table for table in html.split("<table")[1:])
    assert "Speed-up against T4x1_torch" in text and "ratio to T4x1_torch" not in text


def test_a_figure_from_one_run_has_no_spread(edited_study, tmp_path):
    def one_run(study):
        for point in study["points"]:
            point["runs"] = point["runs"][:1]
            for stat in point["stats"].values():
                if isinstance(stat, dict):
                    stat.update(std=0.0, n=1)
    out = tmp_path / "r"
    assert main([str(edited_study("t4", one_run)), "--output", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "± 0.0" not in text and "(n=1)" in text
    (row,) = [r for r in _table(out, "batch size") if r["batch size"] == "32" and r["precision"] == "fp16"]
    assert row["samples/s"].endswith("(n=1)") and "±" not in row["samples/s"]


def test_rendering_is_reproducible(report, golden, tmp_path):
    again = _render(golden, tmp_path / "again", *STUDIES, args=("--baseline", "T4x1_torch"))
    for name in ("report.md", "report.html", "perf_per_watt.png", "csv/efficiency.csv"):
        assert (again / name).read_bytes() == (report / name).read_bytes(), name


def test_existing_report_is_not_replaced_without_overwrite(golden, tmp_path, capsys):
    out = tmp_path / "r"
    (out / "csv").mkdir(parents=True)
    (out / "report.md").write_text("earlier")
    (out / "notes.txt").write_text("mine")
    (out / "csv" / "old_table.csv").write_text("stale")
    assert main([str(golden("cpu")), "--output", str(out)]) == 2
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    assert (out / "report.md").read_text() == "earlier"
    assert main([str(golden("cpu")), "--output", str(out), "--overwrite"]) == 0
    assert (out / "report.md").read_text() != "earlier" and (out / "notes.txt").read_text() == "mine"
    assert not (out / "csv" / "old_table.csv").exists() and (out / "csv" / "systems.csv").exists()
    # A CPU-only study: no power anywhere, so no efficiency plot, and the report still renders.
    assert not (out / "perf_per_watt.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--baseline", "A100x1"], "unknown baseline 'A100x1'; the studies hold T4x1_torch"),
    (["MISSING"], "no such study directory"),
    (["--model", "resnet101"], "no study measured 'resnet101'; they hold resnet50"),
])
def test_errors_are_one_line_with_nonzero_exit(golden, tmp_path, capsys, args, message):
    args = [a if a != "MISSING" else str(tmp_path / "missing") for a in args]
    assert main([str(golden("t4")), *args, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("deepgap: error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_malformed_plan_is_one_line(edited_study, tmp_path, capsys):
    def bad_plan(study):
        study["plan"] = {"repeats": 3, "scenarios": ["Offline"], "duration_ms": "1 s", "search_ms": 600,
                         "confirm_ms": 3000}
    assert main([str(edited_study("t4", bad_plan)), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "study.json: plan.duration_ms has the wrong type (str)" in err and err.count("\n") == 1


def test_corrupt_study_json_is_one_line(tmp_path, capsys):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "study.json").write_text('{"schema": "deepgap.study/1", "points": [')
    assert main([str(tmp_path / "s"), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "study.json: not valid JSON" in err and err.count("\n") == 1


ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = "docs/report-2026-12-04"
EXAMPLE_STUDIES = ("2026-11-26/h100", "2026-11-26/h200", "2026-11-26/cpu", "2026-12-04/h200-compiled")
DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


def _readme_commands(prefix: str) -> list[list[str]]:
    """The README's indented commands that start with `prefix`, continuation lines joined."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    return [shlex.split(line) for line in text.splitlines() if line.strip().startswith(prefix)]


def _without(argv: list[str], flag: str) -> list[str]:
    i = argv.index(flag)
    return argv[:i] + argv[i + 2:]


def test_readme_sweep_commands_are_the_ones_the_example_studies_recorded():
    commands = [c for c in _readme_commands("python -m harness.sweep") if "docs/studies/" in " ".join(c)]
    assert len(commands) == 3
    readme = {tuple(_without(c, "--study")) for c in commands}
    for name in EXAMPLE_STUDIES:
        recorded = shlex.split(json.loads((ROOT / f"docs/studies/{name}/study.json").read_text())["command"])
        assert tuple(_without(recorded, "--study")) in readme, name


def test_readme_compare_command_renders_the_shipped_example(tmp_path, monkeypatch):
    (command,) = [c for c in _readme_commands("python -m harness.compare") if EXAMPLE in c]
    argv = command[3:]
    assert argv[argv.index("--output") + 1] == EXAMPLE and "--overwrite" in argv
    argv = [a for a in _without(argv, "--output") if a != "--overwrite"]
    monkeypatch.chdir(ROOT)
    assert main([*argv, "--output", str(tmp_path / "r")]) == 0
    shipped, fresh = ROOT / EXAMPLE, tmp_path / "r"
    assert (fresh / "report.md").read_text() == (shipped / "report.md").read_text()
    assert DATA_URI.sub("PNG", (fresh / "report.html").read_text()) == \
        DATA_URI.sub("PNG", (shipped / "report.html").read_text())
    csvs = sorted(p.name for p in (fresh / "csv").iterdir())
    assert csvs == sorted(p.name for p in (shipped / "csv").iterdir())
    for name in csvs:
        assert (fresh / "csv" / name).read_text() == (shipped / "csv" / name).read_text(), name
    # Every PNG the Markdown links is shipped beside it, and no stale plot is left there.
    linked = set(re.findall(r"\]\(([^)]+\.png)\)", (shipped / "report.md").read_text()))
    assert linked == {p.name for p in shipped.glob("*.png")}


@pytest.mark.parametrize("tool", ["compare", "plan"])
@pytest.mark.parametrize("edit, field", [
    (lambda d: d["points"][0]["stats"]["samples_per_s"].update(mean=float("nan")), "points[0].stats.samples_per_s.mean"),
    (lambda d: d["points"][0]["runs"][0].update(samples_per_s=-120.0), "points[0].runs[0].samples_per_s"),
    (lambda d: d["curves"][0]["points"].update({"8": float("inf")}), "curves[0].points['8']"),
    (lambda d: d["slo_searches"][0].update(max_qps=-1), "slo_searches[0].max_qps"),
])
def test_hand_edited_impossible_figures_are_refused(edited_study, tmp_path, capsys, tool, edit, field):
    """NaN, infinite or negative figures in a study are one line naming the file and the
    field, in compare and in plan alike (both read studies through reports.studies)."""
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


# -- CPU studies from different hosts, the README's baseline, --json (issue 12) ----------------------


def test_two_cpu_studies_from_different_hosts_compare(golden, tmp_path, monkeypatch):
    """Was refused: both studies' system was 'CPU' ("both hold system 'CPU'"). A sweep now
    names a CPU study by its CPU model and count, so an AMD EPYC's and an Intel Xeon's
    studies differ and compare."""
    from runs import system as system_module
    from runs.config import CliRequest, resolve
    from studies.sweeper import study_system

    names = []
    for i, model in enumerate(("AMD EPYC 7B13 64-Core Processor", "Intel(R) Xeon(R) Platinum 8480+")):
        monkeypatch.setattr(system_module, "_cpu_model", lambda model=model: model)
        system = study_system(resolve(CliRequest(gpu="cpu", backend="null", model="resnet18", image_size=32)))
        data = json.loads((golden("cpu") / "study.json").read_text())
        data["system"] = {**data["system"], **{k: system[k] for k in ("name", "device", "gpu_count", "driver")}}
        folder = tmp_path / f"host{i}"
        folder.mkdir()
        (folder / "study.json").write_text(json.dumps(data))
        names.append(system["name"])
    assert names[0].startswith("CPU-AMDEPYC7B13-") and names[1].startswith("CPU-IntelXeonPlatinum8480-")
    out = tmp_path / "r"
    assert main([str(tmp_path / "host0"), str(tmp_path / "host1"), "--baseline", names[1], "--output", str(out)]) == 0
    with (out / "csv" / "systems.csv").open() as handle:
        assert [row["system"] for row in csv.DictReader(handle)] == names


def test_every_readme_compare_baseline_names_a_system_its_studies_hold(monkeypatch):
    # Was: `--baseline T4x1_torch` beside studies that hold H100x1, H200x1 and CPU.
    from harness.compare import build_parser, pick_baseline
    from reports.studies import load_studies

    monkeypatch.chdir(ROOT)
    commands = _readme_commands("python -m harness.compare")
    assert len(commands) >= 2
    for command in commands:
        args = build_parser().parse_args(command[3:])
        assert args.baseline is not None, command
        assert pick_baseline(load_studies(args.studies), args.baseline).name == args.baseline


def test_compare_json_names_the_report_and_its_answer(golden, tmp_path, capsys):
    out = tmp_path / "r"
    assert main([str(golden("t4")), str(golden("l4")), "--output", str(out), "--json", "-"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert (data["schema"], data["command"], data["exit_code"]) == ("deepgap.summary/1", "compare", 0)
    assert data["report"]["html"] == str(out / "report.html") and (out / "report.html").is_file()
    assert [s["system"] for s in data["studies"]] == ["T4x1_torch", "L4x1_torch"] and data["baseline"] == "T4x1_torch"
    assert data["answer"] in (out / "report.md").read_text()
    assert captured.err.startswith("report: ")
    assert main([str(golden("t4")), "--baseline", "nope", "--output", str(tmp_path / "r2"), "--json", "-"]) == 2
    failed = json.loads(capsys.readouterr().out)
    assert failed["exit_code"] == 2 and "unknown baseline 'nope'" in failed["error"]


def test_two_old_cpu_studies_named_cpu_from_different_hosts_compare(golden, tmp_path):
    """Studies written before CPU names carried the CPU model are named 'CPU'; two of them
    from different hosts were refused ("both hold system 'CPU'"). Their recorded CPU model
    and core count tell them apart."""
    for i, (model, cores) in enumerate((("AMD EPYC 7B13 64-Core Processor", 2), ("Intel(R) Xeon(R) Processor", 2))):
        data = json.loads((golden("cpu") / "study.json").read_text())
        data["system"] = {**data["system"], "name": "CPU",
                          "description": {"host_processor_model_name": model, "host_processor_core_count": cores}}
        (tmp_path / f"host{i}").mkdir()
        (tmp_path / f"host{i}" / "study.json").write_text(json.dumps(data))
    out = tmp_path / "r"
    assert main([str(tmp_path / "host0"), str(tmp_path / "host1"), "--baseline", "CPU-IntelXeon-2cpu",
                 "--output", str(out)]) == 0
    with (out / "csv" / "systems.csv").open() as handle:
        assert [row["system"] for row in csv.DictReader(handle)] == ["CPU-AMDEPYC7B13-2cpu", "CPU-IntelXeon-2cpu"]
