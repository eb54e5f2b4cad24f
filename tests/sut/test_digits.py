"""DigitsDataset and the digits-trained ResNet (resnet18 at 32 px keeps it fast)."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

import sut.digits_model as digits_model
from plumbing.errors import ConfigError, DatasetError
from sut.backends.base import ModelSpec
from sut.data import IMAGENET_MEAN, IMAGENET_STD
from sut.digits import DEFAULT_CHECK_COUNT, NUM_CLASSES, DigitsDataset, upscale_bilinear
from sut.digits_model import (
    DIGITS_RECIPE_VERSION,
    RECIPE,
    digits_weights,
    digits_weights_path,
    predict,
)
from sut.models import build_model

MODEL = "resnet18"
S = 32
TOTAL = 1797


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One training shared by the module: (cache folder, weights path, images it loaded)."""
    cache = tmp_path_factory.mktemp("digits-cache")
    loaded = []
    real_load = DigitsDataset.load

    def counting_load(self, indices):
        loaded.append(len(np.asarray(indices).ravel()))
        return real_load(self, indices)

    DigitsDataset.load = counting_load
    try:
        path = digits_weights(MODEL, S, seed=0, cache_dir=cache)
    finally:
        DigitsDataset.load = real_load
    return cache, path, sum(loaded)


# --- dataset -------------------------------------------------------------------------


def test_dataset_shapes_dtype_and_labels():
    data = DigitsDataset(image_size=S, split="all")
    assert (data.name, data.count, data.image_size) == ("digits", TOTAL, S)
    batch = data.load(np.array([0, 5, TOTAL - 1]))
    assert batch.shape == (3, 3, S, S) and batch.dtype == np.float32
    assert batch.flags.c_contiguous
    # Normalised uint8 grey: identical channels after undoing the per-channel normalisation.
    pixels = batch.transpose(0, 2, 3, 1) * IMAGENET_STD + IMAGENET_MEAN
    assert np.allclose(pixels[..., 0], pixels[..., 1], atol=1e-5)
    assert np.allclose(pixels[..., 0], pixels[..., 2], atol=1e-5)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert pixels.max() > 0.9  # ink reaches near-white
    labels = data.labels()
    assert labels.dtype == np.int64 and labels.shape == (TOTAL,)
    assert set(np.unique(labels)) == set(range(NUM_CLASSES))
    info = data.describe()
    assert info["name"] == "digits" and info["labels"] is True and info["split"] == "all"


def test_dataset_is_deterministic_and_matches_scikit_learn():
    from sklearn.datasets import load_digits

    a = DigitsDataset(image_size=S, split="check", seed=3)
    b = DigitsDataset(image_size=S, split="check", seed=3)
    rows = np.array([0, 7, 42, a.count - 1])
    assert np.array_equal(a.load(rows), b.load(rows))
    assert np.array_equal(a.labels(), b.labels())

    raw = load_digits()
    ids = a.sample_ids()
    assert np.array_equal(a.labels(), raw.target[ids])
    # At the source size the pixels are the 0..16 values scaled to 0..255.
    native = DigitsDataset(image_size=8, split="check", seed=3).load_uint8(rows)[..., 0]
    expected = np.rint(raw.images[ids[rows]] * 255 / 16).astype(np.uint8)
    assert np.array_equal(native, expected)


def test_upscaling_is_bilinear_like_torch():
    source = np.random.default_rng(0).integers(0, 256, (4, 8, 8), dtype=np.uint8)
    for size in (8, 32, 64):
        ours = upscale_bilinear(source, size).astype(np.int64)
        reference = torch.nn.functional.interpolate(
            torch.from_numpy(source.astype(np.float64))[:, None],
            size=(size, size), mode="bilinear", align_corners=False,
        )[:, 0].numpy()
        # Rounding of exact .5 ties may differ by one grey level.
        assert np.abs(ours - np.rint(reference)).max() <= 1


def test_splits_are_disjoint_and_cover_everything():
    train = DigitsDataset(image_size=S, split="train")
    check = DigitsDataset(image_size=S, split="check")
    assert check.count == DEFAULT_CHECK_COUNT
    assert train.count == TOTAL - DEFAULT_CHECK_COUNT
    train_ids, check_ids = train.sample_ids(), check.sample_ids()
    assert not set(train_ids) & set(check_ids)
    assert np.array_equal(np.sort(np.concatenate([train_ids, check_ids])), np.arange(TOTAL))
    # Every class is represented in the held-out part.
    assert set(np.unique(check.labels())) == set(range(NUM_CLASSES))
    # Another seed gives another split; check_count is honoured.
    assert not np.array_equal(DigitsDataset(S, "check", seed=1).sample_ids(), check_ids)
    assert DigitsDataset(S, "check", check_count=100).count == 100
    # Positions index the split: check row i is sample check_ids[i] of "all".
    everything = DigitsDataset(image_size=S, split="all")
    assert np.array_equal(check.load([3]), everything.load([check_ids[3]]))


def test_bad_arguments():
    with pytest.raises(DatasetError, match="split"):
        DigitsDataset(image_size=S, split="validation")
    with pytest.raises(DatasetError, match="check_count"):
        DigitsDataset(image_size=S, split="check", check_count=TOTAL)
    with pytest.raises(ConfigError, match="unknown model"):
        digits_weights("vgg16", S)


def test_missing_scikit_learn_is_a_dataset_error(monkeypatch):
    DigitsDataset(image_size=8)  # the in-process copy is filled; the check must still fire
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(DatasetError, match="pip install scikit-learn"):
        DigitsDataset(image_size=S)


# --- trained network -----------------------------------------------------------------


def _evaluate(path):
    spec = ModelSpec(
        name=MODEL, precision="fp32", weights=str(path), image_size=S, num_classes=NUM_CLASSES
    )
    check = DigitsDataset(image_size=S, split="check")
    return predict(build_model(spec), check), check.labels()


def test_trained_network_is_accurate_and_input_dependent(trained):
    _, path, _ = trained
    assert path == digits_weights_path(MODEL, S, 0, trained[0])
    assert f"recipe{DIGITS_RECIPE_VERSION}" in path.name and path.suffix == ".pt"
    predictions, labels = _evaluate(path)
    top1 = float((predictions == labels).mean())
    assert top1 >= 0.90, f"check top-1 {top1:.3f}"
    assert len(np.unique(predictions)) >= 8
    # Nothing but the finished file is left in the cache folder.
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_second_call_reuses_the_cache(trained, monkeypatch, caplog):
    cache, path, _ = trained

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of reusing the cache")

    monkeypatch.setattr(digits_model, "_train", no_training)
    with caplog.at_level(logging.INFO, logger="sut.digits_model"):
        assert digits_weights(MODEL, S, seed=0, cache_dir=cache) == path
    assert "reusing cached digits weights" in caplog.text


def test_training_makes_few_passes_over_the_train_split(trained):
    """The first INT8 run on a CPU waits for this training: the updates see each train
    image about one and a half times, the batch-norm statistics come from 512 more (the
    first recipe loaded four passes' worth)."""
    _, _, loaded = trained
    train_count = DigitsDataset(image_size=S, split="train").count
    assert loaded == RECIPE.steps * RECIPE.batch_size + RECIPE.batchnorm_images
    assert loaded <= 2 * train_count
    # The global torch settings the training changed are back as they were.
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory


def test_another_recipe_is_another_cache_file(monkeypatch):
    before = digits_weights_path(MODEL, S)
    monkeypatch.setattr(digits_model, "RECIPE", replace(digits_model.RECIPE, lr=digits_model.RECIPE.lr / 2))
    assert digits_weights_path(MODEL, S) != before
    assert digits_model.recipe_digest() in digits_weights_path(MODEL, S).name


@pytest.mark.parametrize("model_name, blocks", [("resnet18", 8), ("resnet50", 16)])
def test_residual_branches_start_scaled_down(model_name, blocks):
    import torchvision

    model = getattr(torchvision.models, model_name)(weights=None, num_classes=NUM_CLASSES)
    digits_model._scale_residual_branches(model)
    last = [m.bn3 if hasattr(m, "bn3") else m.bn2 for m in model.modules()
            if type(m).__name__ in ("BasicBlock", "Bottleneck")]
    assert len(last) == blocks
    for norm in last:
        assert torch.allclose(norm.weight, torch.full_like(norm.weight, blocks ** -0.5))
    assert torch.equal(model.bn1.weight, torch.ones_like(model.bn1.weight))  # the stem keeps 1


def test_default_cache_is_deepgap_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPGAP_CACHE", str(tmp_path))
    assert digits_weights_path(MODEL, S).is_relative_to(tmp_path)
    assert digits_weights_path(MODEL, S) != digits_weights_path(MODEL, 64)
    assert digits_weights_path(MODEL, S) != digits_weights_path(MODEL, S, seed=1)


def test_training_is_deterministic(trained, tmp_path):
    # Bit-identical for the same torch build, CPU and thread count (as here); a different
    # intra-op thread count changes reduction order and so the trained weights.
    _, first, _ = trained
    second = digits_weights(MODEL, S, seed=0, cache_dir=tmp_path)
    assert second != first
    a = torch.load(first, map_location="cpu", weights_only=True)
    b = torch.load(second, map_location="cpu", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
