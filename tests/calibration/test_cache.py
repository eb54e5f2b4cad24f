"""The calibration cache: reuse, invalidation naming the changed field, corrupt files,
a stable hash, and `calibrate` end to end on resnet18."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calibration import calibrate
from calibration.cache import (
    FORMAT_VERSION,
    CalibrationCache,
    load_or_build,
    read_cache,
    write_cache,
)
from calibration.collect import CalibrationStats, WeightScales
from plumbing.errors import OutputError
from sut.backends.base import ModelSpec

KEY: dict[str, Any] = {
    "model": "resnet50",
    "num_classes": 1000,
    "weights": "seed0",
    "image_size": 224,
    "dataset": {"name": "synthetic", "seed": 20261126},
    "subset": {"kind": "synthetic", "count": 500, "seed": 21261129},
    "algorithm": "max",
    "percentile": None,
    "onnx_sha256": "ab" * 32,
}


def _stats(offset: float = 0.0) -> CalibrationStats:
    return CalibrationStats(
        activations={"input": 2.64 + offset, "/relu/Relu_output_0": 5.5},
        activation_max={"input": 2.64 + offset, "/relu/Relu_output_0": 7.25},
        weights={
            "conv.weight": WeightScales(0, np.float32([0.01, 1e-8, 0.3])),
            "fc.weight": WeightScales(0, np.float32([0.002, 0.004])),
        },
        samples=500,
        seconds=1.5,
    )


class Builder:
    """A build_fn that counts its calls."""

    def __init__(self, offset: float = 0.0) -> None:
        self.calls = 0
        self.offset = offset

    def __call__(self) -> CalibrationStats:
        self.calls += 1
        return _stats(self.offset)


@pytest.fixture()
def path(tmp_path: Path) -> Path:
    return tmp_path / "calibration" / "resnet50.json"


def test_build_then_reuse(path: Path) -> None:
    build = Builder()
    built = load_or_build(KEY, build, path)
    reused = load_or_build(copy.deepcopy(KEY), build, path)
    assert build.calls == 1
    assert reused.key == KEY and reused.cache_hash == built.cache_hash
    assert reused.activations == built.activations
    np.testing.assert_array_equal(reused.weights["conv.weight"].scales, np.float32([0.01, 1e-8, 0.3]))
    assert reused.activation_scales["input"] == pytest.approx(2.64 / 127)
    # The flat views INT8 graph builders (sut/onnx_precision.py, TensorRT) consume.
    assert reused.activation_amax == {"input": 2.64, "/relu/Relu_output_0": 5.5}
    np.testing.assert_array_equal(reused.weight_scales["fc.weight"], np.float32([0.002, 0.004]))


def test_file_is_readable_json_with_a_header(path: Path) -> None:
    load_or_build(KEY, Builder(), path, info={"subset": "500 synthetic images"})
    text = path.read_text()
    assert text.startswith(f'{{\n  "header": {{\n    "format_version": {FORMAT_VERSION},')
    data = json.loads(text)
    header = data["header"]
    assert header["key"] == KEY
    assert header["created"].endswith("+00:00")
    assert header["info"]["subset"] == "500 synthetic images"
    assert header["info"]["samples"] == 500
    assert data["activations"]["/relu/Relu_output_0"] == {
        "amax": 5.5, "scale": 5.5 / 127, "max": 7.25,
    }
    assert data["weights"]["fc.weight"]["axis"] == 0
    assert len(data["cache_hash"]) == 64
    # One line per weight's scale list, not one per channel.
    assert '      "scales": [0.0020000000949949026, 0.004000000189989805]\n' in text
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("field, value, shown", [
    ("algorithm", "entropy", "algorithm: max -> entropy"),
    ("image_size", 32, "image_size: 224 -> 32"),
    ("weights", "torchvision", "weights: seed0 -> torchvision"),
    ("model", "resnet18", "model: resnet50 -> resnet18"),
    ("onnx_sha256", "cd" * 32, "onnx_sha256: " + "ab" * 10 + "a... -> " + "cd" * 10 + "c..."),
    ("subset", {"kind": "synthetic", "count": 16, "seed": 21261129}, "subset.count: 500 -> 16"),
    ("dataset", {"name": "synthetic", "seed": 7}, "dataset.seed: 20261126 -> 7"),
    ("percentile", 99.9, "percentile: null -> 99.9"),
])
def test_changed_field_rebuilds_and_says_which(
    path: Path, caplog: pytest.LogCaptureFixture, field: str, value: Any, shown: str
) -> None:
    build = Builder()
    load_or_build(KEY, build, path)
    changed = dict(KEY, **{field: value})
    with caplog.at_level(logging.INFO, logger="calibration.cache"):
        rebuilt = load_or_build(changed, build, path)
    assert build.calls == 2
    assert f"calibration cache stale ({shown}); rebuilding {path}" in caplog.text
    assert read_cache(path).key == changed == rebuilt.key


def test_several_changes_are_all_named(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    load_or_build(KEY, Builder(), path)
    with caplog.at_level(logging.INFO, logger="calibration.cache"):
        load_or_build(dict(KEY, algorithm="percentile", percentile=99.99), Builder(), path)
    assert "(algorithm: max -> percentile; percentile: null -> 99.99)" in caplog.text


@pytest.mark.parametrize("content", ["{not json", "", f'{{"header": {{"format_version": {FORMAT_VERSION}}}}}', "[]"])
def test_corrupt_file_is_rebuilt_with_a_warning(
    path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    path.parent.mkdir(parents=True)
    path.write_text(content)
    build = Builder()
    with caplog.at_level(logging.INFO, logger="calibration.cache"):
        cache = load_or_build(KEY, build, path)
    assert build.calls == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unreadable" in warnings[0].getMessage()
    assert read_cache(path).cache_hash == cache.cache_hash


def test_hand_edited_values_are_rebuilt(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    load_or_build(KEY, Builder(), path)
    data = json.loads(path.read_text())
    data["activations"]["input"]["amax"] = 100.0
    path.write_text(json.dumps(data))
    build = Builder()
    with caplog.at_level(logging.WARNING, logger="calibration.cache"):
        load_or_build(KEY, build, path)
    assert build.calls == 1
    assert "cache_hash does not match" in caplog.text


def test_other_format_version_is_stale(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    load_or_build(KEY, Builder(), path)
    data = json.loads(path.read_text())
    data["header"]["format_version"] = 0
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.INFO, logger="calibration.cache"):
        load_or_build(KEY, Builder(), path)
    assert f"calibration cache stale (format_version: 0 -> {FORMAT_VERSION})" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_cache_hash_is_stable_and_content_sensitive(tmp_path: Path) -> None:
    first = CalibrationCache.from_stats(KEY, _stats())
    second = CalibrationCache.from_stats(KEY, _stats())
    second.created, second.info = "another time", {"seconds": 99}
    assert first.cache_hash == second.cache_hash
    write_cache(first, tmp_path / "c.json")
    assert read_cache(tmp_path / "c.json").cache_hash == first.cache_hash
    assert CalibrationCache.from_stats(KEY, _stats(offset=0.5)).cache_hash != first.cache_hash
    assert CalibrationCache.from_stats(dict(KEY, algorithm="entropy"), _stats()).cache_hash != first.cache_hash


def test_unwritable_location_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot write calibration cache"):
        load_or_build(KEY, Builder(), blocker / "sub" / "c.json")


# -- calibrate end to end ----------------------------------------------------------------


def test_calibrate_builds_reuses_and_rebuilds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = ModelSpec("resnet18", "int8", image_size=32)
    first = calibrate(spec, "synthetic", count=8, algorithm="max")
    assert not first.reused and first.path.is_file()
    assert first.path.parent.name == "calibration" and first.path.name == (
        "resnet18-32px-seed0-synthetic-max.json"
    )
    key = first.cache.key
    assert (key["model"], key["image_size"], key["weights"], key["algorithm"]) == (
        "resnet18", 32, "seed0", "max",
    )
    assert key["subset"]["count"] == 8 and len(key["onnx_sha256"]) == 64
    assert first.cache.info["onnxruntime"]

    again = calibrate(spec, "synthetic", count=8, algorithm="max")
    assert again.reused and again.cache.cache_hash == first.cache.cache_hash

    with caplog.at_level(logging.INFO, logger="calibration.cache"):
        other = calibrate(spec, "synthetic", count=4, algorithm="max", output=first.path)
    assert not other.reused
    assert "subset.count: 8 -> 4" in caplog.text
