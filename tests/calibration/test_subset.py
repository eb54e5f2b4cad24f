"""Calibration subsets: deterministic, disjoint from the performance set (synthetic: by
seed stream; seeded ImageNet: outside LoadGen's probed set), and ImageNet calibration lists
checked against val_map.txt, their overlap with the performance set logged."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest

from calibration.api import CalibrationConfig, cache_key, make_subset
from calibration.subset import (
    SYNTHETIC_SEED_OFFSET,
    PerformanceSet,
    PerformanceSetRule,
    imagenet_subset,
    synthetic_subset,
)
from plumbing.errors import ConfigError, DatasetError
from sut.backends.base import ModelSpec
from sut.data import DEFAULT_SYNTHETIC_SEED, SyntheticDataset
from sut.imagenet import VAL_MAP, ImageNetDataset
from sut.qsl import performance_sample_set
from sut.settings import mlperf_rules

S = 32
FILES = [f"ILSVRC2012_val_{i:08d}.png" for i in range(1, 7)]
MLPERF_SEED = int(mlperf_rules("Offline")["qsl_rng_seed"])


@pytest.fixture()
def folder(tmp_path: Path, make_imagenet_folder) -> Path:
    """A tiny ImageNet-like folder: six noise images and a val_map."""
    assert make_imagenet_folder(tmp_path / "imagenet", len(FILES)) == FILES
    return tmp_path / "imagenet"


@pytest.fixture()
def larger(tmp_path: Path, make_imagenet_folder) -> Path:
    """Twenty images: room for a performance set of 8 and a calibration subset beside it."""
    make_imagenet_folder(tmp_path / "imagenet20", 20)
    return tmp_path / "imagenet20"


@pytest.fixture()
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _write_list(path: Path, names: list[str]) -> Path:
    path.write_text("\n".join(names) + "\n")
    return path


# -- synthetic ----------------------------------------------------------------------------


def test_synthetic_subset_is_deterministic() -> None:
    first = synthetic_subset(count=6, image_size=S)
    again = synthetic_subset(count=6, image_size=S)
    np.testing.assert_array_equal(first.load(slice(None)), again.load(slice(None)))
    assert first.key == {
        "kind": "synthetic", "count": 6, "seed": DEFAULT_SYNTHETIC_SEED + SYNTHETIC_SEED_OFFSET,
    }
    assert first.count == 6 and "6 synthetic images" in first.description
    other = synthetic_subset(count=6, image_size=S, seed=1)
    assert other.key["seed"] == first.key["seed"] + 1
    assert not np.array_equal(other.load(slice(None)), first.load(slice(None)))


def test_synthetic_subset_is_disjoint_from_the_performance_set() -> None:
    # LoadGen's performance set is the whole default synthetic dataset.
    performance = SyntheticDataset(image_size=S)
    seen = {performance.load(np.array([i])).tobytes() for i in range(performance.count)}
    subset = synthetic_subset(count=16, image_size=S)
    images = subset.load(slice(None))
    assert images.shape == (16, 3, S, S) and images.dtype == np.float32
    assert not any(image.tobytes() in seen for image in images[:, None])


def test_batches_cover_the_subset_in_order() -> None:
    subset = synthetic_subset(count=11, image_size=S)
    batches = list(subset.batches(4))
    assert [len(b) for b in batches] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(batches), subset.load(slice(None)))
    with pytest.raises(ConfigError):
        next(subset.batches(0))


@pytest.mark.parametrize("kwargs", [{"count": 0}, {"seed": -1}])
def test_synthetic_subset_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        synthetic_subset(image_size=S, **kwargs)


# -- ImageNet: calibration list -----------------------------------------------------------


def test_calibration_list_selects_named_images(folder: Path, cache: Path, tmp_path: Path) -> None:
    listing = _write_list(tmp_path / "cal_list.txt", [FILES[4], "", FILES[1]])
    subset = imagenet_subset(folder, image_size=S, calibration_list=listing, cache_dir=cache)
    assert subset.names == (FILES[4], FILES[1])
    assert subset.indices == (4, 1)
    assert subset.key == {
        "kind": "imagenet-list",
        "count": 2,
        "list_file": "cal_list.txt",
        "list_sha256": hashlib.sha256(listing.read_bytes()).hexdigest(),
    }
    dataset = ImageNetDataset(folder, image_size=S, cache_dir=cache)
    np.testing.assert_array_equal(subset.load(slice(None)), dataset.load(np.array([4, 1])))


def test_calibration_list_names_missing_images(folder: Path, cache: Path, tmp_path: Path) -> None:
    listing = _write_list(tmp_path / "cal.txt", [FILES[0], "nope_1.JPEG", "nope_2.JPEG"])
    with pytest.raises(DatasetError) as info:
        imagenet_subset(folder, image_size=S, calibration_list=listing, cache_dir=cache)
    message = str(info.value)
    assert "2 of 3" in message and "'nope_1.JPEG'" in message and "cal.txt" in message
    assert "\n" not in message


@pytest.mark.parametrize("lines, words", [
    ([], ["names no images"]),
    ([FILES[0], FILES[0]], ["listed twice", ":2:"]),
    ([f"{FILES[0]} 65"], ["one image file name per line", ":1:"]),
])
def test_malformed_calibration_list(folder: Path, cache: Path, tmp_path: Path,
                                    lines: list[str], words: list[str]) -> None:
    listing = _write_list(tmp_path / "cal.txt", lines)
    with pytest.raises(DatasetError) as info:
        imagenet_subset(folder, image_size=S, calibration_list=listing, cache_dir=cache)
    for word in words:
        assert word in str(info.value)


def test_unreadable_calibration_list(folder: Path, cache: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read"):
        imagenet_subset(folder, image_size=S, calibration_list=tmp_path / "absent.txt", cache_dir=cache)


def test_count_takes_the_first_listed_names(folder: Path, cache: Path, tmp_path: Path) -> None:
    listing = _write_list(tmp_path / "cal.txt", FILES[::-1])
    subset = imagenet_subset(folder, image_size=S, calibration_list=listing, count=2, cache_dir=cache)
    assert subset.names == (FILES[5], FILES[4])
    with pytest.raises(DatasetError, match="exceeds the 6 names"):
        imagenet_subset(folder, image_size=S, calibration_list=listing, count=7, cache_dir=cache)


# -- ImageNet: seeded sample --------------------------------------------------------------


def test_seeded_imagenet_subset(folder: Path, cache: Path) -> None:
    first = imagenet_subset(folder, image_size=S, count=3, seed=0, cache_dir=cache)
    again = imagenet_subset(folder, image_size=S, count=3, seed=0, cache_dir=cache)
    assert first.indices == again.indices and len(set(first.indices)) == 3
    assert list(first.indices) == sorted(first.indices)
    assert first.names == tuple(FILES[i] for i in first.indices)
    assert first.key["kind"] == "imagenet-seeded" and first.key["seed"] == 0
    assert first.key["val_map_sha256"] == hashlib.sha256((folder / VAL_MAP).read_bytes()).hexdigest()
    others = {imagenet_subset(folder, image_size=S, count=3, seed=s, cache_dir=cache).indices
              for s in range(1, 6)}
    assert others - {first.indices}, "the seed should change the selection"


def test_seeded_imagenet_subset_larger_than_the_folder(folder: Path, cache: Path) -> None:
    with pytest.raises(DatasetError, match="calibration count 7 exceeds the 6 entries"):
        imagenet_subset(folder, image_size=S, count=7, cache_dir=cache)


def test_missing_imagenet_folder(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        imagenet_subset(tmp_path / "absent", image_size=S, cache_dir=cache)


# -- ImageNet: disjoint from LoadGen's performance set ------------------------------------


@pytest.mark.parametrize("qsl_seed", [MLPERF_SEED, 12345])
def test_seeded_subset_avoids_the_probed_performance_set(larger: Path, cache: Path, qsl_seed: int) -> None:
    rule = PerformanceSetRule(qsl_rng_seed=qsl_seed, sample_count=8)
    performance = set(performance_sample_set(20, 8, qsl_seed).tolist())
    chosen = set()
    for seed in range(6):
        subset = imagenet_subset(larger, image_size=S, count=12, seed=seed, cache_dir=cache,
                                 performance_set=rule)
        assert not performance.intersection(subset.indices), f"seed {seed} overlaps"
        assert len(set(subset.indices)) == 12 and subset.performance_overlap == 0
        chosen.add(subset.indices)
    # All 12 images outside the set of 8, whatever the seed: the exclusion, not luck.
    assert chosen == {tuple(sorted(set(range(20)) - performance))}
    key = subset.key["performance_set"]
    assert {k: key[k] for k in ("total", "count", "qsl_rng_seed")} == {
        "total": 20, "count": 8, "qsl_rng_seed": qsl_seed}
    assert "outside LoadGen's performance set (8 of the first 20)" in subset.description


def test_seeded_subset_is_still_seeded(larger: Path, cache: Path) -> None:
    rule = PerformanceSetRule(qsl_rng_seed=MLPERF_SEED, sample_count=8)
    picks = [imagenet_subset(larger, image_size=S, count=4, seed=seed, cache_dir=cache,
                             performance_set=rule).indices for seed in range(6)]
    assert len(set(picks)) > 1
    again = imagenet_subset(larger, image_size=S, count=4, seed=0, cache_dir=cache, performance_set=rule)
    assert again.indices == picks[0]


def test_dataset_count_limits_the_performance_set(larger: Path, cache: Path) -> None:
    """A run over the first 10 entries loads its performance set from those 10 only."""
    rule = PerformanceSetRule(qsl_rng_seed=MLPERF_SEED, sample_count=8, dataset_count=10)
    subset = imagenet_subset(larger, image_size=S, count=12, cache_dir=cache, performance_set=rule)
    assert not set(performance_sample_set(10, 8, MLPERF_SEED).tolist()).intersection(subset.indices)
    assert subset.key["performance_set"]["total"] == 10
    with pytest.raises(DatasetError, match="dataset count 21 exceeds the 20 entries"):
        imagenet_subset(larger, image_size=S, count=4, cache_dir=cache,
                        performance_set=PerformanceSetRule(MLPERF_SEED, 8, dataset_count=21))


def _key(folder: Path, cache: Path, rule: PerformanceSetRule | None) -> dict:
    spec = ModelSpec("resnet18", "int8", image_size=S)
    config = CalibrationConfig(dataset="imagenet", dataset_path=folder, count=4, performance_set=rule)
    return cache_key(spec, config, make_subset(spec, config, cache), "seed0", "onnx")


def test_cache_key_changes_with_the_performance_set(larger: Path, cache: Path) -> None:
    base = _key(larger, cache, PerformanceSetRule(MLPERF_SEED, 8))
    assert base == _key(larger, cache, PerformanceSetRule(MLPERF_SEED, 8))
    for other in (PerformanceSetRule(MLPERF_SEED, 9), PerformanceSetRule(12345, 8),
                  PerformanceSetRule(MLPERF_SEED, 8, dataset_count=16)):
        changed = _key(larger, cache, other)
        assert changed != base and changed["subset"]["performance_set"] != base["subset"]["performance_set"]


def test_performance_set_key_covers_the_indices() -> None:
    """A LoadGen that picked other samples from the same numbers must rebuild too."""
    first = PerformanceSet(total=20, count=2, qsl_rng_seed=1, indices=(0, 1))
    assert first.key != PerformanceSet(total=20, count=2, qsl_rng_seed=1, indices=(0, 2)).key


@pytest.mark.parametrize("sample_count, count, words", [
    (0, 3, ["takes 6 of the 6", "leaving 0", "--calibration-list"]),  # 0: the whole dataset
    (4, 3, ["takes 4 of the 6", "leaving 2", "--calibration-count 2 or fewer", "--calibration-list"]),
])
def test_too_small_a_folder_is_a_one_line_error(folder: Path, cache: Path, sample_count: int,
                                                count: int, words: list[str]) -> None:
    with pytest.raises(DatasetError) as info:
        imagenet_subset(folder, image_size=S, count=count, cache_dir=cache,
                        performance_set=PerformanceSetRule(MLPERF_SEED, sample_count))
    message = str(info.value)
    assert "\n" not in message and "too small" in message and "disjoint" in message
    for word in words:
        assert word in message


def test_calibration_list_overlap_is_logged(larger: Path, cache: Path, tmp_path: Path, caplog) -> None:
    names = [f"ILSVRC2012_val_{i:08d}.png" for i in range(1, 21)]
    performance = performance_sample_set(20, 8, MLPERF_SEED).tolist()
    outside = [i for i in range(20) if i not in performance]
    listing = _write_list(tmp_path / "cal.txt", [names[i] for i in (*performance[:2], *outside[:3])])
    rule = PerformanceSetRule(MLPERF_SEED, 8)
    with caplog.at_level(logging.INFO, logger="calibration.subset"):
        subset = imagenet_subset(larger, image_size=S, calibration_list=listing, cache_dir=cache,
                                 performance_set=rule)
    assert subset.performance_overlap == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 of its 5 images are in LoadGen's performance set" in warnings[0].getMessage()
    # The list is the rule: its key (and so its cache) does not depend on the performance set.
    assert "performance_set" not in subset.key

    caplog.clear()
    clean = _write_list(tmp_path / "clean.txt", [names[i] for i in outside[:3]])
    with caplog.at_level(logging.INFO, logger="calibration.subset"):
        subset = imagenet_subset(larger, image_size=S, calibration_list=clean, cache_dir=cache,
                                 performance_set=rule)
    assert subset.performance_overlap == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "0 of its 3 images" in caplog.text


def test_a_performance_set_rule_is_for_imagenet_only() -> None:
    with pytest.raises(ConfigError, match="imagenet"):
        CalibrationConfig(performance_set=PerformanceSetRule(MLPERF_SEED, 8))


@pytest.mark.parametrize("model", ["resnet18", "resnet50", "resnet101"])
def test_the_default_performance_set_is_the_one_a_default_run_resolves(model):
    """calibration/ computes it below runs/ (no import back up); a default run's own layers
    (runs.config) must give the same rule."""
    from calibration.api import default_performance_set
    from calibration.subset import PerformanceSetRule
    from runs.config import CliRequest, performance_set_settings
    from sut.backends.base import ModelSpec

    run = PerformanceSetRule.from_loadgen(performance_set_settings(CliRequest(model=model)))
    assert default_performance_set(ModelSpec(model, "int8")) == run
