"""Accuracy mode on a labelled (ImageNet-layout) dataset states pass/fail against 99% of
FP32's top-1, computed by the FP32 torch model on the same de-duplicated samples, and no
verdict at all where the figures carry no signal: seeded weights, or an FP32 reference
whose top-1 is not above chance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from runs.accuracy import SEEDED_REASON, AccuracyResult, above_chance, no_verdict_reason
from runs.config import resolve
from runs.gate import GateFigures, judge
from runs.runner import execute
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
    # No signal: no verdict, whatever the figures say.
    none = AccuracyResult("accuracy", 0, 512, 0, reference_percent=0.0, reference_good=0, no_verdict=SEEDED_REASON)
    assert none.passed is None and none.verdict_line() == f"no verdict: {SEEDED_REASON}"
    assert AccuracyResult.from_json(none.to_json()) == none


def test_chance_rule_is_a_binomial_bound() -> None:
    # 1000 classes: P(X >= 4 | 512, 0.001) = 0.0019, P(X >= 5) = 0.00019; the bound is 0.001.
    assert not above_chance(4, 512, 1000) and above_chance(5, 512, 1000)
    assert not above_chance(0, 512, 1000) and not above_chance(1, 24, 1000) and above_chance(2, 24, 1000)
    assert not above_chance(73, 50000, 1000) and above_chance(74, 50000, 1000)
    assert not above_chance(60, 100, 2)  # two classes: 60 of 100 is not clearly above 50
    assert no_verdict_reason(labelled=True, weights="seeded", reference_good=400, total=512) == SEEDED_REASON
    assert "not above chance" in no_verdict_reason(labelled=True, weights="torchvision", reference_good=0, total=512)
    assert no_verdict_reason(labelled=True, weights="torchvision", reference_good=390, total=512) is None
    assert "no labels" in no_verdict_reason(labelled=False, weights="torchvision", reference_good=None, total=512)


@pytest.mark.parametrize("agreement, passed", [(1.0, True), (0.5, False)])
def test_gate_gives_no_label_verdict_on_a_chance_level_reference(agreement, passed) -> None:
    """0% of FP32's 0% passed the old label rule; the gate now judges agreement instead."""
    figures = GateFigures(samples=500, agreement=agreement, cosine=0.9, relative_error=0.1, top1=0.0,
                          reference_top1=0.0, measured_on="test")
    verdict = judge(figures)
    assert verdict.passed is passed and "at chance: no label verdict" in verdict.rule
    assert judge(GateFigures(500, 1.0, 1.0, 0.0, top1=0.7, reference_top1=0.76)).rule == "top-1 >= 99% of FP32's top-1"


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
    from runs.accuracy import reference_top1

    predicted = reference_top1(ModelSpec("resnet18", "fp32", weights=str(weights), image_size=S), dataset, "cpu")
    (folder / VAL_MAP).write_text("".join(f"{name} {int(c)}\n" for name, c in zip(names, predicted)))
    # The same images labelled so that FP32 gets none right: a reference at chance.
    shutil.copytree(folder, root / "mislabelled")
    (root / "mislabelled" / VAL_MAP).write_text("".join(f"{name} {(int(c) + 1) % 1000}\n"
                                                       for name, c in zip(names, predicted)))
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


def test_seeded_weights_get_no_verdict_on_screen_and_in_every_file(labelled, tmp_path) -> None:
    """The H200 case: seeded weights on ImageNet printed "PASS" on 0% of FP32's 0%."""
    folder, _ = labelled
    out = tmp_path / "out"
    proc = run_cli(["--mode", "accuracy", "--dataset", "imagenet", "--dataset-path", folder,
                    "--image-size", str(S), "--model", "resnet18", "--gpu", "cpu", "--backend", "null",
                    "--no-progress", "--output", out], tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr  # no verdict is not a failure, nor a pass
    assert f"MLPerf accuracy rule: no verdict: {SEEDED_REASON}" in proc.stdout
    assert "PASS" not in proc.stdout and "FAIL" not in proc.stdout
    accuracy_txt = next(out.rglob("accuracy.txt")).read_text().splitlines()
    assert accuracy_txt[1] == f"no verdict: {SEEDED_REASON}"
    record = json.loads(next(out.rglob("measurements.json")).read_text())["runs"]["accuracy"]["accuracy"]
    assert record["passed"] is None and record["no_verdict"] == SEEDED_REASON


def test_a_reference_at_chance_gets_no_verdict(labelled, tiny_request) -> None:
    folder, weights = labelled
    config = resolve(tiny_request(backend="onnxruntime", mode="accuracy", dataset="imagenet",
                                  dataset_path=folder.parent / "mislabelled", dataset_count=None, weights=str(weights)))
    outcome = execute(config, show_progress=False)
    accuracy = outcome.accuracy
    assert accuracy is not None and accuracy.reference_percent == 0.0 and accuracy.reference_good == 0
    assert accuracy.passed is None and "not above chance for 1000 classes" in accuracy.no_verdict
    assert "no verdict: the FP32 reference's top-1 (0/24)" in (outcome.paths.run_dir / "accuracy.txt").read_text()
