"""Rules on calibration options shared by `python -m calibration` (CalibrationConfig) and
`harness/run.py` (CliRequest), which checks them before any run starts. Kept apart from
calibration.api so the run's configuration can apply them without importing the
calibration machinery, which itself reads the run's configuration."""

from __future__ import annotations

from pathlib import Path

from plumbing.errors import ConfigError


def check_calibration_list(dataset: str, calibration_list: Path | None, must_exist: bool = False) -> None:
    """A calibration list names ImageNet images: refused with other datasets, and (where
    `must_exist`) when the file is not there."""
    if calibration_list is None:
        return
    if dataset != "imagenet":
        raise ConfigError("--calibration-list names ImageNet images; use it with --dataset imagenet")
    if must_exist and not Path(calibration_list).expanduser().is_file():
        raise ConfigError(f"--calibration-list {calibration_list}: no such file")
