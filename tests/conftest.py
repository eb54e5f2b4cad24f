"""Shared fixtures: tiny, fast run requests on the CPU, and the golden studies
(tests/golden/studies/*/study.json)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from runs.config import CliRequest
from runs.system import cpu_system_label, system_name
from sut.imagenet import VAL_MAP

# Small enough that a real LoadGen run with a real network takes about a second on 2 cores.
TINY = dict(
    gpu="cpu", model="resnet18", image_size=32, dataset_count=64,
    min_duration_ms=300, min_query_count=32,
)


def cpu_system(backend: str = "torch", precision: str = "fp32") -> str:
    """The system name of a run on this host's CPU, as the harness computes it
    ('CPU-<model>-<n>cpu_torch_fp32'): tests name no host's CPU."""
    return system_name(cpu_system_label(), backend, precision)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DEEPGAP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def tiny_request(tmp_path):
    def make(**overrides) -> CliRequest:
        values = dict(TINY, output=tmp_path / "out")
        values.update(overrides)
        return CliRequest(**values)

    return make


@pytest.fixture(scope="session")
def make_imagenet_folder() -> Callable[..., list[str]]:
    """make_imagenet_folder(folder, count, seed=0, labels=None, name=...) -> file names: an
    ImageNet-layout folder of `count` 48x40 noise PNGs and a val_map.txt labelling image i
    with labels[i] (default i % 10), names from `name` numbered from 1."""
    def make(folder: Path, count: int, seed: int = 0, labels: Sequence[int] | None = None,
             name: str = "ILSVRC2012_val_{:08d}.png") -> list[str]:
        folder.mkdir(parents=True)
        rng = np.random.default_rng(seed)
        names = [name.format(i + 1) for i in range(count)]
        for file in names:
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / file)
        labels = [i % 10 for i in range(count)] if labels is None else labels
        (folder / VAL_MAP).write_text("".join(f"{file} {label}\n" for file, label in zip(names, labels)))
        return names

    return make


@pytest.fixture
def held_elsewhere():
    """held_elsewhere(folder) -> the pid of another process holding `folder`'s lock."""
    holders: list[subprocess.Popen] = []

    def hold(folder: Path) -> int:
        code = ("import sys; from plumbing.files import folder_lock\n"
                f"with folder_lock({str(folder)!r}):\n    print('held', flush=True); sys.stdin.read()")
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        holders.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc.pid

    yield hold
    for proc in holders:
        proc.stdin.close()
        proc.wait(timeout=30)


GOLDEN_STUDIES = Path(__file__).parent / "golden" / "studies"


@pytest.fixture(scope="session")
def golden() -> Callable[[str], Path]:
    """golden("t4") -> the directory of that golden study."""
    return lambda name: GOLDEN_STUDIES / name


@pytest.fixture
def edited_study(tmp_path) -> Callable[[str, Callable[[dict[str, Any]], None]], Path]:
    """edited_study("t4", edit) -> a copy of golden study t4 with `edit` applied to its JSON."""
    def make(name: str, edit: Callable[[dict[str, Any]], None]) -> Path:
        data = json.loads((GOLDEN_STUDIES / name / "study.json").read_text())
        edit(data)
        directory = tmp_path / f"{name}-edited"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "study.json").write_text(json.dumps(data))
        return directory

    return make
