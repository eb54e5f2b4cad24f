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
import hashlib
import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from plumbing.errors import BackendError, ConfigError
from plumbing.files import atomic_path
from sut.backends.base import MODELS, ModelSpec
from sut.digits import NUM_CLASSES, DigitsDataset
from sut.onnx_export import cache_root

log = logging.getLogger(__name__)

# Bump whenever the training code changes the trained weights (data split, preprocessing,
# how sut.models builds the seeded starting point, the loop itself). A change of a
# DigitsRecipe field needs no bump: the recipe's digest is part of the file name too.
DIGITS_RECIPE_VERSION = 2


@dataclass(frozen=True)
class DigitsRecipe:
    """How the stand-in is trained: 60 steps of 32 images, about 1.5 passes over the
    1297-image train split, then batch-norm statistics from 512 of them. At 64 px on one
    CPU thread this reached 98.2% / 98.0% / 98.0% top-1 on the held-out digits for
    resnet18 / 50 / 101; the first recipe (60 steps of 64 images, no residual scaling)
    used twice the image passes for 99.2% / 98.6% / 93.8% (BENCHMARKS.md)."""

    steps: int = 60
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 3
    # Each residual block's last batch-norm scale starts at 1/sqrt(blocks) instead of 1, so
    # the sum of the random residual branches does not swamp the signal of a deep network
    # at the start (resnet101 after 40 steps of 32: 65% without, 98% with).
    residual_scale: bool = True
    batchnorm_images: int = 512  # train images whose statistics replace the running ones


RECIPE = DigitsRecipe()


def recipe_digest(recipe: DigitsRecipe | None = None) -> str:
    """Short digest of every field of `recipe` (default: RECIPE): a changed recipe never
    reuses an old file."""
    text = json.dumps(asdict(recipe or RECIPE), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def digits_weights_path(
    model_name: str, image_size: int, seed: int = 0, cache_dir: Path | str | None = None,
    device: str = "cpu",
) -> Path:
    """Where the trained state dict for these settings lives (whether or not it exists)."""
    kind = _device_kind(device)
    name = (
        f"{model_name}-{int(image_size)}px-seed{int(seed)}-"
        f"recipe{DIGITS_RECIPE_VERSION}-{recipe_digest()}-torch{_torch_major_minor()}"
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


def _train(model_name: str, image_size: int, seed: int, device: str = "cpu",
           recipe: DigitsRecipe | None = None) -> dict[str, Any]:
    """Fine-tune the seeded network on the train split on `device` with `recipe` (default:
    RECIPE); returns a CPU state dict."""
    import torch

    from sut.models import build_model

    recipe = recipe or RECIPE
    data = DigitsDataset(image_size=image_size, split="train", seed=seed)
    labels = torch.from_numpy(data.labels()).to(device)
    spec = ModelSpec(
        name=model_name, precision="fp32", weights="seeded", seed=seed,
        image_size=image_size, num_classes=NUM_CLASSES,
    )
    with _deterministic(seed, cuda=_device_kind(device) == "cuda"):
        model = build_model(spec)
        if recipe.residual_scale:
            _scale_residual_branches(model)
        model = model.to(device)
        # One fused kernel per step instead of a dozen per tensor: on a busy CPU every
        # small parallel region waits for a descheduled thread.
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr,
                                      weight_decay=recipe.weight_decay, fused=True)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: _lr_factor(step, recipe.steps, recipe.warmup_steps)
        )
        model.train()
        order = _sample_order(data.count, recipe.steps * recipe.batch_size, seed)
        running = 0.0
        for step in range(recipe.steps):
            rows = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            images = torch.from_numpy(data.load(rows)).to(device)
            loss = torch.nn.functional.cross_entropy(model(images), labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running += float(loss.detach())
            if (step + 1) % _LOG_EVERY == 0 or step + 1 == recipe.steps:
                log.info("digits %s %dpx step %d/%d: mean loss %.4f", model_name, image_size,
                         step + 1, recipe.steps, running / (step % _LOG_EVERY + 1))
                running = 0.0
        _reestimate_batchnorm(model, data, recipe.batch_size, recipe.batchnorm_images, device)
        model.eval()
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


_LOG_EVERY = 10


def _sample_order(count: int, total: int, seed: int) -> np.ndarray:
    """`total` train-split positions: seeded permutations of the split, one after another."""
    epochs = -(-total // count)
    return np.concatenate([
        np.random.default_rng([seed, epoch, 0x7472]).permutation(count) for epoch in range(epochs)
    ])[:total]


def _scale_residual_branches(model) -> None:
    """Set the last batch-norm scale of every residual block to 1/sqrt(number of blocks)."""
    import torch
    from torchvision.models.resnet import BasicBlock, Bottleneck

    blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    for block in blocks:
        last = block.bn3 if isinstance(block, Bottleneck) else block.bn2
        torch.nn.init.constant_(last.weight, len(blocks) ** -0.5)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + float(np.cos(np.pi * min(1.0, progress))))


def _reestimate_batchnorm(model, data: DigitsDataset, batch_size: int, images: int,
                          device: str = "cpu") -> None:
    """Replace the running statistics with exact averages over the first `images` train
    images (whole batches; 512 estimate them about as well as the 1297 of the split).

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
        count = min(int(images), data.count)
        for start in range(0, count - batch_size + 1, batch_size):
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
    previous_fill = torch.utils.deterministic.fill_uninitialized_memory
    rng_state = torch.random.get_rng_state()
    # cuBLAS is deterministic only with a fixed workspace; it reads this when the first
    # handle is made, so set it before any CUDA work (a no-op on the CPU).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=cuda)
    torch.backends.cudnn.benchmark = False
    # Deterministic mode also fills every new tensor with NaN, a debugging aid that costs
    # a pass over each activation and gradient; the kernels never read uninitialised memory.
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have a deterministic implementation.*")
            yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
        torch.backends.cudnn.benchmark = previous_benchmark
        torch.utils.deterministic.fill_uninitialized_memory = previous_fill
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
