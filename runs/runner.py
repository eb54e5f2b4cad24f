"""One LoadGen run: data, backend, SUT, settings -> logs and measurements.json."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import logging
import shlex
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import mlperf_loadgen as lg

from plumbing.version import __version__
from runs.accuracy import AccuracyResult, score_run
from runs.config import RunConfig, model_spec, resolve
from plumbing.errors import ConfigError, OutputError, RunFailed
from runs.loadgen_log import Summary, parse_detail, parse_summary
from plumbing.logs import LOG_FILE, run_log
from runs.endpoint import is_remote, kserve_extra
from runs.power import open_meter, with_efficiency
from runs.remote_power import open_remote_meter
from runs.progress import Progress
from runs.results import (ResultPaths, RunFolder, record_run, remove_empty_loadgen_files, write_json_atomic,
                             write_result_file)
from runs.run_flags import command_for
from runs.saved_run import LoadgenSummary
from runs.sizing import size_run_from_warmup
from runs.system import describe_system
from runs.userconf import render as render_user_conf
from sut.backends import backend_info, create_backend
from sut.backends.base import Backend, BackendOptions
from sut.backends.instance_pool import build_instances
from sut.cpu_cores import physical_cores
from sut.data import Dataset, SyntheticDataset
from sut.models import SEEDED_WEIGHTS_NOTE
from sut.pipeline import batch_time_summary
from sut.qsl import LoadgenQSL, index_set_sha256
from runs.calibrated_on import CalibratedOn
from sut.settings import build_log_settings, build_test_settings, performance_sample_count
from sut.sut import LoadgenSUT

log = logging.getLogger(__name__)
# After a backend failure every remaining sample completes at once, so LoadGen finishes
# quickly except in Server, which keeps its schedule; past this grace the run is abandoned.
FAILURE_GRACE_S = 30.0


class RunAbandoned(RunFailed):
    """The SUT failed and LoadGen's own thread is still running its schedule."""

    exit_now = True  # LoadGen's thread cannot be stopped from Python


@dataclass(frozen=True)
class ComplianceRun:
    """A compliance test's performance run: LoadGen reads `audit_config` (a file in the
    test's own folder) and overrides the run's settings with it."""

    test: str
    audit_config: Path


@dataclass
class RunOutcome:
    paths: ResultPaths
    result: dict[str, Any]
    summary: Summary | None
    accuracy: AccuracyResult | None


def backend_options(config: RunConfig, extra: dict[str, Any] | None = None) -> BackendOptions:
    k = config.knobs
    extra = dict(extra or {})
    if is_remote(config.backend):
        extra["kserve"] = kserve_extra(config.request)
    return BackendOptions(
        extra=extra,
        device=config.device.device,
        max_batch=int(k["max_batch"]),
        in_flight=int(k["in_flight"]),
        cuda_graphs=bool(k["cuda_graphs"]),
        channels_last=config.request.channels_last,
        compile=str(k["compile"]),
        staging=str(k["staging"]),
        threads=k.get("threads"),
    )


def make_dataset(config: RunConfig) -> Dataset:
    r = config.request
    if r.dataset == "imagenet":
        from sut.imagenet import ImageNetDataset

        dataset = ImageNetDataset(r.dataset_path, image_size=r.image_size, count=r.dataset_count)
        dataset.preprocess_all(progress=True)  # decode JPEGs now, never inside the timed run
        return dataset
    kwargs = {"count": r.dataset_count} if r.dataset_count else {}
    return SyntheticDataset(image_size=r.image_size, **kwargs)


def load_backend(config: RunConfig, extra: dict[str, Any] | None = None) -> Backend:
    """The run's backend: one, or a pool of --instances per device on each of --gpus."""
    r = config.request
    spec, per_device, devices = model_spec(config), int(config.knobs["instances"]), config.device.devices
    backend = build_instances(functools.partial(create_backend, config.backend, spec), backend_options(config, extra),
                              devices, per_device, physical_cores())
    count = len(devices) * per_device
    log.info("loading %s %s on %s (%s)%s", r.model, r.precision, config.device.name, config.backend,
             f": {per_device} instance(s) on each of {len(devices)} device(s)" if count > 1 else "")
    try:
        backend.load()
    except BaseException:
        backend.close()  # an instance loaded before the failure must not keep its memory
        raise
    return backend


def execute(config: RunConfig, show_progress: bool = True, backend: Backend | None = None,
            dataset: Dataset | None = None, compliance: ComplianceRun | None = None,
            record: dict[str, Any] | None = None, calibrated_on: CalibratedOn | None = None) -> RunOutcome:
    """One run. A caller running many (the benchmark, a sweep) passes a loaded backend and
    dataset built from an equivalent config (its max batch may be larger than this run's);
    they are reused, not closed. `compliance` makes it a compliance test's performance
    run, under that test's folder, with its audit.config. `record` adds fields to the saved
    result (the caller's accuracy gate, sweep point); `calibrated_on`, from the caller's
    quality_checks, lets a performance run record its calibration's overlap with the
    samples LoadGen loaded."""
    r = config.request
    if compliance is not None and r.mode != "performance":
        raise ConfigError(f"{compliance.test} is a performance run, not a {r.mode} run")
    final = ResultPaths(Path(r.output), config.system_name, r.model, r.scenario, r.mode,
                        compliance.test if compliance else None)
    # Locked and checked before anything is measured; written beside the earlier result,
    # with the run's log lines (plumbing/logs.py) in its own folder.
    with RunFolder(final, r.overwrite) as folder, run_log(folder.staged.run_dir / LOG_FILE):
        paths = folder.staged
        audit_config = compliance.audit_config if compliance else _no_audit_config(paths)
        started = dt.datetime.now(dt.timezone.utc)
        checks: dict[str, Any] = {}
        if backend is None:
            # A compliance test's overrides (TEST05's seeds) change what LoadGen loads, not the
            # system under test: calibrate as the submitted run does, from its own settings.
            checks = quality_checks(config if compliance is None else resolve(config.request), paths, started,
                                    folder.commit)
        dataset = dataset or make_dataset(config)
        owned = backend is None
        backend = backend or load_backend(config, checks.get("extra"))
        try:
            stats = _run_loadgen(config, paths, dataset, backend, show_progress, audit_config)
            loaded = stats.pop("loaded_indices")
            backend_info = backend.describe()
        finally:
            if owned:
                backend.close()
        summary = parse_summary(paths.run_dir / "mlperf_log_summary.txt") if r.mode == "performance" else None
        detail = parse_detail(paths.run_dir / "mlperf_log_detail.txt")
        # TEST01 reads its run's sampled responses, an accuracy run is scored from its log.
        remove_empty_loadgen_files(paths.run_dir, keep_accuracy_log=r.mode == "accuracy" or compliance is not None)
        accuracy = None
        if r.mode == "accuracy" and stats["failure"] is None:
            accuracy = score_run(config, paths.run_dir, dataset)
        system = describe_system(config.system_name, config.device.device, config.device.count, backend_info,
                                 config.device.devices)
        result = _result_json(config, started, dataset, backend_info, stats, summary, detail, accuracy)
        result["environment"] = {k: v for k, v in system.items() if k != "backend"}
        result.update(checks.get("record", {}))
        result.update(record or {})
        calibrated_on = checks.get("calibrated_on", calibrated_on)
        if r.mode == "performance" and "calibration" in result and calibrated_on is not None:
            # A new dict: a sweep passes the same record to every run.
            result["calibration"] = {**result["calibration"], **calibrated_on.check(loaded)}
        write_json_atomic(paths.run_dir / "settings.json", config.to_json())
        folder.commit(result)
        if compliance is None:  # user.conf describes the submitted runs, not the audit overlays
            write_result_file(final.user_conf, render_user_conf(r.model, r.scenario, _with_sources(config)))
        write_json_atomic(final.system_json, system)
    if stats["failure"] is not None:
        failed = f"{stats['samples_failed']} of {stats['samples_completed']} samples failed; "
        raise RunFailed(f"the backend failed during the run: {stats['failure']} ({failed}results in {final.run_dir})")
    return RunOutcome(final, result, summary, accuracy)


def quality_checks(config: RunConfig, paths: ResultPaths, started: dt.datetime,
                   record_failure: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """INT8 calibration, then the accuracy gate for reduced precisions and compiled networks,
    before anything is timed. Returns backend extras ("extra": the calibration), what to record in the result
    ("record") and the calibration images ("calibrated_on", a CalibratedOn); a failed
    gate is recorded (by `record_failure`, else into `paths`' measurements.json) and
    raised unless --skip-accuracy-gate."""
    from runs.gating import GateFailed, calibrate_for, run_gate

    r = config.request
    extra: dict[str, Any] = {}
    record: dict[str, Any] = {}
    calibrated_on: CalibratedOn | None = None
    # Nothing to calibrate or gate: no inference, or the server's network, not this process's.
    if not backend_info(config.backend).infers or is_remote(config.backend):
        return {"extra": extra, "record": record}
    if r.precision == "int8":
        kind = "imagenet" if r.dataset == "imagenet" else "synthetic"
        calibrated = calibrate_for(config, model_spec(config), kind)
        extra["calibration"] = calibrated.cache
        extra["int8_cpu_path"] = r.int8_cpu_path  # the gate's backend takes the same path
        record["calibration"] = {"path": str(calibrated.path), "subset": calibrated.subset,
                                 "reused": calibrated.reused, "algorithm": r.calibration_algorithm,
                                 "cache_hash": calibrated.cache.cache_hash}
        calibrated_on = CalibratedOn.of(kind, calibrated)
    # Reduced precisions, and a compiled network in any precision, are checked against FP32 eager.
    if (r.precision != "fp32" or config.knobs["compile"] != "none") and r.mode == "performance":
        if r.skip_accuracy_gate:
            record["accuracy_gate"] = {"skipped": True}
        else:
            verdict = run_gate(config, backend_options(config, extra))
            record["accuracy_gate"] = verdict.to_json()
            if not verdict.passed:
                failed = {"deepgap_version": __version__, "status": "gate_failed",
                          "started_utc": started.isoformat(timespec="seconds"),
                          "command": shlex.join(sys.argv), "config": config.to_json(), **record}
                (record_failure or functools.partial(record_run, paths))(failed)
                raise GateFailed(f"{verdict.line()}; not benchmarked (--skip-accuracy-gate to run anyway)")
    return {"extra": extra, "record": record, "calibrated_on": calibrated_on}


def _with_sources(config: RunConfig) -> dict[str, tuple[Any, str]]:
    return {attr: (value, config.provenance.get(f"loadgen.{attr}", "?")) for attr, value in config.loadgen.items()}


@contextlib.contextmanager
def _steady_interpreter():
    """Keep the garbage collector from stalling the timed run: gc.freeze() parks the objects
    that exist before the run (torch alone holds hundreds of thousands) outside the
    collector, so a full collection no longer scans them."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _no_audit_config(paths: ResultPaths) -> Path:
    """The audit.config path for a normal run: one that does not exist. LoadGen applies
    whatever file the path names (its default is ./audit.config), so a stray compliance
    overlay must never be able to turn a normal run into an audit run."""
    path = paths.run_dir / "audit.config"  # run_dir is the run's own new folder
    if path.exists():
        raise OutputError(f"{path} exists: a normal run must not read an audit.config; remove it")
    return path


def _run_loadgen(config: RunConfig, paths: ResultPaths, dataset: Dataset, backend: Backend,
                 show_progress: bool, audit_config: Path) -> dict[str, Any]:
    r = config.request
    requested = int(config.loadgen.get("performance_sample_count_override") or dataset.count)
    performance_count = performance_sample_count(config.loadgen, dataset.count)
    if requested > performance_count:
        log.info("performance sample count %d exceeds the dataset's %d samples; using %d",
                 requested, dataset.count, dataset.count)
        config.loadgen["performance_sample_count_override"] = performance_count
        config.provenance["loadgen.performance_sample_count_override"] = f"dataset size ({dataset.count} samples)"
    qsl = LoadgenQSL(dataset, backend, performance_count)
    if r.mode == "performance":
        size_run_from_warmup(config, backend)
    settings = build_test_settings(r.scenario, r.mode, config.loadgen)
    sut = LoadgenSUT(backend, qsl, r.scenario, int(config.knobs["batch_timeout_us"]), int(config.knobs["max_batch"]))
    thread_error: list[BaseException] = []

    def start() -> None:
        try:
            lg.StartTestWithLogSettings(sut.handle, qsl.handle, settings, build_log_settings(paths.run_dir), str(audit_config))
        except BaseException as exc:  # pragma: no cover - LoadGen raises only on misuse
            thread_error.append(exc)

    expected = config.loadgen.get("min_duration_ms", 0) / 1000.0 if r.mode == "performance" else None
    runner = threading.Thread(target=start, name="loadgen", daemon=True)
    meter = (open_remote_meter(r.metrics_url) if is_remote(config.backend)
             else open_meter(config.device.devices))
    with _steady_interpreter(), Progress(f"{r.scenario} {r.mode}", lambda: sut.samples_completed, expected, enabled=show_progress):
        meter.start()  # brackets StartTest; the reported window starts at the first issue
        t0 = time.monotonic()
        runner.start()
        try:
            _wait_for_loadgen(runner, sut)
        finally:
            power = meter.stop(begin=sut.first_issue_at)
    wall_s = time.monotonic() - t0
    sut.shutdown()
    qsl.destroy()
    if thread_error:
        raise RunFailed(f"LoadGen failed: {thread_error[0]}")
    failure = sut.failure
    batches = sut.pipeline.batches_run
    per_query = int(config.loadgen.get("multi_stream_samples_per_query", 8)) if r.scenario == "MultiStream" else 1
    loaded = qsl.loaded_indices()
    sample_set = {}
    if r.mode == "performance":  # an accuracy run loads every sample
        sample_set = {"performance_set": {"count": int(loaded.size), "indices_sha256": index_set_sha256(loaded)}}
    return {
        "power": with_efficiency(power, r.scenario, sut.samples_completed, sut.samples_completed // per_query),
        "failure": f"{type(failure).__name__}: {failure}" if failure else None,
        "wall_s": wall_s,
        "samples_completed": sut.samples_completed,
        "samples_failed": sut.samples_failed,
        "batches": batches,
        "mean_batch": (sut.pipeline.samples_run / batches) if batches else None,
        "batch_time_ms": batch_time_summary(sut.pipeline.batch_seconds),
        **({"instances": sut.pipeline.per_instance()} if len(sut.pipeline.pipelines) > 1 else {}),
        "performance_sample_count": qsl.performance_count,
        **sample_set,
        "loaded_indices": loaded,  # taken out by `execute`: not for the saved result
    }


def _wait_for_loadgen(runner: threading.Thread, sut: LoadgenSUT) -> None:
    failed_at = None
    while runner.is_alive():
        runner.join(0.2)
        if sut.failure is not None and failed_at is None:
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > FAILURE_GRACE_S and runner.is_alive():
            raise RunAbandoned(
                f"the backend failed ({sut.failure}); LoadGen was still running its schedule "
                f"{FAILURE_GRACE_S:.0f} s later, so the run was abandoned"
            )




def _result_json(config: RunConfig, started: dt.datetime, dataset: Dataset, backend_info: dict[str, Any],
                 stats: dict[str, Any], summary: Summary | None, detail: Any,
                 accuracy: AccuracyResult | None) -> dict[str, Any]:
    r = config.request
    stats = dict(stats)
    result: dict[str, Any] = {
        "deepgap_version": __version__,
        "status": "failed" if stats["failure"] else "ok",
        "started_utc": started.isoformat(timespec="seconds"),
        "command": shlex.join(sys.argv),
        "equivalent_command": command_for(config.request),
        "config": config.to_json(),
        "dataset": dataset.describe(),
        "backend": backend_info,
        "power": stats.pop("power"),
        "harness": stats,
        "loadgen_errors": [list(e) for e in detail.errors],
        "loadgen_result": detail.result,
    }
    if r.weights == "seeded":
        result["weights_note"] = SEEDED_WEIGHTS_NOTE
    if summary is not None:
        valid, reasons = summary.result_valid, list(summary.invalid_reasons)
        # The summary's verdict skips "min queries" unless max duration is set; the detail
        # log's (which MLPerf's checker reads) never does. Report the stricter one.
        if detail.result.get("validity") == "INVALID" and valid:
            valid = False
            reasons.append(f"detail log: {detail.result.get('invalid_reason') or 'result_validity INVALID'}")
        result["summary"] = LoadgenSummary(
            scenario=summary.scenario, valid=valid, invalid_reasons=tuple(reasons),
            metric=summary.headline_metric_name, value=summary.headline_value,
            percentiles_ns=summary.percentiles_ns, qps_with_loadgen_overhead=summary.qps_with_loadgen_overhead,
            min_duration_satisfied=summary.min_duration_satisfied, mean_latency_ns=summary.mean_latency_ns,
            early_stopping_satisfied=summary.early_stopping_satisfied,
            min_queries_satisfied=summary.min_queries_satisfied,
        ).to_json()
    if accuracy is not None:
        result["accuracy"] = accuracy.to_json()
    return result
