"""Runs the accuracy gate for a configured run, before its performance run.

What the gate measures on:
* ImageNet with real (torchvision or state-dict) weights: the run's own network, on a
  seeded check subset of the dataset, against its labels (MLPerf's rule).
* Otherwise (the synthetic default, or seeded weights): seeded weights predict nearly one
  class for every input, which makes any comparison meaningless. The gate then checks the
  same architecture, backend, precision and calibration procedure on a network fine-tuned
  on scikit-learn's handwritten digits (trained on the run's device, cached), on the
  digits' held-out check split, against its labels. On a GPU it runs at the run's image
  size; on the CPU at most at CPU_STANDIN_MAX_PX, because training a ResNet at 224 px on
  a few CPU cores takes tens of minutes. The report says which size was checked.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np

from runs.config import RunConfig, model_spec
from plumbing.errors import DeepgapError
from runs.gate import GateVerdict, check_figures, judge
from sut.backends import backend_info, create_backend
from sut.backends.base import BackendOptions, ModelSpec

log = logging.getLogger(__name__)

# Largest image size the digits stand-in is trained and checked at on the CPU. The
# network's layers, precision graph and calibration are the same at any input size
# (ResNets pool adaptively); only the spatial extent of the activations differs.
CPU_STANDIN_MAX_PX = 64


class GateFailed(DeepgapError):
    """A reduced precision disagrees with FP32 beyond the rule; the run was not measured."""

    exit_code = 4


def gate_target(config: RunConfig, device: str = "cpu") -> tuple[ModelSpec, Any, np.ndarray, str]:
    """(model spec under test, check dataset, check indices, description)."""
    r = config.request
    if r.dataset == "imagenet" and r.weights != "seeded":
        from sut.imagenet import ImageNetDataset

        dataset = ImageNetDataset(r.dataset_path, image_size=r.image_size, count=r.dataset_count)
        excluded = _calibration_indices(config, dataset)
        candidates = np.setdiff1d(np.arange(dataset.count), excluded)
        rng = np.random.default_rng(r.seed + 7)
        indices = np.sort(rng.permutation(candidates)[: r.gate_samples])
        return model_spec(config), dataset, indices, f"{len(indices)} held-out ImageNet images from {r.dataset_path}"
    from sut.digits import DigitsDataset
    from sut.digits_model import digits_spec

    size = r.image_size if device.startswith("cuda") else min(r.image_size, CPU_STANDIN_MAX_PX)
    spec = digits_spec(r.model, r.precision, size, seed=r.seed, device=device)
    dataset = DigitsDataset(image_size=size, split="check", seed=r.seed)
    indices = np.arange(min(r.gate_samples, dataset.count))
    reduced = "" if size == r.image_size else f", reduced from the run's {r.image_size} px on the CPU"
    return spec, dataset, indices, (
        f"{r.model} fine-tuned on scikit-learn digits, {len(indices)} held-out check images at "
        f"{size} px{reduced} (stands in for the seeded network, whose predictions carry no signal)"
    )


def _calibration_indices(config: RunConfig, dataset: Any) -> np.ndarray:
    """ImageNet indices the calibration subset uses, kept out of the check subset."""
    if config.request.precision != "int8":
        return np.empty(0, dtype=np.int64)
    from calibration.api import make_subset

    subset = make_subset(model_spec(config), calibration_config(config, "imagenet"))
    return np.asarray(subset.indices, dtype=np.int64)


def calibration_config(config: RunConfig, dataset_kind: str):
    from calibration.api import CalibrationConfig
    from calibration.subset import PerformanceSetRule

    r = config.request
    imagenet = dataset_kind == "imagenet"
    return CalibrationConfig(
        dataset=dataset_kind,
        dataset_path=r.dataset_path if imagenet else None,
        calibration_list=r.calibration_list if imagenet else None,
        count=r.calibration_count,
        seed=r.calibration_seed,
        algorithm=r.calibration_algorithm,
        percentile=r.calibration_percentile,
        # The performance set this run's own settings choose, which the subset stays out of.
        performance_set=PerformanceSetRule.from_loadgen(config.loadgen, r.dataset_count) if imagenet else None,
    )


def calibrate_for(config: RunConfig, spec: ModelSpec, dataset_kind: str):
    """The calibration cache for `spec` (built or reused)."""
    from calibration.api import calibrate_config

    result = calibrate_config(spec, calibration_config(config, dataset_kind))
    log.info("calibration %s (%s): %s", "reused" if result.reused else "built", result.subset, result.path)
    return result


def run_gate(config: RunConfig, options: BackendOptions) -> GateVerdict:
    """Compare the configured backend and precision (compiled, when the run compiles) with
    eager FP32 torch; raise nothing."""
    from sut.backends.torch_backend import TorchBackend

    spec, dataset, indices, measured_on = gate_target(config, options.device)
    extra = dict(options.extra)
    if spec.precision == "int8":
        kind = "imagenet" if dataset.name == "imagenet" else "digits"
        extra["calibration"] = calibrate_for(config, spec, kind).cache
    # A compiled network is checked as the run compiles it: same mode, same max batch (the
    # dynamic batch graph is traced at it), so the run's compile finds the gate's graphs in
    # Inductor's cache. A backend whose build depends on the max batch (a TensorRT engine:
    # the batch range is its profile, picks its tactics and is in its cache key) is checked
    # as built for the run's, so the gate measures the engine that is timed, not another.
    # Otherwise 64 bounds the gate's memory whatever the run's batch.
    compiled = options.compile != "none"
    as_run = compiled or backend_info(config.backend).artefact_depends_on_max_batch
    gate_options = BackendOptions(device=options.device, max_batch=options.max_batch if as_run else 64,
                                  in_flight=1, cuda_graphs=False, compile=options.compile,
                                  channels_last=options.channels_last, staging=options.staging,
                                  threads=options.threads, extra=extra)
    reference_spec = ModelSpec(spec.name, "fp32", spec.weights, spec.seed, spec.image_size, spec.num_classes)
    under_test = create_backend(config.backend, spec, gate_options)
    reference = TorchBackend(reference_spec, BackendOptions(device=options.device, max_batch=64,
                                                            in_flight=1, cuda_graphs=False))
    try:
        under_test.load()
        reference.load()
        started = time.perf_counter()
        figures = check_figures(under_test, reference, dataset, indices, measured_on)
        module = under_test.describe().get("compile") if compiled else None
        log.info("accuracy gate: %d check images through %s %s and FP32 torch in %.1f s",
                 len(indices), config.backend, spec.precision, time.perf_counter() - started)
    finally:
        under_test.close()
        reference.close()
    verdict = dataclasses.replace(judge(figures, config.request.gate_min_agreement, spec.num_classes), module=module)
    log.info("%s", verdict.line())
    return verdict
