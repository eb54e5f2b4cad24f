"""study.json reading: typed, strict about the fields used, tolerant of extra ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from plumbing.errors import StudyError
from reports.studies import load_studies, load_study


def test_golden_study_reads_into_typed_records(golden):
    study = load_study(golden("t4"))
    assert study.name == "T4x1_torch" and study.system.device == "Tesla T4" and study.system.devices == 1
    curve = next(c for c in study.curves if c.precision == "fp16")
    # JSON keys are strings; the reader gives batch sizes as ints, in order.
    assert list(curve.points) == [1, 8, 32, 128] and curve.knee_90 == 32 and curve.knee_95 == 128
    search = study.slo_searches[0]
    assert search.max_qps == 820.0 and search.confirmed and len(search.attempts) == 6
    ladder = [study.point(i) for i in search.ladder]
    assert [p.target_qps for p in ladder] == [400, 600, 800]
    assert ladder[0].stats.watts.n == 3 and ladder[0].power_label() == "GPU-only"


def test_cpu_study_has_power_absent_with_its_reason(golden):
    study = load_study(golden("cpu"))
    assert study.system.is_cpu and study.system.unit == "host" and study.system.devices == 1
    point = study.select("Offline")[0]
    assert point.stats.watts is None and point.stats.samples_per_joule is None
    assert "NVML" in point.power_absent_reason()


def test_study_json_path_is_accepted_as_well_as_its_directory(golden):
    assert load_study(golden("l4") / "study.json").name == "L4x1_torch"


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(schema="deepgap.study/2"), "schema 'deepgap.study/2'"),
    (lambda d: d["system"].pop("gpu_count"), "system.gpu_count is missing"),
    (lambda d: d["points"][0]["stats"]["samples_per_s"].update(mean="fast"), "points[0].stats.samples_per_s.mean has the wrong type"),
    (lambda d: d["points"][0].update(scenario="Batch"), "points[0].scenario 'Batch'"),
    (lambda d: d["points"][1].update(id=d["points"][0]["id"]), "appears twice"),
    (lambda d: d["slo_searches"][0]["ladder"].append("nope"), "unknown point 'nope'"),
    (lambda d: d["curves"][0]["points"].update(big=1.0), "'big' is not a batch size"),
    (lambda d: d["points"][0]["runs"][0].update(valid=1), "runs[0].valid has the wrong type"),
])
def test_malformed_study_is_one_line_naming_file_and_field(edited_study, edit, message):
    path = edited_study("t4", edit)
    with pytest.raises(StudyError) as info:
        load_study(path)
    text = str(info.value)
    assert message in text and "study.json" in text and "\n" not in text


def test_missing_and_corrupt_study_files(tmp_path):
    with pytest.raises(StudyError, match="no such study directory"):
        load_study(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StudyError, match="no study.json"):
        load_study(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "study.json").write_text('{"schema": "deepgap.study/1", ')
    with pytest.raises(StudyError, match="not valid JSON"):
        load_study(tmp_path / "bad")


def test_two_studies_of_one_system_name_are_refused(golden, edited_study):
    copy = edited_study("t4", lambda d: None)
    with pytest.raises(StudyError, match="both hold system 'T4x1_torch'"):
        load_studies([golden("t4"), copy])


def test_each_search_attempt_reads_its_phase_where_recorded(golden):
    assert {a.phase for a in load_study(golden("t4")).slo_searches[0].attempts} == {None}  # an older study
    study = load_study(Path(__file__).resolve().parents[2] / "docs/studies/2026-11-26/h100")
    assert {a.phase for a in study.slo_searches[0].attempts} == {"search", "confirm"}
