"""A ResNet fine-tuned on the digits train split, trained once and cached.

Seeded random weights predict nearly one class for every input, so precision checks that
compare predictions (top-1 agreement with FP32) need a network whose output depends on
its input the way a trained one's does. `digits_weights` trains the torchvision ResNet
(starting from the project's seeded weights, 10 classes) on the CPU at the image size it
will run at, deterministically, and keeps the state dict in the deepgap cache:

    path = digits_weights("resnet18", 32)
    spec = ModelSpec("resnet18", "int8", weights=str(path), image_size=32, num_classes=10)

Training at one image size and running at another is not supported: batch-norm
statistics are estimated at the training size.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from harness.errors import BackendError, ConfigError
from sut.backends.base import MODELS, ModelSpec
from sut.digits import NUM_CLASSES, DigitsDataset
from sut.onnx_export import cache_root

log = logging.getLogger(__name__)

# Bump whenever anything that changes the trained weights changes (recipe, data split,
# preprocessing, how sut.models builds the seeded starting point): cached files then stop
# matching.
DIGITS_RECIPE_VERSION = 1


@dataclass(frozen=True)
class DigitsRecipe:
    epochs: int = 3
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 5


RECIPE = DigitsRecipe()


def digits_weights_path(
    model_name: str, image_size: int, seed: int = 0, cache_dir: Path | str | None = None
) -> Path:
    """Where the trained state dict for these settings lives (whether or not it exists)."""
    name = (
        f"{model_name}-{int(image_size)}px-seed{int(seed)}-"
        f"recipe{DIGITS_RECIPE_VERSION}-torch{_torch_major_minor()}.pt"
    )
    return cache_root(cache_dir) / "digits" / name


def digits_spec(
    model_name: str,
    precision: str = "fp32",
    image_size: int = 224,
    seed: int = 0,
    cache_dir: Path | str | None = None,
) -> ModelSpec:
    """A ModelSpec running the digits-trained network (training it first if not cached)."""
    path = digits_weights(model_name, image_size, seed=seed, cache_dir=cache_dir)
    return ModelSpec(
        name=model_name,
        precision=precision,
        weights=str(path),
        seed=seed,
        image_size=image_size,
        num_classes=NUM_CLASSES,
    )


def digits_weights(
    model_name: str,
    image_size: int,
    seed: int = 0,
    cache_dir: Path | str | None = None,
) -> Path:
    """Path to the state dict of `model_name` fine-tuned on the digits train split.

    Trains it on the CPU first when it is not cached (seconds to minutes, depending on the
    model and image size). The file is a plain state dict for a 10-class network, loadable
    with `--weights PATH` / `ModelSpec(weights=str(path), num_classes=10)`.
    """
    if model_name not in MODELS:
        raise ConfigError(f"unknown model {model_name!r}; choose from {', '.join(MODELS)}")
    if int(image_size) < 8:
        raise ConfigError(f"digits training needs an image size of at least 8, not {image_size}")
    target = digits_weights_path(model_name, image_size, seed, cache_dir)
    if target.is_file():
        log.info("reusing cached digits weights %s", target)
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackendError(f"cannot create the digits weights folder {target.parent}: {exc}") from exc

    import torch

    log.info(
        "training %s on the digits train split at %d px (seed %d, recipe %d, %d threads)...",
        model_name, image_size, seed, DIGITS_RECIPE_VERSION, torch.get_num_threads(),
    )
    started = time.perf_counter()
    state = _train(model_name, int(image_size), int(seed))
    # A unique temporary name in the same folder, then an atomic rename: concurrent
    # trainings and readers never see a partly written file.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
        os.replace(tmp_name, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError):
            raise BackendError(f"cannot write the digits weights {target}: {exc}") from exc
        raise
    log.info("digits weights written in %.1f s: %s", time.perf_counter() - started, target)
    return target


def _train(model_name: str, image_size: int, seed: int) -> dict[str, Any]:
    """Fine-tune the seeded network on the train split; returns its CPU state dict."""
    import torch

    from sut.models import build_model

    recipe = RECIPE
    data = DigitsDataset(image_size=image_size, split="train", seed=seed)
    labels = torch.from_numpy(data.labels())
    spec = ModelSpec(
        name=model_name, precision="fp32", weights="seeded", seed=seed,
        image_size=image_size, num_classes=NUM_CLASSES,
    )
    with _deterministic(seed):
        model = build_model(spec)
        steps_per_epoch = data.count // recipe.batch_size  # drop the ragged last batch
        total_steps = recipe.epochs * steps_per_epoch
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: _lr_factor(step, total_steps, recipe.warmup_steps)
        )
        model.train()
        step = 0
        for epoch in range(recipe.epochs):
            order = np.random.default_rng([seed, epoch, 0x7472]).permutation(data.count)
            running = 0.0
            for batch in range(steps_per_epoch):
                rows = order[batch * recipe.batch_size : (batch + 1) * recipe.batch_size]
                images = torch.from_numpy(data.load(rows))
                loss = torch.nn.functional.cross_entropy(model(images), labels[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                running += float(loss.detach())
                step += 1
            log.info(
                "digits %s %dpx epoch %d/%d: mean loss %.4f",
                model_name, image_size, epoch + 1, recipe.epochs, running / steps_per_epoch,
            )
        _reestimate_batchnorm(model, data, recipe.batch_size)
        model.eval()
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + float(np.cos(np.pi * min(1.0, progress))))


def _reestimate_batchnorm(model, data: DigitsDataset, batch_size: int) -> None:
    """Replace the running statistics with exact averages over the train split.

    With few training steps the momentum averages still lag the final weights; a
    cumulative pass with the trained weights gives the statistics inference should use.
    """
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for start in range(0, data.count - batch_size + 1, batch_size):
            model(torch.from_numpy(data.load(np.arange(start, start + batch_size))))
    for module, momentum in zip(norms, saved):
        module.momentum = momentum


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seeded RNG and deterministic kernels for the duration; restores global settings."""
    import torch

    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
        torch.random.set_rng_state(rng_state)


def predict(model, data, batch_size: int = 128) -> np.ndarray:
    """Top-1 class per sample of `data` (fp32, CPU, eval mode), int64."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, data.count, batch_size):
            rows = np.arange(start, min(start + batch_size, data.count))
            out.append(model(torch.from_numpy(data.load(rows))).argmax(dim=1).numpy())
    return np.concatenate(out).astype(np.int64)


def _torch_major_minor() -> str:
    import torch

    return ".".join(torch.__version__.split("+")[0].split(".")[:2])
