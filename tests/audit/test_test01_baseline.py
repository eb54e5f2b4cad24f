"""TEST01 Part III (MLPerf's non-deterministic mode) on small hand-written logs: the
baseline restricted to the logged samples, both scores, MLPerf's delta rule, the files
and the reference chosen for them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audit.compliance import verify_test01_accuracy
from audit.test01_baseline import (ACCURACY_DIR_FILES, ALLOWED_DELTA_PERCENT, EXPECTED_FILE, Expected,
                                   accuracy_delta_percent, evaluate, expected_classes, judge_files, read_figure)
from runs.accuracy import SEEDED_REASON, AccuracyResult, reference_top1
from runs.config import CliRequest, model_spec, resolve
from sut.data import SyntheticDataset
from tests.audit.test_compliance import write_accuracy_log

SAMPLES = 200
LABELS = {i: (7 * i) % 1000 for i in range(SAMPLES)}


def logs(tmp_path: Path, flipped: int, wrong_in_accuracy_run: int = 0) -> tuple[Path, Path]:
    """The accuracy run answers every sample (the first `wrong_in_accuracy_run` wrongly);
    the TEST01 run logs every sample twice, the first `flipped` answered differently."""
    answers = {i: (LABELS[i] + 1) % 1000 if i < wrong_in_accuracy_run else LABELS[i] for i in range(SAMPLES)}
    reference = write_accuracy_log(tmp_path / "accuracy.json", list(answers.items()))
    logged = [(i, (answers[i] + 1) % 1000 if i < flipped else answers[i]) for i in range(SAMPLES)]
    return reference, write_accuracy_log(tmp_path / "test01.json", logged + logged)


LABELLED = Expected("accuracy", "the dataset's labels", LABELS)


def test_delta_is_mlperfs_relative_difference():
    assert accuracy_delta_percent(100.0, 99.5) == pytest.approx(0.5025, abs=1e-4)
    assert accuracy_delta_percent(76.0, 76.5) == pytest.approx(0.6536, abs=1e-4)
    assert accuracy_delta_percent(100.0, 0.0) is None and accuracy_delta_percent(0.0, 50.0) is None
    assert ALLOWED_DELTA_PERCENT == 1.0


# 1 of 200: |1 - 100/99.5| = 0.503%; 2 of 200: |1 - 100/99| = 1.010%, just over MLPerf's 1%.
@pytest.mark.parametrize("flipped, passed", [(1, True), (2, False), (40, False)])
def test_labelled_part3_scores_the_logged_samples_once_each(tmp_path, flipped, passed):
    reference, test = logs(tmp_path, flipped)
    part3 = evaluate(reference, test, LABELLED)
    assert (part3.baseline.good, part3.baseline.total) == (SAMPLES, SAMPLES)  # duplicates counted once
    assert (part3.compliance.good, part3.compliance.total) == (SAMPLES - flipped, SAMPLES)
    assert part3.passed is passed, part3.summary()
    if not passed:
        assert "exceeds 1%" in part3.summary()


def test_baseline_keeps_only_the_samples_test01_logged(tmp_path):
    reference = write_accuracy_log(tmp_path / "accuracy.json", [(i, LABELS[i] if i < 150 else 0) for i in range(SAMPLES)])
    test = write_accuracy_log(tmp_path / "test01.json", [(i, LABELS[i]) for i in range(100)])
    part3 = evaluate(reference, test, LABELLED)
    # Samples 150..199 are wrong in the accuracy run but were never logged: not in the baseline.
    assert part3.baseline.line() == "accuracy=100.000%, good=100, total=100"


def test_a_zero_figure_cannot_be_compared(tmp_path):
    reference, test = logs(tmp_path, flipped=SAMPLES)
    part3 = evaluate(reference, test, LABELLED)
    assert not part3.passed and "cannot be compared" in part3.summary()


def test_test01_verdict_passes_by_part3_but_its_file_keeps_the_byte_comparison(tmp_path):
    reference, test = logs(tmp_path, flipped=1)
    expected = tmp_path / EXPECTED_FILE
    assert "no expected_top1.json" in " ".join(verify_test01_accuracy(reference, test, expected).reasons)
    LABELLED.write(expected)
    verdict = verify_test01_accuracy(reference, test, expected)
    assert verdict.passed and verdict.part3 is not None and not verdict.stated
    text = verdict.text()
    assert text.endswith("TEST FAIL\n")  # as MLPerf's verify_accuracy.py writes it
    assert "non-deterministic mode (TEST01 Part III)" in text and "accuracy delta 0.503% <= 1%" in text
    assert "2 logged responses (1 samples) differ" in verdict.line()
    # Without Part III's reference the old verdict stands.
    assert not verify_test01_accuracy(reference, test).passed


def test_part3_never_covers_samples_the_accuracy_run_never_answered(tmp_path):
    reference = write_accuracy_log(tmp_path / "accuracy.json", [(i, LABELS[i]) for i in range(100)])
    test = write_accuracy_log(tmp_path / "test01.json", [(0, 5), (150, LABELS[150])])
    LABELLED.write(tmp_path / EXPECTED_FILE)
    verdict = verify_test01_accuracy(reference, test, tmp_path / EXPECTED_FILE)
    assert not verdict.passed and verdict.part3 is None and "never answered" in verdict.line()


def test_files_are_mlperfs_and_the_file_rule_reads_them(tmp_path):
    reference, test = logs(tmp_path, flipped=1)
    part3 = evaluate(reference, test, LABELLED)
    part3.write(tmp_path / "TEST01")
    folder = tmp_path / "TEST01" / "accuracy"
    assert {p.name for p in folder.iterdir()} == ACCURACY_DIR_FILES
    assert (folder / "mlperf_log_accuracy.json").read_bytes() == test.read_bytes()
    assert read_figure(folder / "baseline_accuracy.txt").line() == "accuracy=100.000%, good=200, total=200"
    assert (folder / "accuracy.txt").read_text() == (folder / "compliance_accuracy.txt").read_text()
    ok, message = judge_files(tmp_path / "TEST01")
    assert ok and "accuracy delta 0.503% <= 1%" in message
    (folder / "mlperf_log_accuracy_baseline.json").write_text("[]")  # MLPerf's file list is exact
    ok, message = judge_files(tmp_path / "TEST01")
    assert not ok and "mlperf_log_accuracy_baseline.json" in message
    (folder / "mlperf_log_accuracy_baseline.json").unlink()
    (folder / "compliance_accuracy.txt").write_text("accuracy=97.000%, good=194, total=200\n")
    ok, message = judge_files(tmp_path / "TEST01")
    assert not ok and "exceeds 1%" in message


def test_reference_is_labels_only_where_the_accuracy_has_signal():
    config = resolve(CliRequest(gpu="cpu", model="resnet18", image_size=32, dataset_count=8, output=Path("unused")))

    class Labelled(SyntheticDataset):
        def labels(self) -> np.ndarray:
            return np.arange(self.count) + 100

    dataset = Labelled(count=8, image_size=32)
    indices = np.array([1, 3, 5])
    signal = AccuracyResult("accuracy", 8, 8, 0, reference_percent=100.0, reference_good=8)
    assert expected_classes(config, dataset, signal, indices) == Expected(
        "accuracy", "the dataset's labels", {1: 101, 3: 103, 5: 105})
    seeded = AccuracyResult("accuracy", 0, 8, 0, reference_percent=0.0, reference_good=0, no_verdict=SEEDED_REASON)
    fallback = expected_classes(config, dataset, seeded, indices)
    top1 = reference_top1(model_spec(config), dataset, "cpu", indices)
    assert fallback.kind == "fp32_agreement" and fallback.classes == {i: int(top1[i]) for i in indices}
    assert "no signal: seeded weights" in fallback.source
    unlabelled = expected_classes(config, SyntheticDataset(count=8, image_size=32), signal, indices)
    assert unlabelled.kind == "fp32_agreement" and "synthetic data has no labels" in unlabelled.source


def test_a_damaged_reference_file_is_one_clear_error(tmp_path):
    from plumbing.errors import OutputError

    (tmp_path / EXPECTED_FILE).write_text('{"kind": "accuracy"}')
    with pytest.raises(OutputError, match="not a TEST01 Part III reference"):
        Expected.read(tmp_path / EXPECTED_FILE)
