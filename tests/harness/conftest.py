"""Fixtures for the golden studies (tests/harness/golden/studies/*/study.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

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
