"""Shared fixtures: tiny, fast run requests on the CPU."""

from __future__ import annotations

import pytest

from harness.config import CliRequest

# Small enough that a real LoadGen run with a real network takes about a second on 2 cores.
TINY = dict(
    gpu="cpu", model="resnet18", image_size=32, dataset_count=64,
    min_duration_ms=300, min_query_count=32,
)


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
