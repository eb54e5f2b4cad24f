from __future__ import annotations

import os
from pathlib import Path

import pytest

from sut import cpu_cores


def _topology(root: Path, cores: dict[int, tuple[str, str]]) -> Path:
    for cpu, (package, core) in cores.items():
        folder = root / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "physical_package_id").write_text(package + "\n")
        (folder / "core_id").write_text(core + "\n")
    return root


def test_hyper_threads_of_one_core_count_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    root = _topology(tmp_path, {0: ("0", "0"), 1: ("0", "1"), 2: ("0", "0"), 3: ("0", "1")})
    assert cpu_cores.physical_cores(root) == 2


def test_same_core_id_on_two_packages_is_two_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    root = _topology(tmp_path, {0: ("0", "0"), 1: ("1", "0")})
    assert cpu_cores.physical_cores(root) == 2


def test_only_cpus_in_the_affinity_mask_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2})
    root = _topology(tmp_path, {0: ("0", "0"), 1: ("0", "1"), 2: ("0", "2")})
    assert cpu_cores.physical_cores(root) == 1


def test_unreadable_topology_counts_every_usable_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert cpu_cores.physical_cores(tmp_path / "missing") == 3
