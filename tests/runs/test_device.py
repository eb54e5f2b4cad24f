"""--gpu and --gpus against the visible devices (a fake list of CUDA device names)."""

from __future__ import annotations

import pytest

from plumbing.errors import ConfigError, DeviceError
from runs.config import resolve
from runs.device import parse_gpus, resolve_device, select_gpus

H200 = "NVIDIA H200"


@pytest.fixture
def visible(monkeypatch):
    def set_names(*names: str) -> None:
        monkeypatch.setattr("runs.device._cuda_names", lambda: list(names))

    return set_names


@pytest.mark.parametrize("text, expected", [("1", 1), ("4", 4), ("all", None), ("ALL", None),
                                            ("0,2", (0, 2)), ("3, 1", (3, 1))])
def test_gpus_forms(text, expected):
    assert parse_gpus(text) == expected


@pytest.mark.parametrize("text, words", [("0", "at least 1"), ("two", "is not"), ("1,1", "twice"),
                                         ("-1", "is not"), ("0,", "is not")])
def test_bad_gpus_are_one_line_errors(text, words):
    with pytest.raises(ConfigError, match=words):
        parse_gpus(text)


def test_selection_against_the_visible_count():
    assert select_gpus("all", 3) == (0, 1, 2)
    assert select_gpus("2", 3) == (0, 1)
    assert select_gpus("2,0", 3) == (2, 0)
    with pytest.raises(DeviceError, match="asks for 4 GPUs but 2 are visible"):
        select_gpus("4", 2)
    with pytest.raises(DeviceError, match="no CUDA device 5"):
        select_gpus("0,5", 2)


def test_four_gpus_name_the_system_and_list_every_device(visible):
    visible(*[H200] * 4)
    choice = resolve_device("auto", "all")
    assert choice.count == 4 and choice.devices == ("cuda:0", "cuda:1", "cuda:2", "cuda:3")
    assert choice.device == "cuda:0" and choice.system_prefix == "H200x4"
    picked = resolve_device("H200", "1,3")
    assert picked.devices == ("cuda:1", "cuda:3") and picked.system_prefix == "H200x2"
    assert resolve_device("H200").devices == ("cuda:0",)


def test_a_mix_of_gpu_models_is_refused(visible):
    visible(H200, "NVIDIA L4", H200)
    with pytest.raises(DeviceError, match="different GPU models.*1: NVIDIA L4"):
        resolve_device("auto", "all")
    assert resolve_device("auto", "0,2").count == 2  # the same model picked out is fine


def test_the_profile_is_checked_on_every_selected_device(visible):
    visible("NVIDIA L4", "NVIDIA L4", H200)
    with pytest.raises(DeviceError, match="does not match the selected GPUs 'NVIDIA L4'"):
        resolve_device("H200", "2")
    assert resolve_device("L4", "2").devices == ("cuda:0", "cuda:1")
    with pytest.raises(DeviceError, match="the selected GPU 'NVIDIA L4'"):
        resolve_device("H200", "1")


def test_gpus_on_the_cpu_is_refused_with_the_instances_hint(visible):
    visible()
    with pytest.raises(ConfigError, match="--instances"):
        resolve_device("cpu", "2")
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        resolve_device("auto", "2")
    assert resolve_device("cpu", "1").devices == ("cpu",)


def test_a_run_config_carries_the_devices_and_the_instances(visible, tiny_request):
    visible(*[H200] * 2)
    config = resolve(tiny_request(gpu="H200", gpus="2", backend="null", instances=3))
    assert config.system_name == "H200x2_null_fp32"
    assert config.knobs["instances"] == 3 and config.provenance["knob.instances"] == "CLI"
    assert config.to_json()["device"]["devices"] == ["cuda:0", "cuda:1"]
    assert resolve(tiny_request(backend="null")).knobs["instances"] == 1


def test_too_many_instances_are_refused(tiny_request):
    with pytest.raises(ConfigError, match="more than 64"):
        tiny_request(instances=65)
    with pytest.raises(ConfigError, match="must be positive"):
        tiny_request(instances=0)
