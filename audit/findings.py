"""What the results checker reports: findings per result folder, and the report over a
tree; with the helpers the rule modules (audit/check.py, audit/verdict_rules.py) share."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.compliance import audit_applied
from plumbing.errors import OutputError
from runs.loadgen_log import Detail, parse_detail

RELAXED_NOTE = ("min duration (600 s), min query/sample count and performance sample count (1024) "
                "rules relaxed; an accuracy verdict not required")
PERF = "performance/run_1"


@dataclass(frozen=True)
class Finding:
    status: str  # "PASS", "FAIL" or "NOTE" (a figure or a relaxed rule: never a pass)
    rule: str
    file: str  # relative to the checked root
    message: str

    def line(self) -> str:
        return f"  {self.status} [{self.rule}] {self.file}: {self.message}"


@dataclass
class ScenarioCheck:
    """One results/<system>/<model>/<scenario> folder and what the rules found in it."""

    root: Path
    path: Path
    strict: bool = True
    rehearsal: str | None = None
    findings: list[Finding] = field(default_factory=list)
    _details: dict[str, Detail | None] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return "/".join(self.path.parts[-3:])

    @property
    def scenario(self) -> str:
        return self.path.name

    @property
    def passed(self) -> bool:
        return not any(f.status == "FAIL" for f in self.findings)

    def rel(self, relative: str | Path) -> str:
        target = self.path / relative
        try:
            return str(target.relative_to(self.root))
        except ValueError:
            return str(target)

    def add(self, ok: bool | None, rule: str, relative: str | Path, message: str) -> None:
        status = "NOTE" if ok is None else "PASS" if ok else "FAIL"
        self.findings.append(Finding(status, rule, self.rel(relative), message))

    def detail(self, relative: str) -> Detail | None:
        """The parsed detail log, or None where it is missing (reported by the files rule)
        or unreadable (reported here, once)."""
        if relative not in self._details:
            path = self.path / relative
            parsed = None
            if path.is_file():
                try:
                    parsed = parse_detail(path)
                except OutputError as exc:
                    self.add(False, "detail-log", relative, str(exc))
            self._details[relative] = parsed
        return self._details[relative]

    def measurements(self) -> dict[str, Any] | None:
        """measurements.json, or None where it is missing (the files rule reports that) or
        not valid JSON (reported here)."""
        path = self.path / "measurements.json"
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            self.add(False, "measurements", "measurements.json", f"not valid JSON ({exc})")
            return None
        return data if isinstance(data, dict) else None

    def render(self) -> str:
        verdict = "PASS" if self.passed else f"FAIL ({sum(f.status == 'FAIL' for f in self.findings)} failed)"
        lines = [f"{self.name}: {verdict}  [{'strict' if self.strict else 'relaxed'} rules]"]
        if self.rehearsal:
            lines.append(f"  note: {self.rehearsal}")
        if not self.strict:
            lines.append(f"  note: {RELAXED_NOTE}")
        lines += [f.line() for f in self.findings]
        return "\n".join(lines)


@dataclass
class CheckReport:
    root: Path
    scenarios: list[ScenarioCheck]
    problems: list[Finding] = field(default_factory=list)  # tree-level (no results at all)

    @property
    def passed(self) -> bool:
        return not self.problems and bool(self.scenarios) and all(s.passed for s in self.scenarios)

    def render(self) -> str:
        lines = [f"deepgap results check: {self.root}"]
        lines += [f.line() for f in self.problems]
        lines += [s.render() for s in self.scenarios]
        failed = sum(not s.passed for s in self.scenarios)
        lines.append(f"checked {len(self.scenarios)} result(s): {failed} failed -> "
                     f"{'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)


def no_loadgen_errors(c: ScenarioCheck, relative: str, detail: Detail) -> None:
    errors = list(detail.errors)
    count = detail.get("num_errors")
    if errors or (isinstance(count, int) and count > 0):
        first = errors[0] if errors else ("num_errors", count)
        c.add(False, "loadgen-errors", relative, f"LoadGen logged {len(errors) or count} error(s), first {first}")
    else:
        c.add(True, "loadgen-errors", relative, "LoadGen logged no errors")


def no_audit_config(c: ScenarioCheck, relative: str, detail: Detail) -> None:
    if audit_applied(detail):
        c.add(False, "no-audit-config", relative, "LoadGen applied an audit.config to a normal run")
