"""user.conf: MLPerf's `model.scenario.key = value` format, parsed strictly.

LoadGen's own parser silently ignores unknown keys, so a typo such as `target_qsp` would
run with the default and nobody would notice. Here every line is checked and an error
names the file and line. Lookup order matches LoadGen: `model.scenario.key`,
`*.scenario.key`, `model.*.key`, `*.*.key`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plumbing.errors import ConfigError
from sut.backends.base import MODELS
from sut.settings import SCENARIOS, setting_problem


@dataclass(frozen=True)
class KeyRule:
    attr: str
    scale: float = 1.0  # user.conf unit -> TestSettings unit (ms -> ns, percent -> fraction)


_COMMON = {
    "mode": KeyRule("mode"),
    "min_duration": KeyRule("min_duration_ms"),
    "max_duration": KeyRule("max_duration_ms"),
    "min_query_count": KeyRule("min_query_count"),
    "max_query_count": KeyRule("max_query_count"),
    "qsl_rng_seed": KeyRule("qsl_rng_seed"),
    "sample_index_rng_seed": KeyRule("sample_index_rng_seed"),
    "schedule_rng_seed": KeyRule("schedule_rng_seed"),
    "accuracy_log_rng_seed": KeyRule("accuracy_log_rng_seed"),
    "accuracy_log_probability": KeyRule("accuracy_log_probability", 0.01),
    "accuracy_log_sampling_target": KeyRule("accuracy_log_sampling_target"),
    "print_timestamps": KeyRule("print_timestamps"),
    "performance_issue_unique": KeyRule("performance_issue_unique"),
    "performance_issue_same": KeyRule("performance_issue_same"),
    "performance_issue_same_index": KeyRule("performance_issue_same_index"),
    "performance_sample_count_override": KeyRule("performance_sample_count_override"),
    "sample_concatenate_permutation": KeyRule("sample_concatenate_permutation"),
}
_PER_SCENARIO: dict[str, dict[str, KeyRule]] = {
    "SingleStream": {
        "target_latency": KeyRule("single_stream_expected_latency_ns", 1e6),
        "target_latency_percentile": KeyRule("single_stream_target_latency_percentile", 0.01),
    },
    "MultiStream": {
        "target_latency": KeyRule("multi_stream_expected_latency_ns", 1e6),
        "target_latency_percentile": KeyRule("multi_stream_target_latency_percentile", 0.01),
        "samples_per_query": KeyRule("multi_stream_samples_per_query"),
    },
    "Server": {
        "target_latency": KeyRule("server_target_latency_ns", 1e6),
        "target_latency_percentile": KeyRule("server_target_latency_percentile", 0.01),
        "target_qps": KeyRule("server_target_qps"),
        "coalesce_queries": KeyRule("server_coalesce_queries"),
        "max_async_queries": KeyRule("server_max_async_queries"),
    },
    "Offline": {"target_qps": KeyRule("offline_expected_qps")},
}
KNOWN_KEYS = set(_COMMON) | {k for keys in _PER_SCENARIO.values() for k in keys}
_LINE = re.compile(r"^(?P<model>[^.\s=]+)\.(?P<scenario>[^.\s=]+)\.(?P<key>[^.\s=]+)\s*=\s*(?P<value>\S+)$")


def key_rule(scenario: str, key: str) -> KeyRule | None:
    """How `key` applies in `scenario`; None where LoadGen ignores it there."""
    return _PER_SCENARIO[scenario].get(key) or _COMMON.get(key)


def to_attr_value(rule: KeyRule, raw: int | float) -> Any:
    if rule.scale == 1:
        return raw  # seeds are 64-bit: never round-trip them through a float
    value = raw * rule.scale
    return int(round(value)) if float(value).is_integer() else value


@dataclass(frozen=True)
class Entry:
    model: str
    scenario: str
    key: str
    value: int | float
    line: int


class UserConf:
    def __init__(self, path: Path, entries: list[Entry]) -> None:
        self.path = path
        self.entries = entries

    @classmethod
    def parse(cls, path: str | Path) -> "UserConf":
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ConfigError(f"user.conf {path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"user.conf {path}: cannot read ({exc})") from None
        entries = [
            entry
            for number, line in enumerate(text.splitlines(), start=1)
            if (entry := _parse_line(path, number, line)) is not None
        ]
        return cls(path, entries)

    def resolve(self, model: str, scenario: str) -> dict[str, tuple[Any, str]]:
        """TestSettings attribute -> (value, 'file:line') for this model and scenario."""
        by_key: dict[tuple[str, str, str], Entry] = {}
        for entry in self.entries:
            by_key[(entry.model, entry.scenario, entry.key)] = entry  # later lines win
        resolved: dict[str, tuple[Any, str]] = {}
        for key in sorted({e.key for e in self.entries}):
            rule = key_rule(scenario, key)
            if rule is None:
                continue
            for m, s in ((model, scenario), ("*", scenario), (model, "*"), ("*", "*")):
                entry = by_key.get((m, s, key))
                if entry is not None:
                    resolved[rule.attr] = (to_attr_value(rule, entry.value), f"{self.path}:{entry.line}")
                    break
        return resolved


def _parse_line(path: Path, number: int, line: str) -> Entry | None:
    text = line.split("#", 1)[0].strip()
    if not text:
        return None
    where = f"{path}:{number}"
    match = _LINE.match(text)
    if not match:
        raise ConfigError(f"{where}: expected 'model.scenario.key = value', got {line.strip()!r}")
    model, scenario, key = match["model"], match["scenario"], match["key"]
    # A line for another model or scenario would be silently skipped by every run.
    if model != "*" and model not in MODELS:
        raise ConfigError(f"{where}: unknown model {model!r}; use one of {', '.join(MODELS)} or *")
    if scenario != "*" and scenario not in SCENARIOS:
        raise ConfigError(f"{where}: unknown scenario {scenario!r}; use one of {', '.join(SCENARIOS)} or *")
    if key not in KNOWN_KEYS:
        raise ConfigError(f"{where}: unknown key {key!r}")
    raw = match["value"]
    try:
        value: int | float = int(raw, 0) if re.fullmatch(r"[+-]?(0[xX][0-9a-fA-F]+|\d+)", raw) else float(raw)
    except ValueError:
        raise ConfigError(f"{where}: value {raw!r} is not a number") from None
    if not math.isfinite(value):  # float() reads "inf", "nan" and an overflowing 1e400 (as inf)
        raise ConfigError(f"{where}: value {raw!r} is not a finite number")
    if value < 0:
        raise ConfigError(f"{where}: value {raw!r} must be a non-negative number")
    for rule in _rules_for(scenario, key):
        problem = setting_problem(rule.attr, to_attr_value(rule, value))
        if problem is not None:
            raise ConfigError(f"{where}: {key} = {raw}: {problem}")
    return Entry(model, scenario, key, value, number)


def _rules_for(scenario: str, key: str) -> list[KeyRule]:
    """Every TestSettings attribute `key` sets, in `scenario` or (for *) in any scenario."""
    scenarios = SCENARIOS if scenario == "*" else (scenario,)
    return [rule for s in scenarios if (rule := key_rule(s, key)) is not None]


def render(model: str, scenario: str, values: dict[str, tuple[Any, str]]) -> str:
    """Effective settings as a user.conf for `model.scenario`, each line commented with
    the layer it came from. Only attributes expressible as user.conf keys are written."""
    lines = [f"# Effective LoadGen settings for {model} {scenario}, as resolved by deepgap.", ""]
    for key in sorted(KNOWN_KEYS):
        rule = key_rule(scenario, key)
        if rule is None or rule.attr not in values or key == "mode":
            continue
        value, source = values[rule.attr]
        user_value = round(value / rule.scale, 9) if rule.scale != 1 else value
        if isinstance(user_value, bool):
            user_value = int(user_value)
        if isinstance(user_value, float) and user_value.is_integer():
            user_value = int(user_value)
        lines.append(f"{model}.{scenario}.{key} = {user_value}  # from {source}")
    return "\n".join(lines) + "\n"
