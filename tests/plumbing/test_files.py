"""Atomic writes, recorded digests and the folder lock (plumbing/files.py)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from plumbing.errors import OutputError
from plumbing.files import LOCK_FILE, atomic_path, digest_matches, digest_path, folder_lock, write_atomic, write_digest


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_write_atomic_replaces_and_creates_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.txt"
    write_atomic(target, "one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two" and sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]


def test_a_digest_tells_the_file_written_from_any_other(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"graph")
    assert digest_matches(target) == (False, "no recorded sha256 (model.onnx.sha256)")
    write_digest(target)
    assert digest_matches(target) == (True, "")
    assert digest_path(target).read_text().endswith("  model.onnx\n")  # sha256sum -c reads it
    target.write_bytes(b"grap")
    matches, why = digest_matches(target)
    assert not matches and "does not match" in why


def test_a_lock_whose_holder_was_killed_is_free(tmp_path: Path, held_elsewhere) -> None:
    """flock, not a pid file: the kernel drops the lock of a process killed by SIGKILL."""
    folder = tmp_path / "scenario"
    pid = held_elsewhere(folder)
    with pytest.raises(OutputError, match=f"pid {pid}"):
        with folder_lock(folder):
            pass
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        try:
            with folder_lock(folder):
                assert (folder / LOCK_FILE).read_text().strip() == str(os.getpid())
            break
        except OutputError:
            assert time.monotonic() < deadline, "the lock of a killed holder was never released"
            time.sleep(0.05)
    assert not (folder / LOCK_FILE).exists()
