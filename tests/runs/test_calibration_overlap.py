"""INT8 runs on an ImageNet folder, end to end on the CPU (ONNX Runtime, 32 px): the seeded
calibration subset stays out of the performance set, and measurements.json records the
overlap counted against the samples LoadGen actually loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runs.config import resolve
from runs.calibrated_on import SYNTHETIC_OVERLAP_NOTE
from runs.runner import execute
from sut.qsl import index_set_sha256, performance_sample_set
from sut.settings import mlperf_rules

COUNT = 40
PERFORMANCE = 16
MLPERF_SEED = int(mlperf_rules("Offline")["qsl_rng_seed"])


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory: pytest.TempPathFactory, make_imagenet_folder) -> tuple[Path, Path]:
    """(an ImageNet-layout folder of 40 labelled noise images, a user.conf taking 16 of
    them as the performance set)."""
    root = tmp_path_factory.mktemp("overlap")
    folder = root / "imagenet"
    make_imagenet_folder(folder, COUNT, seed=3)
    conf = root / "user.conf"
    conf.write_text(f"*.*.performance_sample_count_override = {PERFORMANCE}\n")
    return folder, conf


def _int8_run(tiny_request, folder: Path, conf: Path, **overrides) -> dict:
    config = resolve(tiny_request(precision="int8", backend="onnxruntime", dataset="imagenet",
                                  dataset_path=folder, dataset_count=None, user_conf=conf,
                                  skip_accuracy_gate=True, target_qps=400.0, **overrides))
    outcome = execute(config, show_progress=False)
    return json.loads(outcome.paths.measurements.read_text())["runs"]["performance"]


def test_seeded_calibration_never_meets_the_performance_set(imagenet, tiny_request) -> None:
    folder, conf = imagenet
    run = _int8_run(tiny_request, folder, conf, calibration_count=COUNT - PERFORMANCE)
    calibration = run["calibration"]
    # All 24 images outside the performance set: any overlap would show here.
    assert calibration["overlap_with_performance_set"] == 0
    assert calibration["performance_set_matches_probe"] is True
    assert "outside LoadGen's performance set (16 of the first 40)" in calibration["subset"]
    probed = performance_sample_set(COUNT, PERFORMANCE, MLPERF_SEED)
    assert run["harness"]["performance_set"] == {"count": PERFORMANCE, "indices_sha256": index_set_sha256(probed)}


def test_a_listed_overlap_is_counted_and_recorded(imagenet, tiny_request, tmp_path: Path) -> None:
    """A calibration list is used as given; the overlap recorded is counted, not assumed."""
    folder, conf = imagenet
    performance = performance_sample_set(COUNT, PERFORMANCE, MLPERF_SEED).tolist()
    outside = [i for i in range(COUNT) if i not in performance]
    listing = tmp_path / "cal.txt"
    listing.write_text("".join(f"ILSVRC2012_val_{i + 1:08d}.png\n" for i in (*performance[:3], *outside[:5])))
    run = _int8_run(tiny_request, folder, conf, calibration_list=listing, calibration_count=8)
    calibration = run["calibration"]
    assert calibration["overlap_with_performance_set"] == 3
    assert "performance_set_matches_probe" not in calibration  # nothing was excluded by probe


def test_synthetic_overlap_is_zero_by_construction(tiny_request) -> None:
    config = resolve(tiny_request(precision="int8", skip_accuracy_gate=True, calibration_count=16,
                                  target_qps=400.0))
    calibration = execute(config, show_progress=False).result["calibration"]
    assert calibration["overlap_with_performance_set"] == 0
    assert calibration["overlap_note"] == SYNTHETIC_OVERLAP_NOTE
