"""INT8 calibration: activation ranges and per-channel weight scales of the FP32 ONNX graph,
collected on a deterministic calibration subset and cached as JSON (see README.md)."""

from calibration.api import CalibrationConfig, CalibrationResult, calibrate, calibrate_config
from calibration.cache import CalibrationCache, load_or_build

__all__ = [
    "CalibrationCache",
    "CalibrationConfig",
    "CalibrationResult",
    "calibrate",
    "calibrate_config",
    "load_or_build",
]
