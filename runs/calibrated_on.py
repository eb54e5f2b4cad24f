"""Which images a run's INT8 calibration used, checked after a performance run against the
samples LoadGen loaded: their overlap is recorded with the result."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from calibration.api import CalibrationResult
from sut.qsl import index_set_sha256

log = logging.getLogger(__name__)

# Recorded for synthetic INT8 runs, where the overlap is 0 by construction, not by count.
SYNTHETIC_OVERLAP_NOTE = ("synthetic data: the calibration images come from their own seed stream, "
                          "so none of them is a performance-set image")


@dataclass(frozen=True)
class CalibratedOn:
    """The images a run's INT8 calibration used, checked after a performance run against
    the samples LoadGen loaded: what was timed, not what the probe predicted."""

    dataset: str  # the calibration's dataset: "imagenet" (the run's own) or "synthetic"
    indices: np.ndarray  # dataset indices (ImageNet: val_map.txt positions)
    probed_sha256: str | None = None  # the performance set a seeded ImageNet subset avoided

    @classmethod
    def of(cls, dataset: str, calibrated: CalibrationResult) -> CalibratedOn:
        probed = calibrated.cache.key.get("subset", {}).get("performance_set") or {}
        return cls(dataset, np.asarray(calibrated.indices, dtype=np.int64), probed.get("indices_sha256"))

    def check(self, loaded: np.ndarray) -> dict[str, Any]:
        """Fields for the result's "calibration" block, from LoadGen's loaded set `loaded`."""
        if self.dataset != "imagenet":
            return {"overlap_with_performance_set": 0, "overlap_note": SYNTHETIC_OVERLAP_NOTE}
        overlap = int(np.intersect1d(self.indices, loaded).size)
        record: dict[str, Any] = {"overlap_with_performance_set": overlap}
        if self.probed_sha256 is not None:
            record["performance_set_matches_probe"] = self.probed_sha256 == index_set_sha256(loaded)
        if overlap:
            log.warning("%d of the %d calibration images were in the performance set LoadGen loaded",
                        overlap, self.indices.size)
        return record
