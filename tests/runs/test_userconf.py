"""user.conf parsing: LoadGen's syntax, lookup order and units, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from plumbing.errors import ConfigError
from runs.userconf import KNOWN_KEYS, UserConf, key_rule, render

QSL_SEED = 2085463073848966840
SAMPLE_SEED = 2747215439041700203
SCHEDULE_SEED = 16159082839903944936  # above 2**63: a float or int64 would mangle it


def write_conf(tmp_path: Path, text: str, name: str = "user.conf") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def resolve(tmp_path: Path, text: str, model: str = "resnet50", scenario: str = "Offline"):
    return UserConf.parse(write_conf(tmp_path, text)).resolve(model, scenario)


def values(resolved: dict) -> dict:
    return {attr: value for attr, (value, _) in resolved.items()}


# -- syntax --------------------------------------------------------------------------------


def test_comments_blank_lines_and_spacing(tmp_path: Path) -> None:
    path = write_conf(tmp_path, "\n".join([
        "# a comment line",
        "",
        "   ",
        "\t# indented comment",
        "resnet50.Offline.target_qps = 123   # trailing comment",
        "resnet50.Offline.min_query_count=77",
        "   resnet50.Offline.min_duration   =   4000   ",
        "",
    ]))
    conf = UserConf.parse(path)
    assert [e.line for e in conf.entries] == [5, 6, 7]
    resolved = conf.resolve("resnet50", "Offline")
    assert values(resolved) == {"offline_expected_qps": 123, "min_query_count": 77, "min_duration_ms": 4000}
    assert resolved["offline_expected_qps"][1] == f"{path}:5"
    assert resolved["min_duration_ms"][1] == f"{path}:7"


def test_empty_file_resolves_to_nothing(tmp_path: Path) -> None:
    assert resolve(tmp_path, "# nothing here\n\n") == {}


def test_float_and_integer_values(tmp_path: Path) -> None:
    got = values(resolve(tmp_path, "*.Offline.target_qps = 12.5\n*.Offline.min_query_count = 0x10\n"))
    assert got == {"offline_expected_qps": 12.5, "min_query_count": 16}
    assert isinstance(got["min_query_count"], int)


# -- lookup order -----------------------------------------------------------------------------

ALL_FOUR = {
    ("resnet50", "Server"): 1,
    ("*", "Server"): 2,
    ("resnet50", "*"): 3,
    ("*", "*"): 4,
}


@pytest.mark.parametrize("present, expected", [
    ([("resnet50", "Server"), ("*", "Server"), ("resnet50", "*"), ("*", "*")], 1),
    ([("*", "Server"), ("resnet50", "*"), ("*", "*")], 2),
    ([("resnet50", "*"), ("*", "*")], 3),
    ([("*", "*")], 4),
    # File order does not matter, only specificity: model.scenario first even when listed last.
    ([("*", "*"), ("resnet50", "*"), ("*", "Server"), ("resnet50", "Server")], 1),
    ([("*", "*"), ("resnet50", "*"), ("*", "Server")], 2),
    ([("*", "*"), ("resnet50", "*")], 3),
])
def test_lookup_precedence(tmp_path: Path, present: list, expected: int) -> None:
    lines = [f"{m}.{s}.target_qps = {ALL_FOUR[(m, s)]}" for m, s in present]
    path = write_conf(tmp_path, "\n".join(lines) + "\n")
    resolved = UserConf.parse(path).resolve("resnet50", "Server")
    assert resolved["server_target_qps"][0] == expected
    expected_line = present.index(next(k for k, v in ALL_FOUR.items() if v == expected)) + 1
    assert resolved["server_target_qps"][1] == f"{path}:{expected_line}"


def test_precedence_is_per_key(tmp_path: Path) -> None:
    got = values(resolve(tmp_path, "\n".join([
        "*.*.min_duration = 1000",
        "resnet50.Offline.target_qps = 50",
        "*.Offline.min_query_count = 300",
        "resnet50.*.min_query_count = 400",  # less specific than *.Offline
    ])))
    assert got == {"min_duration_ms": 1000, "offline_expected_qps": 50, "min_query_count": 300}


def test_other_models_and_scenarios_do_not_apply(tmp_path: Path) -> None:
    text = "resnet101.Offline.target_qps = 9\nresnet50.Server.target_qps = 8\n"
    assert resolve(tmp_path, text, "resnet50", "Offline") == {}
    assert values(resolve(tmp_path, text, "resnet101", "Offline")) == {"offline_expected_qps": 9}


def test_later_line_wins_for_the_same_key(tmp_path: Path) -> None:
    path = write_conf(tmp_path, "\n".join([
        "resnet50.Offline.target_qps = 10",
        "*.*.min_duration = 1",
        "resnet50.Offline.target_qps = 20",
        "*.*.min_duration = 2",
        "resnet50.Offline.target_qps = 30",
    ]) + "\n")
    resolved = UserConf.parse(path).resolve("resnet50", "Offline")
    assert resolved["offline_expected_qps"] == (30, f"{path}:5")
    assert resolved["min_duration_ms"] == (2, f"{path}:4")


# -- units and types -----------------------------------------------------------------------------


def test_milliseconds_become_nanoseconds(tmp_path: Path) -> None:
    text = "*.*.target_latency = 15\n*.SingleStream.target_latency = 0.5\n"
    server = values(resolve(tmp_path, text, scenario="Server"))
    assert server["server_target_latency_ns"] == 15_000_000
    assert isinstance(server["server_target_latency_ns"], int)
    single = values(resolve(tmp_path, text, scenario="SingleStream"))
    assert single["single_stream_expected_latency_ns"] == 500_000
    multi = values(resolve(tmp_path, text, scenario="MultiStream"))
    assert multi["multi_stream_expected_latency_ns"] == 15_000_000


def test_percentages_become_fractions(tmp_path: Path) -> None:
    text = ("*.Server.target_latency_percentile = 99\n"
            "*.SingleStream.target_latency_percentile = 90\n"
            "*.*.accuracy_log_probability = 10\n")
    server = values(resolve(tmp_path, text, scenario="Server"))
    assert server["server_target_latency_percentile"] == pytest.approx(0.99)
    assert server["accuracy_log_probability"] == pytest.approx(0.10)
    single = values(resolve(tmp_path, text, scenario="SingleStream"))
    assert single["single_stream_target_latency_percentile"] == pytest.approx(0.90)


def test_min_duration_stays_in_milliseconds(tmp_path: Path) -> None:
    assert values(resolve(tmp_path, "*.*.min_duration = 600000\n")) == {"min_duration_ms": 600000}


def test_64_bit_seeds_are_exact(tmp_path: Path) -> None:
    got = values(resolve(tmp_path, "\n".join([
        f"*.*.qsl_rng_seed = {QSL_SEED}",
        f"*.*.sample_index_rng_seed = {SAMPLE_SEED}",
        f"*.*.schedule_rng_seed = {SCHEDULE_SEED}",
        "*.*.accuracy_log_rng_seed = 18446744073709551615",
    ])))
    assert got == {
        "qsl_rng_seed": QSL_SEED,
        "sample_index_rng_seed": SAMPLE_SEED,
        "schedule_rng_seed": SCHEDULE_SEED,
        "accuracy_log_rng_seed": 2**64 - 1,
    }
    assert all(type(v) is int for v in got.values())
    assert float(SCHEDULE_SEED) != SCHEDULE_SEED  # the point: a float round-trip would lose it


# -- scenario-specific keys --------------------------------------------------------------------------


@pytest.mark.parametrize("scenario, attr", [
    ("Server", "server_target_qps"),
    ("Offline", "offline_expected_qps"),
    ("SingleStream", None),
    ("MultiStream", None),
])
def test_target_qps_maps_per_scenario(tmp_path: Path, scenario: str, attr: str | None) -> None:
    got = values(resolve(tmp_path, "*.*.target_qps = 321\n", scenario=scenario))
    assert got == ({attr: 321} if attr else {})


def test_samples_per_query_only_in_multistream(tmp_path: Path) -> None:
    text = "*.*.samples_per_query = 4\n"
    assert values(resolve(tmp_path, text, scenario="MultiStream")) == {"multi_stream_samples_per_query": 4}
    for scenario in ("SingleStream", "Server", "Offline"):
        assert resolve(tmp_path, text, scenario=scenario) == {}


def test_target_latency_ignored_in_offline(tmp_path: Path) -> None:
    assert resolve(tmp_path, "*.*.target_latency = 10\n", scenario="Offline") == {}


def test_key_rule_table() -> None:
    assert key_rule("Offline", "target_qps").attr == "offline_expected_qps"
    assert key_rule("Server", "target_qps").attr == "server_target_qps"
    assert key_rule("SingleStream", "target_qps") is None
    assert key_rule("Server", "target_latency").scale == pytest.approx(1e6)
    assert key_rule("Offline", "min_duration").attr == "min_duration_ms"


# -- errors: one line, with file:line --------------------------------------------------------------


@pytest.mark.parametrize("bad_line, words", [
    ("resnet50.Offline.target_qps 5", ["expected 'model.scenario.key = value'"]),
    ("resnet50.Offline = 5", ["expected"]),
    ("resnet50.Offline.target_qps =", ["expected"]),
    ("target_qps = 5", ["expected"]),
    ("resnet50.Offline.target_qps = 5 6", ["expected"]),
    ("resnet50.Turbo.target_qps = 5", ["unknown scenario", "'Turbo'"]),
    ("resnet50.offline.target_qps = 5", ["unknown scenario"]),
    ("resnet50.Offline.warp_factor = 5", ["unknown key", "'warp_factor'"]),
    ("resnet50.Offline.target_qps = fast", ["'fast'", "not a number"]),
    ("resnet50.Offline.target_qps = 5ms", ["'5ms'", "not a number"]),
    ("resnet50.Offline.target_qps = -5", ["'-5'", "non-negative"]),
    ("resnet50.Offline.min_duration = -1.5", ["non-negative"]),
    ("resnet50.Offline.target_qps = nan", ["'nan'", "not a finite number"]),
    # Item 11 of issue 11: model names were never checked; 1e400 became inf.
    ("vgg16.Offline.target_qps = 5", ["unknown model", "'vgg16'", "resnet50", "*"]),
    ("ResNet50.Offline.target_qps = 5", ["unknown model", "'ResNet50'"]),
    ("resnet50.Offlin.target_qps = 5", ["unknown scenario", "'Offlin'"]),
    ("resnet50.Offline.target_qps = 1e400", ["'1e400'", "not a finite number"]),
    ("resnet50.Server.target_qps = inf", ["'inf'", "not a finite number"]),
    ("*.*.min_duration = inf", ["'inf'", "not a finite number"]),
    # Item 8: a huge integer reached pybind as a TypeError; inf an OverflowError.
    ("resnet50.Offline.min_query_count = 100000000000000000000000000000", ["min_query_count", "64-bit"]),
    ("resnet50.Server.target_latency = 1e16", ["target_latency", "64-bit"]),
    ("*.*.target_latency = 1e16", ["target_latency", "64-bit"]),
    ("resnet50.Offline.min_query_count = 2.5", ["whole number"]),
    ("resnet50.Server.target_latency_percentile = 150", ["percentage"]),
    ("resnet50.Offline.print_timestamps = 2", ["0 or 1"]),
])
def test_errors_name_file_and_line(tmp_path: Path, bad_line: str, words: list[str]) -> None:
    path = write_conf(tmp_path, "# header\n\nresnet50.Offline.min_duration = 100\n" + bad_line + "\n")
    with pytest.raises(ConfigError) as info:
        UserConf.parse(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:4: ")
    for word in words:
        assert word in message


def test_error_reports_first_bad_line(tmp_path: Path) -> None:
    path = write_conf(tmp_path, "*.*.nope = 1\n*.*.also_nope = 2\n")
    with pytest.raises(ConfigError, match=r":1: unknown key 'nope'"):
        UserConf.parse(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.conf"
    with pytest.raises(ConfigError) as info:
        UserConf.parse(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert "no such file" in message


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        UserConf.parse(tmp_path)  # a directory
    binary = tmp_path / "binary.conf"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError):
        UserConf.parse(binary)


# -- render round-trip ----------------------------------------------------------------------------


def expressible(scenario: str, loadgen: dict) -> dict:
    """The attributes render() can write for `scenario` (user.conf keys, except mode)."""
    attrs = {key_rule(scenario, k).attr for k in KNOWN_KEYS if k != "mode" and key_rule(scenario, k)}
    return {attr: value for attr, value in loadgen.items() if attr in attrs}


def round_trip(tmp_path: Path, model: str, scenario: str, loadgen: dict) -> dict:
    text = render(model, scenario, {attr: (value, "test") for attr, value in loadgen.items()})
    return values(UserConf.parse(write_conf(tmp_path, text, "rendered.conf")).resolve(model, scenario))


def assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for attr, value in want.items():
        if isinstance(value, float) and not float(value).is_integer():
            assert got[attr] == pytest.approx(value, rel=1e-12), attr
        else:
            assert got[attr] == value, attr


def test_render_round_trips_hand_made_values(tmp_path: Path) -> None:
    loadgen = {
        "min_duration_ms": 600000,
        "min_query_count": 24576,
        "qsl_rng_seed": QSL_SEED,
        "sample_index_rng_seed": SAMPLE_SEED,
        "schedule_rng_seed": SCHEDULE_SEED,
        "performance_sample_count_override": 1024,
        "server_target_qps": 1234.5,
        "server_target_latency_ns": 15_000_000,
        "server_target_latency_percentile": 0.99,
        "server_coalesce_queries": True,
        "accuracy_log_probability": 0.25,
        "offline_expected_qps": 99.0,  # not a Server setting: not written
        "mode": 2,  # never written: the run's mode is authoritative
    }
    got = round_trip(tmp_path, "resnet50", "Server", loadgen)
    want = expressible("Server", loadgen)
    want.pop("mode", None)
    assert "offline_expected_qps" not in want
    assert_same(got, want)
    assert got["schedule_rng_seed"] == SCHEDULE_SEED


def test_render_lines_name_their_source(tmp_path: Path) -> None:
    text = render("resnet18", "Offline", {"offline_expected_qps": (45, "GPU profile cpu (cpu.yaml)"),
                                           "min_duration_ms": (200, "CLI")})
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == [
        "resnet18.Offline.min_duration = 200  # from CLI",
        "resnet18.Offline.target_qps = 45  # from GPU profile cpu (cpu.yaml)",
    ]


@pytest.mark.parametrize("scenario", ["SingleStream", "MultiStream", "Server", "Offline"])
@pytest.mark.parametrize("run_profile", ["quick", "submission"])
def test_render_round_trips_resolved_configs(tmp_path: Path, scenario: str, run_profile: str) -> None:
    from runs.config import CliRequest, resolve as resolve_config

    user_conf = write_conf(tmp_path, "*.*.target_latency_percentile = 97.5\n*.*.max_duration = 123456\n",
                           "extra.conf")
    config = resolve_config(CliRequest(gpu="cpu", scenario=scenario, model="resnet18",
                                       run_profile=run_profile, user_conf=user_conf))
    want = expressible(scenario, config.loadgen)
    assert want, "nothing to round-trip"
    assert_same(round_trip(tmp_path, "resnet18", scenario, config.loadgen), want)
