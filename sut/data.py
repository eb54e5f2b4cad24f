"""Datasets the QSL serves: preprocessed float32 NCHW images, loaded by index.

`SyntheticDataset` is the embedded default (no download, deterministic).
`ImageNetDataset` (sut/imagenet.py) reads an ImageNet validation folder.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

# torchvision / MLPerf reference normalisation (RGB, after scaling to [0, 1]).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

DEFAULT_SYNTHETIC_COUNT = 1024
DEFAULT_SYNTHETIC_SEED = 20261126


class Dataset(Protocol):
    name: str
    count: int
    image_size: int

    def load(self, indices: np.ndarray) -> np.ndarray:
        """Preprocessed samples at `indices`, float32, shape (k, 3, S, S)."""
        ...

    def labels(self) -> np.ndarray | None:
        """Ground-truth class per index, or None where the dataset has none."""
        ...

    def describe(self) -> dict[str, Any]: ...


def normalize_uint8_hwc(images: np.ndarray) -> np.ndarray:
    """uint8 (k, S, S, 3) RGB -> normalised float32 (k, 3, S, S)."""
    scaled = images.astype(np.float32) / 255.0
    scaled = (scaled - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(scaled.transpose(0, 3, 1, 2))


class SyntheticDataset:
    """Seeded images with natural-image statistics: smooth colour fields plus texture.

    Each sample depends only on (seed, index), so any subset can be produced on demand and
    every run sees the same pixels. Values are uint8 images normalised exactly like
    ImageNet, so the network sees realistic ranges (about -2.1 to 2.6). There are no true
    labels.
    """

    name = "synthetic"

    def __init__(
        self,
        count: int = DEFAULT_SYNTHETIC_COUNT,
        image_size: int = 224,
        seed: int = DEFAULT_SYNTHETIC_SEED,
    ) -> None:
        self.count = count
        self.image_size = image_size
        self.seed = seed
        # uint8 images are cheap to keep (150 KB at 224 px) and slow to generate; repeated
        # runs in one process (benchmarks, accuracy references) reuse them.
        self._memo: dict[int, np.ndarray] = {}

    def _image(self, index: int) -> np.ndarray:
        index = int(index)
        if index not in self._memo:
            self._memo[index] = self._generate(index)
        return self._memo[index]

    def _generate(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, index])
        size = self.image_size
        coarse = rng.integers(0, 256, size=(4, 4, 3)).astype(np.float32)
        # Bilinear upsampling of the coarse grid gives smooth shapes and colour gradients.
        grid = np.linspace(0, 3, size, dtype=np.float32)
        lo = np.minimum(grid.astype(np.int64), 2)
        frac = (grid - lo)[:, None]
        rows = coarse[lo] * (1 - frac[:, :, None]) + coarse[lo + 1] * frac[:, :, None]
        cols = rows[:, lo] * (1 - frac.T[:, :, None]) + rows[:, lo + 1] * frac.T[:, :, None]
        texture = rng.normal(0.0, 18.0, size=(size, size, 3)).astype(np.float32)
        return np.clip(cols + texture, 0, 255).astype(np.uint8)

    def load(self, indices: np.ndarray) -> np.ndarray:
        images = np.stack([self._image(i) for i in np.asarray(indices).ravel()])
        return normalize_uint8_hwc(images)

    def labels(self) -> np.ndarray | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "count": self.count,
            "image_size": self.image_size,
            "seed": self.seed,
            "labels": False,
        }
