"""Accuracy mode on a labelled (ImageNet-layout) dataset states pass/fail against 99% of
FP32's top-1, computed by the FP32 torch model on the same de-duplicated samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.accuracy import AccuracyResult
from harness.config import resolve
from harness.runner import execute
from sut.backends.base import ModelSpec
from sut.imagenet import VAL_MAP, ImageNetDataset
from tests.harness.test_cli import run_cli

S = 32
COUNT = 24


def test_verdict_arithmetic() -> None:
    assert AccuracyResult("accuracy", 75, 100, 0).passed is None  # no reference: no verdict
    edge = AccuracyResult("accuracy", 7570, 10000, 0, reference_percent=76.46)
    assert edge.threshold_percent == pytest.approx(75.6954)
    assert edge.passed is True
    assert AccuracyResult("accuracy", 7569, 10000, 0, reference_percent=76.46).passed is False
    # A failed batch never passes, whatever the count.
    assert AccuracyResult("accuracy", 100, 100, 1, reference_percent=50.0).passed is False
    assert "FAIL" in AccuracyResult("accuracy", 1, 100, 0, reference_percent=50.0).verdict_line()
    assert AccuracyResult("fp32_agreement", 64, 64, 0).to_json()["passed"] is None


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory, make_imagenet_folder) -> tuple[Path, Path]:
    """A tiny ImageNet-layout folder labelled with FP32 predictions of saved weights, so
    FP32's top-1 is 100% there and a faithful runtime must stay within 1% of it."""
    import torch

    from sut.models import build_model

    root = tmp_path_factory.mktemp("labelled")
    folder = root / "imagenet"
    weights = root / "resnet18.pt"
    torch.save(build_model(ModelSpec("resnet18", "fp32", image_size=S)).state_dict(), weights)
    names = make_imagenet_folder(folder, COUNT, seed=5, labels=[0] * COUNT, name="img_{:03d}.png")
    dataset = ImageNetDataset(folder, image_size=S)
    from harness.accuracy import reference_top1

    predicted = reference_top1(ModelSpec("resnet18", "fp32", weights=str(weights), image_size=S), dataset, "cpu")
    (folder / VAL_MAP).write_text("".join(f"{name} {int(c)}\n" for name, c in zip(names, predicted)))
    return folder, weights


def test_faithful_runtime_passes(labelled, tiny_request) -> None:
    folder, weights = labelled
    config = resolve(tiny_request(backend="onnxruntime", mode="accuracy", dataset="imagenet",
                                  dataset_path=folder, dataset_count=None, weights=str(weights)))
    outcome = execute(config, show_progress=False)
    accuracy = outcome.accuracy
    assert accuracy is not None and accuracy.total == COUNT
    assert accuracy.reference_percent == 100.0
    assert accuracy.passed is True
    text = (outcome.paths.run_dir / "accuracy.txt").read_text()
    assert text.startswith(f"accuracy=100.000%, good={COUNT}, total={COUNT}")
    assert "PASS" in text and "FP32 torch on the same samples" in text
    record = json.loads(outcome.paths.measurements.read_text())["runs"]["accuracy"]["accuracy"]
    assert record["passed"] is True and record["threshold_percent"] == pytest.approx(99.0)


def test_unfaithful_runtime_fails_with_exit_4(labelled, tmp_path) -> None:
    """The null backend answers pixel checksums: far below FP32, so FAIL and exit 4, with
    the result kept."""
    folder, weights = labelled
    out = tmp_path / "out"
    proc = run_cli(["--mode", "accuracy", "--dataset", "imagenet", "--dataset-path", folder,
                    "--weights", weights, "--image-size", str(S), "--model", "resnet18", "--gpu", "cpu",
                    "--backend", "null", "--no-progress", "--output", out], tmp_path / "cache")
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "below 99% of FP32" in proc.stderr.splitlines()[-1]
    assert "MLPerf accuracy rule: FAIL" in proc.stdout
    accuracy_txt = next(out.rglob("accuracy.txt")).read_text()
    assert "FAIL" in accuracy_txt
