"""The accuracy gate end to end on the CPU: ONNX Runtime INT8 against FP32 torch, on the
digits-trained stand-in network. A faithful backend passes; wrong scales are stopped."""

from __future__ import annotations

import json

import pytest

from runs.config import resolve
from runs.gating import GateFailed, run_gate
from runs.runner import backend_options, execute

GATED = dict(precision="int8", gate_samples=120, calibration_count=64, dataset_count=64)


@pytest.mark.parametrize("cpu_path", ["reduce-range", "u8u8", "vnni", "auto"])
def test_faithful_int8_backend_passes_the_gate(tiny_request, cpu_path):
    """Each INT8 CPU path forced, where it is exact on this CPU (the full-range vnni path
    needs VNNI or AMX), and auto: whichever this CPU resolves it to must pass too."""
    from tests.sut.test_cpu_isa import exact_cpu_path

    if cpu_path != "auto":
        exact_cpu_path(cpu_path)  # skips, saying why, where the path is not exact here
    config = resolve(tiny_request(**GATED, int8_cpu_path=cpu_path))
    verdict = run_gate(config, backend_options(config, {"int8_cpu_path": cpu_path}))
    figures = verdict.figures
    assert verdict.passed, f"{cpu_path}: {verdict.line()}"
    assert figures.samples == 120 and figures.top1 is not None
    assert figures.reference_top1 > 0.5  # the stand-in network is trained
    assert figures.agreement > 0.9 and figures.cosine > 0.98
    assert "digits" in figures.measured_on


def test_wrong_scales_stop_the_run_before_it_is_measured(tiny_request, monkeypatch):
    from calibration.cache import CalibrationCache

    real = CalibrationCache.activation_amax.fget

    def broken(cache):  # every activation range 1000x too wide: INT8 keeps almost no signal
        return {name: 1000.0 * amax for name, amax in real(cache).items()}

    monkeypatch.setattr(CalibrationCache, "activation_amax", property(broken))
    config = resolve(tiny_request(**GATED))
    with pytest.raises(GateFailed, match="accuracy gate FAIL") as info:
        execute(config, show_progress=False)
    assert "\n" not in str(info.value)
    measurements = json.loads(next(config.request.output.rglob("measurements.json")).read_text())
    run = measurements["runs"]["performance"]
    assert run["status"] == "gate_failed" and run["accuracy_gate"]["passed"] is False
    assert not list(config.request.output.rglob("mlperf_log_summary.txt"))  # nothing was timed


def test_skipping_the_gate_is_recorded(tiny_request):
    config = resolve(tiny_request(skip_accuracy_gate=True, **GATED))
    outcome = execute(config, show_progress=False)
    assert outcome.result["accuracy_gate"] == {"skipped": True}
    assert outcome.result["calibration"]["algorithm"] == "percentile"


@pytest.mark.parametrize("device, size, reduced", [("cpu", 224, 64), ("cpu", 48, 48), ("cuda:0", 224, 224)])
def test_stand_in_size_is_capped_on_the_cpu_and_says_so(tiny_request, monkeypatch, device, size, reduced):
    """Training a ResNet at 224 px on a few CPU cores takes tens of minutes; on the CPU the
    stand-in is checked at most at 64 px and the description says it was reduced."""
    import sut.digits_model
    from runs.gating import gate_target

    asked = {}

    def fake_spec(model, precision, image_size, seed=0, cache_dir=None, device="cpu"):
        asked.update(image_size=image_size, device=device)
        return sut.digits_model.ModelSpec(model, precision, image_size=image_size, num_classes=10)

    monkeypatch.setattr(sut.digits_model, "digits_spec", fake_spec)
    config = resolve(tiny_request(precision="int8", image_size=size))
    spec, dataset, _, measured_on = gate_target(config, device)
    assert asked == {"image_size": reduced, "device": device}
    assert spec.image_size == reduced and dataset.image_size == reduced
    assert (f"reduced from the run's {size} px" in measured_on) == (reduced != size)


def test_calibration_images_follow_the_calibration_seed_not_the_weights_seed(tiny_request):
    """The same seed picks the same images as `python -m calibration --calibration-seed`."""
    from runs.gating import calibration_config

    config = resolve(tiny_request(seed=3, calibration_seed=5, **GATED))
    assert calibration_config(config, "synthetic").seed == 5
    assert calibration_config(resolve(tiny_request(seed=3, **GATED)), "synthetic").seed == 0


def test_a_compiled_network_is_gated_in_fp32_through_its_compiled_module(tiny_request, tmp_path, monkeypatch):
    """FP32 needs no gate eagerly; compiled, the gate checks the compiled network (the mode
    and cache it reports) against FP32 eager, and the run records its own compilation."""
    monkeypatch.setattr("sut.compiling._USER_CACHE_DIR", str(tmp_path / "inductor"))
    config = resolve(tiny_request(backend="torch", compile="default", gate_samples=40, dataset_count=32))
    outcome = execute(config, show_progress=False)
    gate = outcome.result["accuracy_gate"]
    assert gate["passed"] and gate["compile"]["compiled"] and gate["compile"]["mode"] == "default"
    assert gate["relative_error"] < 1e-3 and gate["cosine"] > 0.999
    run = outcome.result["backend"]["compile"]
    assert run["compiled"] and run["mode"] == "default" and run["cache_dir"] == str(tmp_path / "inductor")
    assert config.system_name.endswith("_torch-inductor_fp32") and config.system_name in outcome.paths.run_dir.parts
    eager = resolve(tiny_request(backend="torch", output=tmp_path / "eager"))
    assert "accuracy_gate" not in execute(eager, show_progress=False).result
