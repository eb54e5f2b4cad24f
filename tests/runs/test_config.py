"""runs.config.resolve on the CPU: the precedence chain and the rules it enforces.

    mlperf.conf rules  <  run profile  <  GPU profile YAML  <  user.conf  <  CLI
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runs import config as config_module
from runs import backend_choice
from runs.backend_choice import choose_backend
from runs.config import PERFORMANCE_SET_SETTINGS, CliRequest, performance_set_settings, resolve
from runs.device import DeviceChoice
from plumbing.errors import BackendError, ConfigError, DeepgapError, DeviceError
from scenarios.profiles import RunProfile, load_gpu_profile, profile_names
from tests.conftest import cpu_system

MLPERF = "mlperf.conf (resnet50 rules)"
QUICK = "run profile quick"
SUBMISSION = "run profile submission"
CPU_PROFILE = "GPU profile cpu (cpu.yaml)"
SEEDS = {
    "qsl_rng_seed": 2085463073848966840,
    "sample_index_rng_seed": 2747215439041700203,
    "schedule_rng_seed": 16159082839903944936,
}
SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")


def cpu(**fields) -> CliRequest:
    fields.setdefault("gpu", "cpu")
    return CliRequest(**fields)


def lg(config, attr: str) -> tuple:
    """(value, source) of a LoadGen setting."""
    return config.loadgen[attr], config.provenance[f"loadgen.{attr}"]


def knob(config, name: str) -> tuple:
    return config.knobs[name], config.provenance[f"knob.{name}"]


def user_conf(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "user.conf"
    path.write_text(text)
    return path


# -- the precedence chain ------------------------------------------------------------------------


def test_min_duration_through_every_layer(tmp_path: Path) -> None:
    # mlperf.conf alone (the submission profile adds nothing)
    assert lg(resolve(cpu(run_profile="submission")), "min_duration_ms") == (600000, MLPERF)
    # run profile over mlperf.conf
    assert lg(resolve(cpu()), "min_duration_ms") == (5000, QUICK)
    # user.conf over the run profile
    conf = user_conf(tmp_path, "# mine\nresnet50.Offline.min_duration = 3000\n")
    assert lg(resolve(cpu(user_conf=conf)), "min_duration_ms") == (3000, f"user.conf {conf}:2")
    # CLI over user.conf
    assert lg(resolve(cpu(user_conf=conf, min_duration_ms=1234)), "min_duration_ms") == (1234, "CLI")


def test_expected_qps_through_every_layer(tmp_path: Path) -> None:
    # GPU profile over the run profile and mlperf.conf
    assert lg(resolve(cpu()), "offline_expected_qps") == (20, CPU_PROFILE)
    assert lg(resolve(cpu(model="resnet18")), "offline_expected_qps") == (45, CPU_PROFILE)
    conf = user_conf(tmp_path, "*.Offline.target_qps = 7\n")
    assert lg(resolve(cpu(user_conf=conf)), "offline_expected_qps") == (7, f"user.conf {conf}:1")
    config = resolve(cpu(user_conf=conf, target_qps=9.5))
    assert lg(config, "offline_expected_qps") == (9.5, "CLI")


def test_gpu_profile_beats_run_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """No shipped run profile sets a key the CPU profile sets, so use a stand-in profile."""
    stand_in = RunProfile("stand-in", "", {"Offline": {"offline_expected_qps": 1.0, "min_duration_ms": 77}})
    monkeypatch.setattr(config_module, "load_run_profile", lambda name: stand_in)
    config = resolve(cpu(run_profile="stand-in"))
    assert lg(config, "offline_expected_qps") == (20, CPU_PROFILE)
    assert lg(config, "min_duration_ms") == (77, "run profile stand-in")


def test_run_profile_beats_mlperf_conf_for_query_counts() -> None:
    assert lg(resolve(cpu(run_profile="submission")), "min_query_count") == (24576, MLPERF)
    assert lg(resolve(cpu()), "min_query_count") == (256, QUICK)
    assert lg(resolve(cpu(scenario="MultiStream")), "min_query_count") == (64, QUICK)
    assert lg(resolve(cpu(scenario="MultiStream", run_profile="submission")), "min_query_count") == (662, MLPERF)


def test_cli_overrides_use_the_user_conf_units(tmp_path: Path) -> None:
    config = resolve(cpu(scenario="Server", target_qps=12.0, target_latency_ms=25.0,
                         min_duration_ms=2000, min_query_count=50))
    assert lg(config, "server_target_qps") == (12.0, "CLI")
    assert lg(config, "server_target_latency_ns") == (25_000_000, "CLI")
    assert lg(config, "min_duration_ms") == (2000, "CLI")
    assert lg(config, "min_query_count") == (50, "CLI")
    single = resolve(cpu(scenario="SingleStream", target_latency_ms=40.0))
    assert lg(single, "single_stream_expected_latency_ns") == (40_000_000, "CLI")


def test_untouched_values_keep_their_layer(tmp_path: Path) -> None:
    conf = user_conf(tmp_path, "resnet50.Server.target_latency = 20\n")
    config = resolve(cpu(scenario="Server", user_conf=conf, min_duration_ms=1000))
    assert lg(config, "server_target_latency_ns") == (20_000_000, f"user.conf {conf}:1")
    assert lg(config, "server_target_qps") == (8, CPU_PROFILE)
    assert lg(config, "min_query_count") == (100, QUICK)
    assert lg(config, "qsl_rng_seed") == (SEEDS["qsl_rng_seed"], MLPERF)
    assert lg(config, "min_duration_ms") == (1000, "CLI")


def test_user_conf_for_another_model_does_not_apply(tmp_path: Path) -> None:
    conf = user_conf(tmp_path, "resnet101.Offline.min_duration = 3000\n")
    assert lg(resolve(cpu(user_conf=conf)), "min_duration_ms") == (5000, QUICK)
    assert lg(resolve(cpu(user_conf=conf, model="resnet101")), "min_duration_ms")[0] == 3000


def test_user_conf_errors_propagate(tmp_path: Path) -> None:
    conf = user_conf(tmp_path, "resnet50.Offline.target_qps = lots\n")
    with pytest.raises(ConfigError, match=f"{conf}:1"):
        resolve(cpu(user_conf=conf))
    with pytest.raises(ConfigError, match="no such file"):
        resolve(cpu(user_conf=tmp_path / "missing.conf"))


def test_knobs_precedence() -> None:
    config = resolve(cpu())
    assert knob(config, "max_batch") == (16, CPU_PROFILE)
    assert knob(config, "staging") == ("device", "built-in default")
    assert knob(resolve(cpu(max_batch=4)), "max_batch") == (4, "CLI")
    server = resolve(cpu(scenario="Server"))
    assert knob(server, "batch_timeout_us") == (0, CPU_PROFILE)
    assert knob(resolve(cpu(scenario="Server", batch_timeout_us=500)), "batch_timeout_us") == (500, "CLI")
    # On the CPU one batch at a time and no CUDA graphs, whatever was asked.
    assert knob(resolve(cpu(in_flight=3)), "in_flight") == (1, "CPU device")
    assert knob(config, "cuda_graphs") == (False, "CPU device")


# -- the submission profile -------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_submission_profile_keeps_mlperf_rules(scenario: str) -> None:
    config = resolve(cpu(scenario=scenario, run_profile="submission"))
    assert lg(config, "min_duration_ms") == (600000, MLPERF)
    for attr, seed in SEEDS.items():
        assert lg(config, attr) == (seed, MLPERF)
        assert type(config.loadgen[attr]) is int
    assert lg(config, "performance_sample_count_override") == (1024, MLPERF)
    if scenario == "Offline":
        assert lg(config, "min_query_count") == (24576, MLPERF)
    if scenario == "MultiStream":
        assert lg(config, "min_query_count") == (662, MLPERF)
    if scenario == "Server":
        assert lg(config, "server_target_latency_ns") == (15_000_000, MLPERF)


def test_quick_profile_keeps_seeds_and_sample_count() -> None:
    config = resolve(cpu())
    for attr, seed in SEEDS.items():
        assert lg(config, attr) == (seed, MLPERF)
    assert lg(config, "performance_sample_count_override") == (1024, MLPERF)


@pytest.mark.parametrize("model", ["resnet18", "resnet101"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_other_resnets_follow_resnet50_rules(model: str, scenario: str) -> None:
    def rules(config) -> dict:
        return {k: v for k, v in config.loadgen.items() if config.provenance[f"loadgen.{k}"] == MLPERF}

    reference = rules(resolve(cpu(scenario=scenario, run_profile="submission")))
    other = rules(resolve(cpu(scenario=scenario, model=model, run_profile="submission")))
    assert other == reference
    assert other["min_duration_ms"] == 600000
    assert other["schedule_rng_seed"] == SEEDS["schedule_rng_seed"]


@pytest.mark.parametrize("profile", profile_names())
def test_no_gpu_profile_sets_what_chooses_the_performance_set(profile: str) -> None:
    """performance_set_settings skips the GPU profile layer (a calibration host need not
    have the run's GPU); that is exact only while no profile sets these."""
    loaded = load_gpu_profile(profile)
    layers = [*loaded.defaults.values()]
    layers += [scenarios for precisions in loaded.models.values()
               for per_precision in precisions.values() for scenarios in per_precision.values()]
    for values in layers:
        assert not set(values) & set(PERFORMANCE_SET_SETTINGS), f"{profile}: {values}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_performance_set_settings_match_a_resolved_run(tmp_path: Path, scenario: str) -> None:
    conf = tmp_path / "user.conf"
    conf.write_text("resnet18.*.performance_sample_count_override = 64\n*.Server.qsl_rng_seed = 99\n")
    for user_conf in (None, conf):
        request = cpu(model="resnet18", scenario=scenario, user_conf=user_conf)
        run = resolve(request)
        assert performance_set_settings(request) == {k: run.loadgen[k] for k in PERFORMANCE_SET_SETTINGS}
    assert performance_set_settings(cpu(model="resnet18", user_conf=conf))["performance_sample_count_override"] == 64


def test_unknown_run_profile() -> None:
    with pytest.raises(ConfigError, match="unknown run profile 'nope'.*quick"):
        resolve(cpu(run_profile="nope"))


# -- batch rules per scenario -------------------------------------------------------------------------


def test_singlestream_forces_batch_of_one() -> None:
    config = resolve(cpu(scenario="SingleStream"))
    assert knob(config, "max_batch") == (1, "SingleStream sends one sample per query")
    assert resolve(cpu(scenario="SingleStream", max_batch=1)).knobs["max_batch"] == 1
    with pytest.raises(ConfigError, match="--max-batch 4 does not fit.*SingleStream"):
        resolve(cpu(scenario="SingleStream", max_batch=4))


def test_multistream_batch_is_samples_per_query(tmp_path: Path) -> None:
    config = resolve(cpu(scenario="MultiStream"))
    assert config.knobs["max_batch"] == 8
    assert "MultiStream" in config.provenance["knob.max_batch"]
    assert resolve(cpu(scenario="MultiStream", max_batch=8)).knobs["max_batch"] == 8
    with pytest.raises(ConfigError, match="--max-batch 4 does not fit"):
        resolve(cpu(scenario="MultiStream", max_batch=4))
    conf = user_conf(tmp_path, "*.MultiStream.samples_per_query = 4\n")
    config = resolve(cpu(scenario="MultiStream", user_conf=conf))
    assert config.loadgen["multi_stream_samples_per_query"] == 4
    assert config.knobs["max_batch"] == 4
    assert resolve(cpu(scenario="MultiStream", user_conf=conf, max_batch=4)).knobs["max_batch"] == 4
    with pytest.raises(ConfigError, match="--max-batch 8 does not fit"):
        resolve(cpu(scenario="MultiStream", user_conf=conf, max_batch=8))


@pytest.mark.parametrize("scenario", ["SingleStream", "MultiStream"])
def test_target_qps_does_not_apply_to_stream_scenarios(scenario: str) -> None:
    with pytest.raises(ConfigError, match=f"--target-qps does not apply to the {scenario} scenario"):
        resolve(cpu(scenario=scenario, target_qps=10.0))


def test_target_latency_does_not_apply_to_offline() -> None:
    with pytest.raises(ConfigError, match="--target-latency does not apply to the Offline scenario"):
        resolve(cpu(target_latency_ms=10.0))


# -- backends and precisions --------------------------------------------------------------------------


def test_default_backend_on_cpu_fp32_is_onnxruntime() -> None:
    config = resolve(cpu())
    assert config.backend == "onnxruntime"
    assert config.device.device == "cpu"
    assert config.system_name == cpu_system("onnxruntime", "fp32")
    assert resolve(cpu(backend="torch")).system_name == cpu_system("torch", "fp32")


def test_default_backend_without_onnxruntime_is_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_choice, "_installed", lambda module: module != "onnxruntime")
    assert resolve(cpu()).backend == "torch"


def test_auto_on_a_machine_without_cuda_is_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("runs.device._cuda_names", lambda: [])
    config = resolve(CliRequest(gpu="auto"))
    assert config.device.device == "cpu"
    assert config.device.profile.name == "cpu"
    assert config.backend == "onnxruntime"


def test_gpu_profile_without_cuda_is_a_device_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("runs.device._cuda_names", lambda: [])
    with pytest.raises(DeviceError, match="needs a CUDA GPU"):
        resolve(CliRequest(gpu="H100"))
    with pytest.raises(ConfigError, match="unknown GPU profile 'V100'"):
        resolve(CliRequest(gpu="V100"))


def test_int8_on_the_cpu_defaults_to_onnxruntime() -> None:
    assert resolve(cpu(precision="int8")).backend == "onnxruntime"


def test_int8_on_the_torch_backend_names_the_backends_that_run_it() -> None:
    with pytest.raises(BackendError) as info:
        resolve(cpu(precision="int8", backend="torch"))
    message = str(info.value)
    assert "--backend onnxruntime" in message and "--backend tensorrt" in message
    assert "\n" not in message


def test_tensorrt_on_the_cpu_is_refused() -> None:
    with pytest.raises(DeviceError, match="tensorrt backend needs a CUDA GPU"):
        resolve(cpu(backend="tensorrt"))


def test_missing_tensorrt_gives_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from runs.device import DeviceChoice
    from scenarios.profiles import load_gpu_profile

    gpu = DeviceChoice(load_gpu_profile("L4"), "cuda:0", "NVIDIA L4", 1)
    monkeypatch.setattr(backend_choice, "_installed", lambda module: module != "tensorrt")
    for request in (CliRequest(precision="int8", gpu="L4"), CliRequest(backend="tensorrt", gpu="L4")):
        with pytest.raises(BackendError) as info:
            choose_backend(request, gpu)
        assert "pip install tensorrt" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("backend", [None, "torch"])
def test_half_precision_on_the_cpu_fails_before_the_run(precision: str, backend: str | None) -> None:
    with pytest.raises(DeviceError, match=f"--precision {precision} needs a CUDA GPU"):
        resolve(cpu(precision=precision, backend=backend))


def test_onnxruntime_runs_fp32_and_int8_only() -> None:
    with pytest.raises(BackendError, match="onnxruntime backend runs fp32 and int8"):
        resolve(cpu(precision="fp16", backend="onnxruntime"))


def test_torch_backend_load_refuses_half_precision_on_the_cpu() -> None:
    """The backend's own guard, for callers that bypass resolve()."""
    from sut.backends.base import BackendOptions, ModelSpec
    from sut.backends.torch_backend import TorchBackend

    backend = TorchBackend(ModelSpec("resnet18", "fp16", image_size=32), BackendOptions(device="cpu"))
    with pytest.raises(DeviceError, match="CUDA GPUs only"):
        backend.load()


def test_choose_backend_respects_explicit_choice() -> None:
    device = resolve(cpu()).device
    assert choose_backend(cpu(backend="torch"), device) == "torch"
    assert choose_backend(cpu(backend="onnxruntime"), device) == "onnxruntime"


# -- request validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, words", [
    ({"scenario": "Turbo"}, "unknown scenario 'Turbo'"),
    ({"model": "vgg16"}, "unknown model 'vgg16'"),
    ({"precision": "fp8"}, "unknown precision 'fp8'"),
    ({"mode": "fast"}, "unknown mode 'fast'"),
    ({"dataset": "coco"}, "unknown dataset 'coco'"),
    ({"backend": "tvm"}, "unknown backend 'tvm'"),
    ({"staging": "disk"}, "--staging"),
    ({"max_batch": 0}, "--max-batch must be positive"),
    ({"target_qps": -5.0}, "--target-qps must be positive"),
    ({"min_duration_ms": 0}, "--min-duration-ms must be positive"),
    ({"min_query_count": 0}, "--min-query-count must be positive"),
    ({"image_size": 0}, "--image-size must be positive"),
    ({"image_size": 16}, "at least 32"),
    ({"batch_timeout_us": -1}, "--batch-timeout-us must be >= 0"),
    ({"dataset": "imagenet"}, "--dataset-path"),
])
def test_request_validation(fields: dict, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        CliRequest(**fields)
    assert words in str(info.value)
    assert isinstance(info.value, DeepgapError)


def test_config_json_is_serialisable(tmp_path: Path) -> None:
    conf = user_conf(tmp_path, "*.*.min_duration = 1000\n")
    data = json.loads(json.dumps(resolve(cpu(user_conf=conf, scenario="Server")).to_json()))
    assert data["system_name"] == cpu_system("onnxruntime", "fp32")
    assert data["request"]["user_conf"] == str(conf)
    assert data["loadgen"]["schedule_rng_seed"] == SEEDS["schedule_rng_seed"]
    assert data["provenance"]["loadgen.min_duration_ms"] == f"user.conf {conf}:1"


# -- flags a backend would silently drop (issue 11, items 9 and 18) ------------------------------


@pytest.mark.parametrize("fields, words", [
    ({"compile": "default"}, ["--compile default", "onnxruntime", "--backend torch"]),
    ({"compile": "max-autotune", "backend": "null"}, ["--compile max-autotune", "null"]),
    ({"staging": "host"}, ["--staging", "on the CPU"]),
    ({"staging": "device", "backend": "torch"}, ["--staging", "on the CPU"]),
])
def test_flags_the_backend_ignores_are_refused(fields: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(cpu(**fields))
    for word in words:
        assert word in str(info.value)


def _on_gpu(monkeypatch: pytest.MonkeyPatch, name: str = "L4") -> None:
    """resolve() as on a CUDA device with `name`'s profile (there is no GPU here)."""
    gpu = DeviceChoice(load_gpu_profile(name), "cuda:0", f"NVIDIA {name}", 1)
    monkeypatch.setattr(config_module, "resolve_device", lambda requested, gpus="1": gpu)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_torch_compiles_by_default_on_cuda(monkeypatch: pytest.MonkeyPatch, precision: str) -> None:
    _on_gpu(monkeypatch)
    config = resolve(CliRequest(precision=precision, gpu="L4"))
    assert (config.backend, config.knobs["compile"]) == ("torch", "default")
    assert config.provenance["knob.compile"] == config_module.COMPILE_DEFAULT_RULE
    assert config.system_name == f"L4x1_torch-inductor_{precision}"


def test_compile_none_keeps_the_eager_path_and_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    _on_gpu(monkeypatch)
    config = resolve(CliRequest(precision="fp16", gpu="L4", compile="none"))
    assert config.knobs["compile"] == "none" and config.provenance["knob.compile"] == "CLI"
    assert config.system_name == "L4x1_torch_fp16"
    assert resolve(CliRequest(precision="fp16", gpu="L4", compile="max-autotune")).system_name == \
        "L4x1_torch-inductor-max-autotune_fp16"


def test_the_cpu_runs_eagerly_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve(cpu(backend="torch")).knobs["compile"] == "none"
    assert resolve(cpu(backend="onnxruntime")).knobs["compile"] == "none"
    assert resolve(cpu(backend="torch", compile="default")).knobs["compile"] == "default"


def test_an_unknown_compile_mode_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown compile mode 'fast'"):
        cpu(compile="fast")


@pytest.mark.parametrize("fields, words", [
    # `python -m calibration` refuses a list on synthetic data; so does the run now.
    ({"precision": "int8", "calibration_list": Path("/no/such/list.txt")}, "names ImageNet images"),
    ({"precision": "int8", "calibration_list": Path("cal.txt"), "calibration_algorithm": "entropy"},
     "names ImageNet images"),
    ({"calibration_list": Path("cal.txt")}, "--calibration-list is for --precision int8"),
])
def test_calibration_flags_the_run_would_drop_are_refused(fields: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        CliRequest(**fields)


def test_a_missing_calibration_list_is_refused_before_the_run(tmp_path: Path) -> None:
    missing = tmp_path / "cal_image_list.txt"
    with pytest.raises(ConfigError, match=f"--calibration-list {missing}: no such file"):
        CliRequest(precision="int8", dataset="imagenet", dataset_path=tmp_path, calibration_list=missing)


# -- submission grade (issue 11, item 10) ------------------------------------------------------------


def test_shortened_submission_run_names_each_shortfall(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    conf = user_conf(tmp_path, "*.*.min_duration = 1000\nresnet50.Server.target_latency_percentile = 90\n")
    with caplog.at_level("WARNING"):
        config = resolve(cpu(scenario="Server", run_profile="submission", user_conf=conf))
    shortfalls = config.to_json()["submission_shortfalls"]
    assert shortfalls == [f"min_duration_ms 1000 < 600000 (from user.conf {conf}:1)",
                          f"server_target_latency_percentile 0.9 < 0.99 (from user.conf {conf}:2)"]
    assert "not a submission-grade run: min_duration_ms 1000 < 600000" in caplog.text


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_submission_profile_itself_is_submission_grade(scenario: str) -> None:
    assert resolve(cpu(scenario=scenario, run_profile="submission")).to_json()["submission_shortfalls"] == []


def test_a_tighter_latency_bound_is_still_submission_grade() -> None:
    config = resolve(cpu(scenario="Server", run_profile="submission", target_latency_ms=10))
    assert config.to_json()["submission_shortfalls"] == []
    looser = resolve(cpu(scenario="Server", run_profile="submission", target_latency_ms=100))
    assert looser.to_json()["submission_shortfalls"] == ["server_target_latency_ns 1e+08 > 1.5e+07 (from CLI)"]


def test_quick_profile_is_never_submission_grade() -> None:
    shortfalls = resolve(cpu()).to_json()["submission_shortfalls"]
    assert shortfalls[0].startswith("min_duration_ms 5000 < 600000 (from run profile quick)")


def test_a_small_dataset_falls_short_of_the_performance_sample_count() -> None:
    config = resolve(cpu(run_profile="submission", dataset_count=256))
    config.loadgen["performance_sample_count_override"] = 256  # as the runner records it
    assert config.to_json()["submission_shortfalls"] == [
        f"performance_sample_count_override 256 < 1024 (from {MLPERF})"]


def test_a_batch_wait_as_long_as_the_latency_bound_is_flagged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        resolve(cpu(scenario="Server", batch_timeout_us=20_000))
    assert "will likely be INVALID: a batch may wait 20 ms to fill" in caplog.text
    assert "15 ms latency bound" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        resolve(cpu(scenario="Server"))
    assert caplog.text == ""


def test_loadgen_values_from_a_profile_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    profile = load_gpu_profile("cpu")
    broken = type(profile)(**{**profile.__dict__, "defaults": {"Offline": {"min_query_count": 10**30}}})
    monkeypatch.setattr(config_module, "resolve_device", lambda gpu, gpus="1": DeviceChoice(broken, "cpu", "CPU", 1))
    with pytest.raises(ConfigError, match=r"min_query_count \(from GPU profile cpu .*64-bit"):
        resolve(cpu())


def test_run_profile_early_stopping_bound() -> None:
    from scenarios.profiles import load_run_profile

    assert load_run_profile("quick").early_stopping_within_s == 60
    assert load_run_profile("submission").early_stopping_within_s is None
