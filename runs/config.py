"""Typed run configuration, resolved once in one visible order of precedence:

    built-in defaults  <  LoadGen's mlperf.conf + run profile  <  GPU profile YAML
                       <  user.conf  <  CLI flags

Every value keeps the name of the layer that set it; `RunConfig.provenance` is written
next to the results so a reader sees why a run used what it used.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from calibration.algorithms import DEFAULT_ALGORITHM, DEFAULT_PERCENTILE
from calibration.rules import check_calibration_list
from runs.device import DeviceChoice, parse_gpus, resolve_device
from runs.endpoint import REMOTE_BACKEND, check_endpoint_flags, endpoint_device, is_remote
from sut.kserve_target import DEFAULT_TIMEOUT_S, PROTOCOLS
from runs import limits
from plumbing.errors import ConfigError
from runs.userconf import UserConf, key_rule, to_attr_value
from scenarios.profiles import DEFAULT_RUN_PROFILE, load_run_profile
from runs.backend_choice import choose_backend
from sut.backends import BACKENDS, REGISTRY, backend_info
from sut.backends.base import MODELS, PRECISIONS, ModelSpec
from sut.compiling import COMPILE_MODES
from sut.cpu_isa import AUTO, INT8_CPU_PATHS
from sut.settings import DEFAULT_SCENARIO, PERFORMANCE_SET_SETTINGS, SCENARIOS, check_settings, mlperf_rules, setting

log = logging.getLogger(__name__)

DATASETS = ("synthetic", "imagenet")
CALIBRATION_ALGORITHMS = ("entropy", "percentile", "max")
# Harness knobs before any profile: conservative values that work on any device.
BUILTIN_KNOBS: dict[str, Any] = {
    "max_batch": 1,
    "batch_timeout_us": 2000,
    "in_flight": 2,
    "cuda_graphs": True,
    "staging": "device",
    "threads": None,
    "compile": "none",
    "instances": 1,  # backend instances per device (sut/backends/instance_pool.py)
}
# Backend instances per device at most: each holds its own network, staging and buffers.
MAX_INSTANCES = 64


@dataclass(frozen=True)
class CliRequest:
    """What the user asked for; None means 'not given' so lower layers show through."""

    scenario: str = DEFAULT_SCENARIO
    model: str = "resnet50"
    precision: str = "fp32"
    gpu: str = "auto"
    gpus: str = "1"  # which CUDA devices (runs.device.GPUS_HELP)
    backend: str | None = None
    mode: str = "performance"
    run_profile: str = DEFAULT_RUN_PROFILE
    user_conf: Path | None = None
    output: Path = Path("deepgap-results")
    overwrite: bool = False
    dataset: str = "synthetic"
    dataset_path: Path | None = None
    dataset_count: int | None = None
    image_size: int = 224
    weights: str = "seeded"
    seed: int = 0
    compile: str | None = None  # sut.compiling.COMPILE_MODES; None: the device's default
    channels_last: bool = True
    # INT8 calibration and the accuracy gate.
    calibration_algorithm: str = DEFAULT_ALGORITHM
    calibration_percentile: float = DEFAULT_PERCENTILE
    calibration_count: int = 500
    calibration_seed: int = 0  # picks the calibration images; as `python -m calibration --calibration-seed`
    calibration_list: Path | None = None
    int8_cpu_path: str = AUTO  # ONNX Runtime INT8 on the CPU: how it stays exact (sut/cpu_isa.py)
    skip_accuracy_gate: bool = False
    gate_samples: int = 500
    gate_min_agreement: float = 0.99
    # Harness knobs and LoadGen overrides: None = take the layer below.
    max_batch: int | None = None
    batch_timeout_us: int | None = None
    in_flight: int | None = None
    cuda_graphs: bool | None = None
    staging: str | None = None
    threads: int | None = None
    instances: int | None = None
    target_qps: float | None = None
    target_latency_ms: float | None = None
    min_duration_ms: int | None = None
    min_query_count: int | None = None
    # A remote KServe v2 server (--backend kserve; runs/endpoint.py).
    endpoint: str | None = None
    protocol: str = "grpc"
    model_name: str | None = None  # the server's name for the model; None: --model
    model_version: str | None = None  # None: the server's choice
    ssl: bool = False
    root_certificates: Path | None = None
    private_key: Path | None = None
    certificate_chain: Path | None = None
    request_timeout_s: float = DEFAULT_TIMEOUT_S
    metrics_url: str | None = None

    def __post_init__(self) -> None:
        choices = {
            "scenario": SCENARIOS, "model": MODELS, "precision": PRECISIONS,
            "mode": ("performance", "accuracy"), "dataset": DATASETS,
            "calibration_algorithm": CALIBRATION_ALGORITHMS, "int8_cpu_path": INT8_CPU_PATHS,
            "protocol": PROTOCOLS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}; choose from {', '.join(allowed)}")
        if self.backend is not None and self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; choose from {', '.join(BACKENDS)}")
        if self.compile is not None and self.compile not in COMPILE_MODES:
            raise ConfigError(f"unknown compile mode {self.compile!r}; choose from {', '.join(COMPILE_MODES)}")
        if self.staging is not None and self.staging not in ("device", "host"):
            raise ConfigError("--staging must be 'device' or 'host'")
        if not 0 < self.gate_min_agreement <= 1:
            raise ConfigError(f"--gate-min-agreement must be in (0, 1], got {self.gate_min_agreement}")
        if not 0 < self.calibration_percentile <= 100:
            raise ConfigError(f"--calibration-percentile must be in (0, 100], got {self.calibration_percentile}")
        positive = ("dataset_count", "image_size", "max_batch", "in_flight", "threads", "instances",
                    "calibration_count", "gate_samples",
                    "target_qps", "target_latency_ms", "min_duration_ms", "min_query_count")
        for name in positive:
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.calibration_seed < 0:
            raise ConfigError(f"--calibration-seed must be >= 0, got {self.calibration_seed}")
        if self.instances is not None and self.instances > MAX_INSTANCES:
            raise ConfigError(f"--instances {self.instances} is more than {MAX_INSTANCES} backend instances per device")
        parse_gpus(self.gpus)
        if self.batch_timeout_us is not None and self.batch_timeout_us < 0:
            raise ConfigError(f"--batch-timeout-us must be >= 0, got {self.batch_timeout_us}")
        if self.image_size < 32:
            raise ConfigError(f"--image-size must be at least 32 (ResNet downsamples 32x), got {self.image_size}")
        if self.dataset == "imagenet" and self.dataset_path is None:
            raise ConfigError("--dataset imagenet needs --dataset-path DIR (a folder with val_map.txt)")
        self._check_calibration()
        if self.backend is None and self.endpoint is not None:
            object.__setattr__(self, "backend", REMOTE_BACKEND)  # --endpoint alone: no local backend is meant
        check_endpoint_flags(self)

    def _check_calibration(self) -> None:
        """The calibration options, by `python -m calibration`'s own rules (calibration.rules;
        the numeric ones are checked above), so that a flag the run would drop is refused as
        that command refuses it."""
        if self.calibration_list is not None and self.precision != "int8":
            raise ConfigError(f"--calibration-list is for --precision int8 (only INT8 is calibrated), "
                              f"not {self.precision}")
        if self.precision != "int8":
            return
        check_calibration_list(self.dataset, self.calibration_list, must_exist=True)


@dataclass
class RunConfig:
    request: CliRequest
    device: DeviceChoice
    backend: str
    knobs: dict[str, Any]
    loadgen: dict[str, Any]
    provenance: dict[str, str] = field(default_factory=dict)

    @property
    def scenario(self) -> str:
        return self.request.scenario

    @property
    def system_name(self) -> str:
        from runs.system import backend_label, system_name

        return system_name(self.device.system_prefix, backend_label(self.backend, self.knobs.get("compile", "none")),
                           self.request.precision)

    def to_json(self) -> dict[str, Any]:
        request = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.request).items()}
        return {
            "request": request,
            "system_name": self.system_name,
            "device": {"name": self.device.name, "device": self.device.device,
                       "count": self.device.count, "devices": list(self.device.devices),
                       "profile": self.device.profile.name,
                       "profile_file": str(self.device.profile.path)},
            "backend": self.backend,
            "knobs": self.knobs,
            "loadgen": self.loadgen,
            "provenance": self.provenance,
            # Empty: these settings meet MLPerf's rules (the data and weights are another matter).
            "submission_shortfalls": submission_shortfalls(self),
        }


# How a run's LoadGen settings must compare with the submission profile's (MLPerf's rules,
# as mlperf.conf compiles them into LoadGen, else LoadGen's defaults) to be submission-grade.
_AT_LEAST = ("min_duration_ms", "min_query_count", "performance_sample_count_override")
_SAME = ("qsl_rng_seed", "sample_index_rng_seed", "schedule_rng_seed", "performance_issue_unique",
         "performance_issue_same", "sample_concatenate_permutation")
_PER_SCENARIO_RULES = {
    # A latency bound may be tighter, a percentile higher, than the rule; never the reverse.
    "Server": {"server_target_latency_ns": "at most", "server_target_latency_percentile": "at least"},
    "SingleStream": {"single_stream_target_latency_percentile": "at least"},
    "MultiStream": {"multi_stream_target_latency_percentile": "at least", "multi_stream_samples_per_query": "same"},
    "Offline": {},
}


def submission_shortfalls(config: RunConfig) -> list[str]:
    """Each way the run's LoadGen settings fall short of the submission profile, e.g.
    'min_duration_ms 1000 < 600000 (from user.conf u.conf:1)'."""
    scenario = config.scenario
    rules = {**mlperf_rules(scenario), **load_run_profile("submission").settings_for(scenario)}
    checks = {**{a: "at least" for a in _AT_LEAST}, **{a: "same" for a in _SAME}, **_PER_SCENARIO_RULES[scenario]}
    shortfalls = []
    for attr, how in checks.items():
        rule = rules[attr] if attr in rules else setting({}, attr)
        value = setting(config.loadgen, attr)
        if attr == "performance_sample_count_override" and value == 0:  # LoadGen: the whole dataset
            value = limits.dataset_count_hint(config.request) or rule
        short = {"at least": value < rule, "at most": value > rule, "same": value != rule}[how]
        if short:
            sign = {"at least": "<", "at most": ">", "same": "!="}[how]
            source = config.provenance.get(f"loadgen.{attr}", "LoadGen default")
            shortfalls.append(f"{attr} {value:g} {sign} {rule:g} (from {source})")
    return shortfalls


def model_spec(config: RunConfig) -> ModelSpec:
    r = config.request
    return ModelSpec(r.model, r.precision, r.weights, r.seed, r.image_size)




# The compile knob's device rule, in words for --help and as its provenance. On the CPU,
# compiling measured 6-18% faster than eager for the torch backend but costs 14-35 s the
# first time (BENCHMARKS.md), and onnxruntime is the CPU's default backend: eager stays.
COMPILE_DEFAULT_RULE = "the torch backend compiles (default mode) on CUDA GPUs, runs eagerly (none) on the CPU"


class _Layers:
    """Values with the name of the layer that last set each one."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.sources: dict[str, str] = {}

    def apply(self, source: str, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if value is None:
                continue
            self.values[key] = value
            self.sources[key] = source


def resolve(request: CliRequest) -> RunConfig:
    device = endpoint_device(request) if is_remote(request.backend) else resolve_device(request.gpu, request.gpus)
    backend = choose_backend(request, device)
    if request.int8_cpu_path != AUTO and not (
        backend_info(backend).int8_cpu_paths and device.device == "cpu" and request.precision == "int8"
    ):
        raise ConfigError(f"--int8-cpu-path {request.int8_cpu_path} applies to --precision int8 with the "
                          f"{_int8_cpu_path_backends()} backend on the CPU, not {request.precision} with {backend} on {device.device}")
    scenario, model, precision = request.scenario, request.model, request.precision
    profile_values = device.profile.settings_for(model, precision, scenario)
    profile_name = f"GPU profile {device.profile.name} ({device.profile.path.name})"

    knobs = _Layers()
    knobs.apply("built-in default", BUILTIN_KNOBS)
    if backend_info(backend).compiles and device.device != "cpu":
        knobs.apply(COMPILE_DEFAULT_RULE, {"compile": "default"})
    knobs.apply(profile_name, {k: v for k, v in profile_values.items() if k in BUILTIN_KNOBS})
    cli_knobs = {k: getattr(request, k) for k in BUILTIN_KNOBS}
    knobs.apply("CLI", cli_knobs)
    if not backend_info(backend).compiles:
        knobs.apply(f"the {backend} backend does not compile", {"compile": "none"})

    loadgen = _loadgen_layers(request, {k: v for k, v in profile_values.items() if k not in BUILTIN_KNOBS},
                              profile_name)

    _fix_batch_for_scenario(request, knobs, loadgen)
    if device.device == "cpu":
        knobs.apply("CPU device", {"in_flight": 1, "cuda_graphs": False})
    provenance = {f"knob.{k}": v for k, v in knobs.sources.items()}
    provenance.update({f"loadgen.{k}": v for k, v in loadgen.sources.items()})
    config = RunConfig(request, device, backend, knobs.values, loadgen.values, provenance)
    check_bounds(config)
    _warn_if_wait_exceeds_bound(config)
    if request.run_profile == "submission" and (shortfalls := submission_shortfalls(config)):
        log.warning("not a submission-grade run: %s", "; ".join(shortfalls))
    return config


def _warn_if_wait_exceeds_bound(config: RunConfig) -> None:
    """A Server batch that may wait for company as long as the latency bound fails it
    whenever the load is light: say so before the run rather than after."""
    if config.scenario != "Server":
        return
    wait_ms = int(config.knobs["batch_timeout_us"]) / 1e3
    bound_ms = float(setting(config.loadgen, "server_target_latency_ns")) / 1e6
    if wait_ms >= bound_ms:
        log.warning("this run will likely be INVALID: a batch may wait %g ms to fill (batch_timeout_us from %s), "
                    "as long as the %g ms latency bound; use a shorter --batch-timeout-us", wait_ms,
                    config.provenance.get("knob.batch_timeout_us", "default"), bound_ms)


def check_bounds(config: RunConfig) -> None:
    """Everything the run will allocate or hand LoadGen, checked before anything is created:
    LoadGen's value types, threads, and memory for what the settings size."""
    check_settings(config.loadgen, {k.removeprefix("loadgen."): v for k, v in config.provenance.items()})
    limits.check_threads(config.knobs.get("threads"), config.provenance.get("knob.threads", "CLI"))
    limits.check_fits(config, limits.dataset_count_hint(config.request))


def _loadgen_layers(request: CliRequest, profile_values: dict[str, Any], profile_name: str) -> _Layers:
    """LoadGen settings, each with its source: mlperf.conf < run profile < GPU profile
    (`profile_values`, LoadGen settings only) < user.conf < CLI."""
    scenario = request.scenario
    loadgen = _Layers()
    loadgen.apply("mlperf.conf (resnet50 rules)", mlperf_rules(scenario))
    loadgen.apply(f"run profile {request.run_profile}", load_run_profile(request.run_profile).settings_for(scenario))
    loadgen.apply(profile_name, profile_values)
    if request.user_conf is not None:
        for attr, (value, where) in UserConf.parse(request.user_conf).resolve(request.model, scenario).items():
            loadgen.apply(f"user.conf {where}", {attr: value})
    loadgen.apply("CLI", _cli_loadgen(request))
    return loadgen


def performance_set_settings(request: CliRequest) -> dict[str, Any]:
    """The PERFORMANCE_SET_SETTINGS a run of `request` resolves, by `resolve`'s own layers
    but without a device: GPU profiles hold batching knobs and sizing values, never these
    (tests/runs/test_config.py checks every profile), so a calibration on a host without
    the run's GPU still computes the run's performance set. Unset ones are left out
    (LoadGen's defaults apply)."""
    values = _loadgen_layers(request, {}, "no GPU profile").values
    return {attr: values[attr] for attr in PERFORMANCE_SET_SETTINGS if attr in values}


def _cli_loadgen(request: CliRequest) -> dict[str, Any]:
    """CLI overrides, translated exactly as the matching user.conf keys would be."""
    scenario = request.scenario
    values: dict[str, Any] = {}
    given = {"target_qps": request.target_qps, "target_latency": request.target_latency_ms,
             "min_duration": request.min_duration_ms, "min_query_count": request.min_query_count}
    for key, raw in given.items():
        if raw is None:
            continue
        rule = key_rule(scenario, key)
        if rule is None:
            raise ConfigError(f"--{key.replace('_', '-')} does not apply to the {scenario} scenario")
        values[rule.attr] = to_attr_value(rule, raw)
    return values


def _fix_batch_for_scenario(request: CliRequest, knobs: _Layers, loadgen: _Layers) -> None:
    """SingleStream runs one sample per query and MultiStream one query per batch."""
    if request.scenario == "SingleStream":
        required, why = 1, "SingleStream sends one sample per query"
    elif request.scenario == "MultiStream":
        required = int(loadgen.values.get("multi_stream_samples_per_query", 8))
        why = f"MultiStream runs each query's {required} samples as one batch"
    else:
        return
    if request.max_batch is not None and request.max_batch != required:
        raise ConfigError(f"--max-batch {request.max_batch} does not fit: {why} (max batch {required})")
    knobs.apply(why, {"max_batch": required})


def _int8_cpu_path_backends() -> str:
    return " or ".join(info.name for info in REGISTRY.values() if info.int8_cpu_paths)
