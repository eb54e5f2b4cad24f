"""torchvision ResNets with seeded, torchvision or user-supplied weights."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from plumbing.errors import BackendError, ConfigError, first_line
from sut.backends.base import MODELS, ModelSpec

log = logging.getLogger(__name__)

SEEDED_WEIGHTS_NOTE = (
    "weights are seeded random initialisation, not trained weights: throughput and latency "
    "are representative, predictions are not"
)
# Batch-norm statistics of seeded networks are estimated on this many synthetic images so
# activations keep a trained network's scale (otherwise deep fp16 ResNets can overflow).
_BN_CALIBRATION_IMAGES = 16


def build_model(spec: ModelSpec):  # -> torch.nn.Module
    """Return the network in eval mode, fp32, on the CPU."""
    import torch
    import torchvision

    if spec.name not in MODELS:
        raise ConfigError(f"unknown model {spec.name!r}; choose from {', '.join(MODELS)}")
    constructor = getattr(torchvision.models, spec.name)
    if spec.weights == "seeded":
        torch.manual_seed(spec.seed)
        model = constructor(weights=None, num_classes=spec.num_classes)
        _estimate_batchnorm_statistics(model, spec)
    elif spec.weights == "torchvision":
        model = _torchvision_pretrained(constructor, spec)
    else:
        model = constructor(weights=None, num_classes=spec.num_classes)
        _load_state_dict(model, Path(spec.weights))
    return model.eval()


def weights_description(spec: ModelSpec) -> str:
    if spec.weights == "seeded":
        return f"seeded (seed {spec.seed}); {SEEDED_WEIGHTS_NOTE}"
    if spec.weights == "torchvision":
        return "torchvision pretrained (IMAGENET1K_V1)"
    return f"state dict {spec.weights}"


def _estimate_batchnorm_statistics(model, spec: ModelSpec) -> None:
    import torch

    from sut.data import SyntheticDataset

    images = SyntheticDataset(
        count=_BN_CALIBRATION_IMAGES, image_size=spec.image_size, seed=spec.seed + 1
    ).load(np.arange(_BN_CALIBRATION_IMAGES))
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration pass
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(images))
    model.eval()


def _torchvision_pretrained(constructor, spec: ModelSpec):
    if spec.num_classes != 1000:
        raise ConfigError("--weights torchvision needs the 1000-class ImageNet head")
    try:
        return constructor(weights="IMAGENET1K_V1")
    except Exception as exc:  # torchvision raises URLError, RuntimeError, OSError...
        raise BackendError(
            f"torchvision weights for {spec.name} are not cached and could not be downloaded "
            f"({type(exc).__name__}); copy them into $TORCH_HOME/hub/checkpoints or pass "
            "--weights PATH to a state dict"
        ) from exc


def _load_state_dict(model, path: Path) -> None:
    import torch

    if not path.is_file():
        raise ConfigError(f"--weights {path}: no such file (use 'seeded', 'torchvision' or a path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"--weights {path}: not a readable torch state dict ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"--weights {path}: does not fit this model ({first_line(exc)})") from exc
