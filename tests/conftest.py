"""Shared fixtures: tiny, fast run requests on the CPU."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.config import CliRequest
from sut.imagenet import VAL_MAP

# Small enough that a real LoadGen run with a real network takes about a second on 2 cores.
TINY = dict(
    gpu="cpu", model="resnet18", image_size=32, dataset_count=64,
    min_duration_ms=300, min_query_count=32,
)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DEEPGAP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def tiny_request(tmp_path):
    def make(**overrides) -> CliRequest:
        values = dict(TINY, output=tmp_path / "out")
        values.update(overrides)
        return CliRequest(**values)

    return make


@pytest.fixture(scope="session")
def make_imagenet_folder() -> Callable[..., list[str]]:
    """make_imagenet_folder(folder, count, seed=0, labels=None, name=...) -> file names: an
    ImageNet-layout folder of `count` 48x40 noise PNGs and a val_map.txt labelling image i
    with labels[i] (default i % 10), names from `name` numbered from 1."""
    def make(folder: Path, count: int, seed: int = 0, labels: Sequence[int] | None = None,
             name: str = "ILSVRC2012_val_{:08d}.png") -> list[str]:
        folder.mkdir(parents=True)
        rng = np.random.default_rng(seed)
        names = [name.format(i + 1) for i in range(count)]
        for file in names:
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / file)
        labels = [i % 10 for i in range(count)] if labels is None else labels
        (folder / VAL_MAP).write_text("".join(f"{file} {label}\n" for file, label in zip(names, labels)))
        return names

    return make
