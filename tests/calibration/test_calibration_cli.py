"""`python -m calibration`: the path and a summary on success, one line on any bad input.

(Named test_calibration_cli.py: tests/ has no __init__.py files, so a second test_cli.py
would clash with tests/harness/test_cli.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from calibration.cli import main
from runs.config import CliRequest, model_spec, resolve
from runs.gating import calibrate_for
from sut.qsl import performance_sample_set
from sut.settings import mlperf_rules

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--model", "resnet18", "--image-size", "32", "--calibration-count", "8", "--algorithm", "max"]


def run_module(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    # DEEPGAP_CACHE is the session's cache (tests/conftest.py): the ONNX export is shared.
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "calibration", *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(code: int, stderr: str, *words: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("calibration: error: "), stderr
    for word in words:
        assert word.lower() in lines[0].lower(), f"{word!r} not in {lines[0]!r}"


@pytest.fixture()
def imagenet(tmp_path: Path) -> Path:
    root = tmp_path / "imagenet"
    root.mkdir()
    names = [f"ILSVRC2012_val_{i:08d}.png" for i in range(1, 4)]
    for index, name in enumerate(names):
        pixels = np.random.default_rng(index).integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / name, format="PNG")
    (root / "val_map.txt").write_text("".join(f"{name} {i}\n" for i, name in enumerate(names)))
    (tmp_path / "cal.txt").write_text(f"{names[2]}\n{names[0]}\n")
    return root


def test_module_builds_then_reuses(tmp_path: Path) -> None:
    output = tmp_path / "cal.json"
    proc = run_module([*TINY, "--output", output])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == str(output) and output.is_file()
    assert len(lines) == 2 and lines[1].startswith("resnet18 32px weights seed0: max over 8 synthetic")
    assert "built in" in lines[1]
    assert json.loads(output.read_text())["header"]["key"]["algorithm"] == "max"

    again = run_module([*TINY, "--output", output, "-q"])
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == str(output) and "reused" in again.stdout
    assert again.stderr == ""


def test_default_path_is_under_deepgap_cache(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY, "-q"]) == 0
    path = Path(capsys.readouterr().out.splitlines()[0])
    assert path == Path(os.environ["DEEPGAP_CACHE"]) / "calibration" / (
        "resnet18-32px-seed0-synthetic-max.json"
    )


def test_imagenet_with_a_calibration_list(
    imagenet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "imagenet-cal.json"
    code = main(["--model", "resnet18", "--image-size", "32", "--dataset", "imagenet",
                 "--dataset-path", str(imagenet), "--calibration-list", str(tmp_path / "cal.txt"),
                 "--algorithm", "percentile", "--percentile", "99.9", "--output", str(output), "-q"])
    out = capsys.readouterr().out
    assert code == 0
    assert "percentile 99.9% over 2 ImageNet images listed in cal.txt" in out
    key = json.loads(output.read_text())["header"]["key"]
    assert key["subset"]["kind"] == "imagenet-list" and key["percentile"] == 99.9


@pytest.mark.parametrize("args, words", [
    (["--algorithm", "kl"], ["--algorithm", "kl", "entropy"]),
    (["--model", "vgg16"], ["--model", "vgg16"]),
    (["--dataset", "coco"], ["--dataset", "coco"]),
    (["--percentile", "0"], ["--percentile", "(0, 100]"]),
    (["--percentile", "100.5"], ["--percentile"]),
    (["--percentile", "lots"], ["--percentile", "lots"]),
    (["--calibration-count", "0"], ["--calibration-count", "positive"]),
    (["--image-size", "16"], ["--image-size", "16"]),
    (["--batch-size", "-2"], ["--batch-size"]),
    (["--bogus"], ["unrecognized", "--bogus"]),
    (["--dataset", "imagenet"], ["--dataset-path"]),
    (["--calibration-list", "cal.txt"], ["--calibration-list", "--dataset imagenet"]),
    (["--weights", "missing.pt"], ["missing.pt"]),
])
def test_bad_input_is_one_line(
    args: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*TINY, *args])
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_line_error(code, captured.err, *words)


def test_bad_dataset_inputs_are_one_line(
    imagenet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [*TINY, "--dataset", "imagenet"]
    cases = [
        (["--dataset-path", str(tmp_path / "absent")], ["does not exist"]),
        (["--dataset-path", str(imagenet), "--calibration-count", "9"], ["count 9", "3 entries"]),
        (["--dataset-path", str(imagenet), "--calibration-list", str(tmp_path / "none.txt")],
         ["none.txt", "cannot read"]),
    ]
    listing = tmp_path / "bad.txt"
    listing.write_text("ILSVRC2012_val_00000001.png\nmissing_a.png\nmissing_b.png\n")
    cases.append((["--dataset-path", str(imagenet), "--calibration-list", str(listing)],
                  ["2 of 3", "missing_a.png"]))
    for args, words in cases:
        code = main([*base, *args])
        assert_one_line_error(code, capsys.readouterr().err, *words)


def test_module_bad_input_is_one_line() -> None:
    proc = run_module(["--algorithm", "kl"])
    assert proc.stdout == ""
    assert_one_line_error(proc.returncode, proc.stderr, "--algorithm")


def test_seeded_imagenet_needs_room_beside_the_performance_set(
    imagenet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A default run's performance set (1024 samples, at most the folder) takes all three
    images: no disjoint subset is possible, and the error says what to do instead."""
    code = main([*TINY, "--calibration-count", "2", "--dataset", "imagenet", "--dataset-path", str(imagenet)])
    assert_one_line_error(code, capsys.readouterr().err, "too small", "disjoint", "--calibration-list")


def test_standalone_calibration_builds_the_cache_a_default_run_reuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m calibration --dataset imagenet` avoids the performance set of a default
    run (mlperf.conf's seed and 1024 samples), so that run finds the cache ready."""
    root = tmp_path / "imagenet1040"
    root.mkdir()
    names = [f"ILSVRC2012_val_{i:08d}.png" for i in range(1, 1041)]
    for index, name in enumerate(names):
        Image.new("RGB", (8, 8), (index % 256, index // 256, 7)).save(root / name, format="PNG")
    (root / "val_map.txt").write_text("".join(f"{name} 0\n" for name in names))

    assert main([*TINY, "--dataset", "imagenet", "--dataset-path", str(root), "-q"]) == 0
    path = Path(capsys.readouterr().out.splitlines()[0])
    key = json.loads(path.read_text())["header"]["key"]["subset"]
    seed = int(mlperf_rules("Offline")["qsl_rng_seed"])
    assert {k: key["performance_set"][k] for k in ("total", "count", "qsl_rng_seed")} == {
        "total": 1040, "count": 1024, "qsl_rng_seed": seed}

    config = resolve(CliRequest(gpu="cpu", model="resnet18", image_size=32, precision="int8",
                                dataset="imagenet", dataset_path=root, calibration_count=8,
                                calibration_algorithm="max"))
    result = calibrate_for(config, model_spec(config), "imagenet")
    assert result.reused and result.path == path
    assert not set(performance_sample_set(1040, 1024, seed).tolist()).intersection(result.indices)
