"""A ResNet fine-tuned on the digits train split, trained once and cached.

Seeded random weights predict nearly one class for every input, so precision checks that
compare predictions (top-1 agreement with FP32) need a network whose output depends on
its input the way a trained one's does. `digits_weights` trains the torchvision ResNet
(starting from the project's seeded weights, 10 classes) at the image size it will run
at, deterministically, on the CPU or a CUDA device, and keeps the state dict in the
deepgap cache (one file per device kind: CPU and CUDA kernels round differently, so the
two trainings are not bit-identical):

    path = digits_weights("resnet18", 32)
    spec = ModelSpec("resnet18", "int8", weights=str(path), image_size=32, num_classes=10)

Training at one image size and running at another is not supported: batch-norm
statistics are estimated at the training size.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from harness.errors import BackendError, ConfigError
from harness.files import atomic_path
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
    model_name: str, image_size: int, seed: int = 0, cache_dir: Path | str | None = None,
    device: str = "cpu",
) -> Path:
    """Where the trained state dict for these settings lives (whether or not it exists)."""
    kind = _device_kind(device)
    name = (
        f"{model_name}-{int(image_size)}px-seed{int(seed)}-"
        f"recipe{DIGITS_RECIPE_VERSION}-torch{_torch_major_minor()}"
        f"{'' if kind == 'cpu' else '-' + kind}.pt"
    )
    return cache_root(cache_dir) / "digits" / name


def digits_spec(
    model_name: str,
    precision: str = "fp32",
    image_size: int = 224,
    seed: int = 0,
    cache_dir: Path | str | None = None,
    device: str = "cpu",
) -> ModelSpec:
    """A ModelSpec running the digits-trained network (training it first if not cached)."""
    path = digits_weights(model_name, image_size, seed=seed, cache_dir=cache_dir, device=device)
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
    device: str = "cpu",
) -> Path:
    """Path to the state dict of `model_name` fine-tuned on the digits train split.

    Trains it on `device` ("cpu", "cuda", "cuda:N") first when it is not cached (seconds
    on a GPU; on the CPU seconds at 32 px to many minutes at 224 px). The file is a plain
    state dict for a 10-class network, loadable
    with `--weights PATH` / `ModelSpec(weights=str(path), num_classes=10)`.
    """
    if model_name not in MODELS:
        raise ConfigError(f"unknown model {model_name!r}; choose from {', '.join(MODELS)}")
    if int(image_size) < 8:
        raise ConfigError(f"digits training needs an image size of at least 8, not {image_size}")
    target = digits_weights_path(model_name, image_size, seed, cache_dir, device)
    if target.is_file():
        log.info("reusing cached digits weights %s", target)
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackendError(f"cannot create the digits weights folder {target.parent}: {exc}") from exc

    import torch

    log.info(
        "training %s on the digits train split at %d px on %s (seed %d, recipe %d, %d threads)...",
        model_name, image_size, device, seed, DIGITS_RECIPE_VERSION, torch.get_num_threads(),
    )
    started = time.perf_counter()
    state = _train(model_name, int(image_size), int(seed), device)
    # A unique temporary name in the same folder, then an atomic rename: concurrent
    # trainings and readers never see a partly written file.
    try:
        with atomic_path(target) as tmp, open(tmp, "wb") as handle:
            torch.save(state, handle)
    except OSError as exc:
        raise BackendError(f"cannot write the digits weights {target}: {exc}") from exc
    log.info("digits weights written in %.1f s: %s", time.perf_counter() - started, target)
    return target


def _train(model_name: str, image_size: int, seed: int, device: str = "cpu") -> dict[str, Any]:
    """Fine-tune the seeded network on the train split on `device`; returns a CPU state dict."""
    import torch

    from sut.models import build_model

    recipe = RECIPE
    data = DigitsDataset(image_size=image_size, split="train", seed=seed)
    labels = torch.from_numpy(data.labels()).to(device)
    spec = ModelSpec(
        name=model_name, precision="fp32", weights="seeded", seed=seed,
        image_size=image_size, num_classes=NUM_CLASSES,
    )
    with _deterministic(seed, cuda=_device_kind(device) == "cuda"):
        model = build_model(spec).to(device)
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
                images = torch.from_numpy(data.load(rows)).to(device)
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
        _reestimate_batchnorm(model, data, recipe.batch_size, device)
        model.eval()
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + float(np.cos(np.pi * min(1.0, progress))))


def _reestimate_batchnorm(model, data: DigitsDataset, batch_size: int, device: str = "cpu") -> None:
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
            model(torch.from_numpy(data.load(np.arange(start, start + batch_size))).to(device))
    for module, momentum in zip(norms, saved):
        module.momentum = momentum


@contextlib.contextmanager
def _deterministic(seed: int, cuda: bool = False) -> Iterator[None]:
    """Seeded RNG and deterministic kernels for the duration; restores global settings.

    On CUDA, adaptive average pooling's backward pass has no deterministic kernel (it
    adds with atomics), so there determinism is requested with warn_only: a retraining
    on a GPU can differ in the last bits, which is why the file is cached per device kind.
    """
    import torch

    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_benchmark = torch.backends.cudnn.benchmark
    rng_state = torch.random.get_rng_state()
    # cuBLAS is deterministic only with a fixed workspace; it reads this when the first
    # handle is made, so set it before any CUDA work (a no-op on the CPU).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=cuda)
    torch.backends.cudnn.benchmark = False
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have a deterministic implementation.*")
            yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
        torch.backends.cudnn.benchmark = previous_benchmark
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


def _device_kind(device: str) -> str:
    """"cpu" or "cuda": the weights file does not depend on which CUDA card trained it."""
    kind = str(device).split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"digits training runs on cpu or cuda, not {device!r}")
    return kind


def _torch_major_minor() -> str:
    import torch

    return ".".join(torch.__version__.split("+")[0].split(".")[:2])
