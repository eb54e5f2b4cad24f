"""GPU profiles and run profiles, loaded from the YAML files beside this module.

A GPU profile (`profiles/<NAME>.yaml`) carries tuned defaults per scenario, model and
precision: harness knobs (`max_batch`, `batch_timeout_us`, `in_flight`) and LoadGen
settings (`server_target_qps`, `offline_expected_qps`, ...). A run profile
(`run_profiles.yaml`) shortens or keeps MLPerf's durations and query counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from plumbing.errors import ConfigError
from sut.settings import SCENARIOS, SETTING_TYPES, setting_problem

PROFILE_DIR = Path(__file__).parent / "profiles"
RUN_PROFILES_FILE = Path(__file__).parent / "run_profiles.yaml"
ENDPOINT_PROFILE_FILE = Path(__file__).parent / "endpoint.yaml"
HARNESS_KEYS: dict[str, type] = {
    "max_batch": int,
    "batch_timeout_us": int,
    "in_flight": int,
    "cuda_graphs": bool,
    "staging": str,
    "threads": int,
}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read profile ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _check_values(path: Path, where: str, values: Any) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: {where} must be a mapping")
    for key, value in values.items():
        expected = HARNESS_KEYS.get(key) or SETTING_TYPES.get(key)
        if expected is None:
            raise ConfigError(f"{path}: {where}: unknown key {key!r}")
        if expected in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ConfigError(f"{path}: {where}.{key} must be a non-negative number, got {value!r}")
        problem = setting_problem(key, value) if key in SETTING_TYPES else None
        if problem is not None:
            raise ConfigError(f"{path}: {where}.{key} {problem}")
    return values


def _check_scenarios(path: Path, where: str, block: Any) -> dict[str, dict[str, Any]]:
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise ConfigError(f"{path}: {where} must be a mapping of scenarios")
    for scenario, values in block.items():
        if scenario not in SCENARIOS:
            raise ConfigError(f"{path}: {where}: unknown scenario {scenario!r}")
        _check_values(path, f"{where}.{scenario}", values)
    return block


@dataclass(frozen=True)
class GpuProfile:
    name: str
    device: str  # "cuda" or "cpu" ("remote": the endpoint profile, scenarios/endpoint.yaml)
    match: str | None  # regex matched case-insensitively against the CUDA device name
    notes: str
    path: Path
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, dict[str, dict[str, Any]]]] = field(default_factory=dict)

    def matches(self, device_name: str) -> bool:
        return bool(self.match) and re.search(self.match, device_name, re.IGNORECASE) is not None

    def settings_for(self, model: str, precision: str, scenario: str) -> dict[str, Any]:
        merged = dict(self.defaults.get(scenario, {}))
        merged.update(self.models.get(model, {}).get(precision, {}).get(scenario, {}))
        return merged


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_gpu_profile(name: str) -> GpuProfile:
    by_lower = {n.lower(): n for n in profile_names()}
    if name.lower() not in by_lower:
        raise ConfigError(
            f"unknown GPU profile {name!r}; choose from {', '.join(profile_names())} or auto"
        )
    return _profile(PROFILE_DIR / f"{by_lower[name.lower()]}.yaml", ("cuda", "cpu"))


def load_endpoint_profile() -> GpuProfile:
    """The client-side knobs of a run against a remote server (--backend kserve)."""
    return _profile(ENDPOINT_PROFILE_FILE, ("remote",))


def _profile(path: Path, devices: tuple[str, ...]) -> GpuProfile:
    data = _read_yaml(path)
    models = data.get("models") or {}
    if not isinstance(models, dict):
        raise ConfigError(f"{path}: models must be a mapping")
    for model, precisions in models.items():
        if not isinstance(precisions, dict):
            raise ConfigError(f"{path}: models.{model} must be a mapping of precisions")
        for precision, scenarios in precisions.items():
            _check_scenarios(path, f"models.{model}.{precision}", scenarios)
    device = data.get("device")
    if device not in devices:
        raise ConfigError(f"{path}: device must be {' or '.join(repr(d) for d in devices)}")
    return GpuProfile(
        name=str(data.get("name", path.stem)),
        device=device,
        match=data.get("match"),
        notes=str(data.get("notes", "")).strip(),
        path=path,
        defaults=_check_scenarios(path, "defaults", data.get("defaults")),
        models=models,
    )


@dataclass(frozen=True)
class RunProfile:
    name: str
    description: str
    scenarios: dict[str, dict[str, Any]]
    # Longest a run may take to reach LoadGen's early-stopping minimum query count; None:
    # the profile's own query counts stand (the submission profile's are MLPerf's).
    early_stopping_within_s: float | None = None

    def settings_for(self, scenario: str) -> dict[str, Any]:
        return dict(self.scenarios.get(scenario, {}))


def run_profile_names() -> list[str]:
    return sorted(_read_yaml(RUN_PROFILES_FILE))


DEFAULT_RUN_PROFILE = "quick"


def load_run_profile(name: str) -> RunProfile:
    data = _read_yaml(RUN_PROFILES_FILE)
    if name not in data:
        raise ConfigError(f"unknown run profile {name!r}; choose from {', '.join(sorted(data))}")
    entry = data[name] or {}
    unknown = set(entry) - {"description", "scenarios", "early_stopping_within_s"}
    if unknown:
        raise ConfigError(f"{RUN_PROFILES_FILE}: {name}: unknown key {sorted(unknown)[0]!r}")
    within = entry.get("early_stopping_within_s")
    if within is not None and (isinstance(within, bool) or not isinstance(within, (int, float)) or not within > 0):
        raise ConfigError(f"{RUN_PROFILES_FILE}: {name}.early_stopping_within_s must be a positive number of seconds")
    return RunProfile(
        name=name,
        description=str(entry.get("description", "")).strip(),
        scenarios=_check_scenarios(RUN_PROFILES_FILE, name, entry.get("scenarios")),
        early_stopping_within_s=None if within is None else float(within),
    )
