"""Runs a study on the present device: models x precisions x backends x batch sizes, in the
scenarios asked for, each point repeated; resumable. See studies/study.py for the folder and
harness/sweep.py for the command line:

    python -m harness.sweep --study STUDY_DIR --models resnet18 resnet50 --precisions fp16 fp32 \\
        --scenarios Offline Server SingleStream

* Offline: one point per batch size (the batcher's max batch), giving the throughput
  against batch size curve and its knees (smallest batch reaching 90% / 95% of the peak).
* Server: the highest target QPS that LoadGen calls VALID under the SLO (`--slo p99:15ms`),
  found with short runs and confirmed with a full-length one, then a point at each
  fraction of it (`--ladder`) for the latency-throughput curve.
* SingleStream, MultiStream: one point each.

One backend is loaded per model, precision and backend (for the largest batch the study
needs) and shared by all its runs. Every run also measures GPU power (runs/power.py).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from plumbing import logs
from runs.config import RunConfig
from plumbing.errors import BackendError, DeepgapError, RunFailed
from plumbing.files import folder_lock
from runs.gating import GateFailed
from runs.runner import RunAbandoned, load_backend, make_dataset
from studies.group import Group
from studies.study import StudyPlan, StudyStore, build_study, group_key
from runs.system import backend_label, describe_system
from sut.backends import backend_info
from sut.backends.base import Backend


log = logging.getLogger("deepgap.sweep")
SWEEP_LOG = "sweep.log"  # in the study folder: the sweep's lines, appended by each call

# (config, backend extras such as INT8 calibration) -> a loaded backend
BackendFactory = Callable[[RunConfig, dict[str, Any]], Backend]
SEARCH_ATTEMPTS_GUESS = 10  # for the run count before a search has run


class StudyProgress:
    """One log line per finished run: how far the study is and roughly how long is left."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.measured = 0
        self._spent = 0.0

    def skipped(self, count: int) -> None:
        self.done += count

    def ran(self, label: str, seconds: float, line: str) -> None:
        self.done += 1
        self.measured += 1
        self._spent += seconds
        left = max(0, self.total - self.done) * self._spent / self.measured
        log.info("[%d/~%d] %s: %s (%.1f s; about %.0f min left)", self.done, self.total, label, line,
                 seconds, left / 60)


class CachedDataset:
    """A dataset that keeps each preprocessed sample after its first load. Every run's QSL
    stages the performance set again; normalising 1024 synthetic 224 px images costs
    seconds of CPU per run, which a study of hundreds of short runs cannot afford. Only
    loaded samples are kept (about 600 MB for 1024 at 224 px)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.count, self.image_size = inner.name, inner.count, inner.image_size
        self._kept: dict[int, np.ndarray] = {}

    def load(self, indices: np.ndarray) -> np.ndarray:
        wanted = [int(i) for i in np.asarray(indices).ravel()]
        missing = sorted({i for i in wanted if i not in self._kept})
        if missing:
            for index, sample in zip(missing, self.inner.load(np.array(missing, dtype=np.int64))):
                self._kept[index] = sample
        return np.stack([self._kept[i] for i in wanted])

    def labels(self) -> np.ndarray | None:
        return self.inner.labels()

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


class Sweep:
    def __init__(self, plan: StudyPlan, root: Path, command: str, show_progress: bool = False,
                 backend_factory: BackendFactory | None = None) -> None:
        self.plan = plan
        self.store = StudyStore(root)
        self.command = command
        self.show_progress = show_progress
        self.backend_factory = backend_factory or load_backend
        self.failures: list[str] = []
        self.slo_conf: Path | None = None
        self.system: dict[str, Any] = {}
        self.progress = StudyProgress(planned_runs(plan))
        self._created: str | None = None
        self._dataset: CachedDataset | None = None

    def dataset(self, config: RunConfig) -> CachedDataset:
        """One dataset for the whole study: every group's runs ask for the same one (the plan
        sets dataset, count and image size for all)."""
        if self._dataset is None:
            self._dataset = CachedDataset(make_dataset(config))
        return self._dataset

    def run(self) -> dict[str, Any]:
        groups = self.groups()  # a bad name or device fails before the study folder exists
        # A second sweep into this study is refused; the sweep's own log lines go beside it.
        with folder_lock(self.store.root, "study"), logs.run_log(self.store.root / SWEEP_LOG, append=True):
            return self._run(groups)

    def groups(self) -> list[Group]:
        """Every group with its configuration resolved (device, precision, backend, the
        settings of each scenario), before anything is created or run; an error names the
        group and the sweep's own flags (--precisions, not run.py's --precision)."""
        groups = []
        for model, precision, backend in self.plan.groups():
            try:
                groups.append(Group(self, model, precision, backend))
            except DeepgapError as exc:
                raise in_sweep_words(exc, f"{group_key(model, precision, backend)}: ")
        return groups

    def _run(self, groups: list[Group]) -> dict[str, Any]:
        resuming = self.store.begin(self.plan)
        self.slo_conf = self.store.slo_conf(self.plan.slo)
        self.system = study_system(groups[0].load_config, {g.load_config.knobs["compile"] for g in groups
                                                           if backend_info(g.backend_name).compiles})
        previous = self.store.root / "study.json"
        if resuming and previous.exists():
            self._created = load_study_created(previous)
        log.info("%s study in %s: %d group(s), about %d runs", "resuming" if resuming else "starting",
                 self.store.root, len(groups), self.progress.total)
        for group in groups:
            try:
                group.run()
            except RunAbandoned:
                raise
            except (BackendError, GateFailed, RunFailed) as exc:
                self.fail(f"{group.key}: {exc}")
            finally:
                group.close()
                self.save()
        study = self.save()
        if self.failures:
            raise RunFailed(f"{len(self.failures)} part(s) of the study failed, first: {self.failures[0]}; "
                            f"finished points are saved in {self.store.root}, rerun the same command to retry")
        return study

    def fail(self, message: str) -> None:
        log.error("%s", message)
        self.failures.append(message)

    def save(self) -> dict[str, Any]:
        study = build_study(self.store, self.plan, self.command, self.system, self._created)
        self._created = study["created_utc"]
        return study


def planned_runs(plan: StudyPlan) -> int:
    per_group = 0
    for scenario in plan.scenarios:
        if scenario == "Offline":
            per_group += len(plan.batch_sizes) * plan.repeats
        elif scenario == "Server":
            per_group += SEARCH_ATTEMPTS_GUESS + len(plan.ladder) * plan.repeats
        else:
            per_group += plan.repeats
    return per_group * len(plan.groups())


def estimated_seconds(plan: StudyPlan, overhead_s: float = 1.0) -> float:
    """A floor for the study's wall time: run durations plus a per-run overhead; backend
    loads and CUDA graph captures come on top."""
    per_group = 0.0
    for scenario in plan.scenarios:
        if scenario == "Offline":
            per_group += len(plan.batch_sizes) * plan.repeats * (plan.duration_ms / 1e3 + overhead_s)
        elif scenario == "Server":
            per_group += (SEARCH_ATTEMPTS_GUESS - 1) * (plan.search_ms / 1e3 + overhead_s)
            per_group += plan.confirm_ms / 1e3 + overhead_s
            per_group += len(plan.ladder) * plan.repeats * (plan.duration_ms / 1e3 + overhead_s)
        else:
            per_group += plan.repeats * (plan.duration_ms / 1e3 + overhead_s)
    return per_group * len(plan.groups())


def study_system(config: RunConfig, torch_compile: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """The study's system. Its torch runs compiled make it another software stack than the
    eager one on the same card ('H200x1-inductor' beside 'H200x1'), so a report can hold
    both and divide one by the other."""
    device = config.device
    compiled = sorted(torch_compile - {"none"})
    info = describe_system(device.system_prefix, device.device, device.count, {}, device.devices)
    info.pop("backend", None)
    nvml = info.get("nvml") or {}
    return {
        "name": device.system_prefix + "".join(backend_label("torch", m).removeprefix("torch") for m in compiled),
        "device": device.name,
        "torch_compile": compiled[0] if compiled else "none",
        "gpu_count": device.count if device.device != "cpu" else 0,
        "instances_per_device": int(config.knobs["instances"]),
        "driver": nvml.get("driver"),
        "software": {**info["software"], "python": info["python"]},
        "description": info,
    }


def load_study_created(path: Path) -> str | None:
    import json

    try:
        return json.loads(path.read_text()).get("created_utc")
    except (OSError, ValueError):
        return None


_RUN_FLAG = re.compile(r"--(precision|backend|model|scenario)\b(?!s)")


def in_sweep_words(exc: DeepgapError, prefix: str = "") -> DeepgapError:
    """A run's error (its type and exit code kept) in the sweep's words: its flags are
    --precisions, --backends, --models and --scenarios where harness/run.py has
    --precision, ...; `prefix` names the group."""
    exc.args = (prefix + _RUN_FLAG.sub(lambda m: f"--{m.group(1)}s", str(exc)),)
    return exc

