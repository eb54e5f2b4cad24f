"""The real CLI in a subprocess: every user mistake is one line on stderr, never a traceback."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from runs import limits
from runs.loadgen_log import parse_detail
from tests.conftest import cpu_system

ROOT = Path(__file__).resolve().parents[2]
# A tiny valid run: a few seconds on two CPU cores.
TINY = ["--image-size", "32", "--model", "resnet18", "--dataset-count", "64",
        "--min-duration-ms", "200", "--min-query-count", "16", "--target-qps", "200",
        "--gpu", "cpu", "--backend", "torch", "--no-progress"]
SYSTEM = cpu_system("torch", "fp32")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deepgap-cache")


def run_cli(args: list[str], cache: Path, timeout: float = 180,
            address_space: int | None = None) -> subprocess.CompletedProcess:
    """`address_space` (bytes): the child's ulimit -v, so that a case that allocated without
    bound before its fix fails fast there instead of taking the machine's memory."""
    env = dict(os.environ, DEEPGAP_CACHE=str(cache), CUDA_VISIBLE_DEVICES="", COLUMNS="100")

    def limit() -> None:
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    return subprocess.run([sys.executable, "harness/run.py", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=limit)


def assert_finished(proc: subprocess.CompletedProcess) -> None:
    """A run that finished and kept its result: exit 0 when LoadGen called it VALID, 6 when
    INVALID (these tiny runs are not about validity; a busy host may make one too short)."""
    from plumbing.errors import INVALID_RESULT_EXIT

    assert proc.returncode in (0, INVALID_RESULT_EXIT), f"{proc.stdout}\n{proc.stderr}"
    assert ("result: VALID" in proc.stdout) == (proc.returncode == 0), proc.stdout
    assert "Traceback" not in proc.stderr


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    output = f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode != 0, output
    assert "Traceback" not in proc.stdout + proc.stderr, output
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, output
    line = lines[0]
    assert line.strip() and line.startswith("deepgap: error:"), output
    for word in words:
        assert word.lower() in line.lower(), f"{word!r} not in {line!r}"
    return line


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """Every case writes under tmp_path, never into the repository."""
    return tmp_path / "out"


# -- bad choices ---------------------------------------------------------------------------------


@pytest.mark.parametrize("args, words", [
    (["--scenario", "Turbo"], ["--scenario", "Turbo", "Offline"]),
    (["--model", "vgg16"], ["--model", "vgg16", "resnet50"]),
    (["--precision", "fp8"], ["--precision", "fp8", "fp32"]),
    (["--backend", "tvm"], ["--backend", "tvm", "onnxruntime"]),
    (["--mode", "fast"], ["--mode", "performance"]),
    (["--dataset", "coco"], ["--dataset", "synthetic"]),
    (["--bogus-flag"], ["unrecognized", "--bogus-flag"]),
    (["--max-batch"], ["--max-batch", "expected one argument"]),
    (["--int8-cpu-path", "int4"], ["--int8-cpu-path", "int4", "reduce-range", "u8u8"]),
])
def test_argparse_errors(cache_dir: Path, out: Path, args: list[str], words: list[str]) -> None:
    proc = run_cli([*args, "--output", out], cache_dir)
    assert proc.returncode == 2
    assert_one_line_error(proc, *words)


def test_unknown_run_profile(cache_dir: Path, out: Path) -> None:
    proc = run_cli(["--profile", "nope", "--gpu", "cpu", "--output", out], cache_dir)
    assert_one_line_error(proc, "unknown run profile", "'nope'", "quick", "submission")


def test_unknown_gpu_profile(cache_dir: Path, out: Path) -> None:
    proc = run_cli(["--gpu", "V100", "--output", out], cache_dir)
    assert_one_line_error(proc, "unknown GPU profile", "V100", "H100", "cpu", "auto")


def test_gpu_profile_without_cuda(cache_dir: Path, out: Path) -> None:
    proc = run_cli(["--gpu", "H100", "--output", out], cache_dir)
    assert_one_line_error(proc, "--gpu H100", "CUDA", "--gpu cpu")


@pytest.mark.parametrize("args", [
    ["--precision", "fp16", "--gpu", "cpu"],
    ["--precision", "fp16"],  # --gpu auto finds no GPU here
    ["--precision", "bf16", "--gpu", "cpu", "--backend", "torch"],
])
def test_half_precision_on_the_cpu(cache_dir: Path, out: Path, args: list[str]) -> None:
    proc = run_cli([*args, "--output", out], cache_dir)
    assert_one_line_error(proc, "needs a CUDA GPU", "fp32")
    assert not out.exists(), "nothing should be created for a run that cannot start"


def test_int8_on_torch(cache_dir: Path, out: Path) -> None:
    proc = run_cli(["--precision", "int8", "--backend", "torch", "--gpu", "cpu", "--output", out], cache_dir)
    assert_one_line_error(proc, "int8", "--backend onnxruntime", "--backend tensorrt")


@pytest.mark.parametrize("args", [
    ["--precision", "fp32", "--gpu", "cpu"],  # no INT8 at all
    ["--precision", "int8", "--gpu", "cpu", "--backend", "null"],
])
def test_int8_cpu_path_outside_onnxruntime_int8_on_the_cpu(cache_dir: Path, out: Path, args: list[str]) -> None:
    proc = run_cli([*args, "--int8-cpu-path", "reduce-range", "--output", out], cache_dir)
    assert_one_line_error(proc, "--int8-cpu-path reduce-range", "--precision int8", "onnxruntime", "CPU")
    assert not out.exists()


def test_tensorrt_on_cpu(cache_dir: Path, out: Path) -> None:
    proc = run_cli(["--backend", "tensorrt", "--gpu", "cpu", "--output", out], cache_dir)
    assert_one_line_error(proc, "tensorrt", "CUDA GPU")


# -- dataset --------------------------------------------------------------------------------------


def test_imagenet_without_path(cache_dir: Path, out: Path) -> None:
    proc = run_cli(["--dataset", "imagenet", "--gpu", "cpu", "--output", out], cache_dir)
    assert_one_line_error(proc, "--dataset-path", "val_map.txt")


def test_imagenet_missing_folder(cache_dir: Path, out: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-imagenet"
    proc = run_cli(["--dataset", "imagenet", "--dataset-path", missing, *TINY, "--output", out], cache_dir)
    assert_one_line_error(proc, str(missing), "does not exist")


def test_imagenet_folder_without_val_map(cache_dir: Path, out: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imagenet"
    folder.mkdir()
    (folder / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"")
    proc = run_cli(["--dataset", "imagenet", "--dataset-path", folder, *TINY, "--output", out], cache_dir)
    assert_one_line_error(proc, str(folder), "val_map.txt")


# -- user.conf ------------------------------------------------------------------------------------


def test_malformed_user_conf(cache_dir: Path, out: Path, tmp_path: Path) -> None:
    conf = tmp_path / "user.conf"
    conf.write_text("# my settings\nresnet50.Offline.target_qps = 10\nresnet50.Offline.min_duration 500\n")
    proc = run_cli(["--user-conf", conf, "--gpu", "cpu", "--output", out], cache_dir)
    assert_one_line_error(proc, f"{conf}:3", "expected 'model.scenario.key = value'")


@pytest.mark.parametrize("line, words", [
    ("resnet50.Turbo.target_qps = 1", ["unknown scenario", "Turbo"]),
    ("resnet50.Offline.warp = 1", ["unknown key", "warp"]),
    ("resnet50.Offline.target_qps = fast", ["not a number"]),
    ("resnet50.Offline.target_qps = -3", ["non-negative"]),
    # Issue 11, items 8 and 11: OverflowError and pybind TypeError tracebacks; names unchecked.
    ("resnet50.Offline.target_qps = inf", ["'inf'", "not a finite number"]),
    ("resnet50.Offline.target_qps = 1e400", ["'1e400'", "not a finite number"]),
    ("resnet50.Offline.min_query_count = 100000000000000000000000", ["min_query_count", "64-bit"]),
    ("vgg16.Offline.target_qps = 1", ["unknown model", "'vgg16'"]),
    ("resnet50.Offlin.target_qps = 1", ["unknown scenario", "'Offlin'"]),
])
def test_bad_user_conf_values(cache_dir: Path, out: Path, tmp_path: Path, line: str, words: list[str]) -> None:
    conf = tmp_path / "user.conf"
    conf.write_text(f"{line}\n")
    proc = run_cli(["--user-conf", conf, "--gpu", "cpu", "--output", out], cache_dir)
    assert_one_line_error(proc, f"{conf}:1", *words)


def test_missing_user_conf(cache_dir: Path, out: Path, tmp_path: Path) -> None:
    conf = tmp_path / "absent.conf"
    proc = run_cli(["--user-conf", conf, "--gpu", "cpu", "--output", out], cache_dir)
    assert_one_line_error(proc, str(conf), "no such file")


# -- output -----------------------------------------------------------------------------------------


def test_unwritable_output(cache_dir: Path, tmp_path: Path) -> None:
    # Tests may run as root, which ignores permissions; a path under a regular file fails for anyone.
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder\n")
    proc = run_cli([*TINY, "--output", blocker / "out"], cache_dir)
    assert_one_line_error(proc, "cannot write results", str(blocker))
    assert blocker.read_text() == "not a folder\n"


# -- numbers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, words", [
    (["--max-batch", "0"], ["--max-batch", "positive"]),
    (["--target-qps", "-5"], ["--target-qps", "positive"]),
    (["--target-qps", "0"], ["--target-qps", "positive"]),
    (["--target-qps", "inf"], ["--target-qps", "finite"]),
    (["--target-qps", "nan"], ["--target-qps", "positive"]),
    (["--target-latency-ms", "0"], ["--target-latency-ms", "positive"]),
    (["--min-duration-ms", "0"], ["--min-duration-ms", "positive"]),
    (["--min-query-count", "-1"], ["--min-query-count", "positive"]),
    (["--image-size", "0"], ["--image-size", "positive"]),
    (["--image-size", "16"], ["--image-size", "32"]),
    (["--batch-timeout-us", "-1"], ["--batch-timeout-us", ">= 0"]),
    (["--dataset-count", "0"], ["--dataset-count", "positive"]),
    (["--threads", "0"], ["--threads", "positive"]),
    (["--seed", "-1"], ["--seed", ">= 0"]),
    (["--calibration-seed", "-1"], ["--calibration-seed", ">= 0"]),
    (["--max-batch", "four"], ["--max-batch", "whole number"]),
    (["--max-batch", "2.5"], ["--max-batch", "whole number"]),
    (["--target-qps", "many"], ["--target-qps", "number"]),
])
def test_bad_numbers(cache_dir: Path, out: Path, args: list[str], words: list[str]) -> None:
    proc = run_cli([*args, "--gpu", "cpu", "--output", out], cache_dir)
    assert_one_line_error(proc, *words)


# -- unbounded sizes (issue 11, items 1, 2, 3, 8) -----------------------------------------------------

# Enough for a tiny run (torch alone maps over 3 GB); far too little for what these cases allocated.
SMALL_ADDRESS_SPACE = 6 << 30


@pytest.mark.parametrize("args, words", [
    (["--scenario", "Server", "--target-qps", "1e12"],
     ["5,000,000,000,000 queries", "server_target_qps 1e+12 from CLI", "host memory"]),
    (["--target-qps", "1e12"], ["5,500,000,000,000 samples", "offline_expected_qps 1e+12 from CLI"]),
    (["--min-query-count", "1000000000000"], ["1,000,000,000,000 samples", "min_query_count 1e+12 from CLI"]),
    (["--max-batch", "10000000"], ["max_batch 10,000,000 from CLI at 224 px"]),
    (["--dataset-count", "1000000000000"], ["index of 1,000,000,000,000 dataset samples"]),
    (["--min-query-count", "100000000000000000000000"], ["min_query_count (from CLI)", "64-bit"]),
    (["--threads", "100000"], ["threads 100000 (from CLI) exceeds the", "CPUs"]),
])
def test_what_cannot_fit_is_refused_before_the_run(cache_dir: Path, out: Path, args: list[str],
                                                   words: list[str]) -> None:
    proc = run_cli([*args, "--gpu", "cpu", "--output", out], cache_dir, timeout=120,
                   address_space=SMALL_ADDRESS_SPACE)
    assert proc.returncode == 2
    assert_one_line_error(proc, *words)
    assert not out.exists(), "nothing is created for a run that cannot start"


def test_null_backend_sizing_is_bounded(cache_dir: Path, out: Path) -> None:
    # Issue 11, item 1: the warm-up set offline_expected_qps to 46M and the run took 24 GB.
    proc = run_cli(["--backend", "null", "--gpu", "cpu", "--model", "resnet18", "--image-size", "32",
                    "--dataset-count", "64", "--min-duration-ms", "1000", "--no-progress", "--output", out],
                   cache_dir, timeout=180, address_space=SMALL_ADDRESS_SPACE)
    assert proc.returncode == 0, proc.stderr
    assert "result: VALID" in proc.stdout
    (saved,) = out.glob("results/*/resnet18/Offline/measurements.json")
    config = json.loads(saved.read_text())["runs"]["performance"]["config"]
    assert config["loadgen"]["offline_expected_qps"] <= limits.HARNESS_MAX_SAMPLES_PER_S
    assert "capped by the harness's own ceiling" in config["provenance"]["loadgen.offline_expected_qps"]


# -- flags that were silently dropped (issue 11, items 9 and 18) -------------------------------------------


@pytest.mark.parametrize("args, words", [
    (["--compile", "default"], ["--compile default", "onnxruntime", "--backend torch"]),
    (["--staging", "host"], ["--staging", "CPU"]),
    (["--precision", "int8", "--calibration-list", "/no/such/cal_list.txt"], ["--calibration-list", "ImageNet"]),
    (["--calibration-list", "/no/such/cal_list.txt"], ["--calibration-list", "int8"]),
])
def test_flags_a_run_would_ignore_are_refused(cache_dir: Path, out: Path, args: list[str], words: list[str]) -> None:
    proc = run_cli([*args, "--gpu", "cpu", "--output", out], cache_dir)
    assert_one_line_error(proc, *words)
    assert not out.exists()


# -- submission grade (issue 11, item 10) -------------------------------------------------------------


def test_shortened_submission_run_says_it_is_not_submission_grade(cache_dir: Path, out: Path,
                                                                   tmp_path: Path) -> None:
    conf = tmp_path / "user.conf"
    conf.write_text("*.Offline.min_duration = 1000\n*.Offline.min_query_count = 16\n")
    tiny = ["--image-size", "32", "--model", "resnet18", "--target-qps", "200", "--gpu", "cpu", "--backend", "torch",
            "--no-progress"]
    proc = run_cli([*tiny, "--profile", "submission", "--user-conf", conf, "--dataset-count", "1024",
                    "--output", out], cache_dir)
    assert_finished(proc)
    assert "(run profile submission)" in proc.stdout
    note = next(line for line in proc.stdout.splitlines() if "submission-grade" in line)
    assert note.startswith("note: not a submission-grade result: ")
    assert f"min_duration_ms 1000 < 600000 (from user.conf {conf}:1)" in note
    assert f"min_query_count 16 < 24576 (from user.conf {conf}:2)" in note
    assert "not a submission-grade run: min_duration_ms 1000 < 600000" in proc.stderr  # said before the run
    (saved,) = out.glob("results/*/resnet18/Offline/measurements.json")
    config = json.loads(saved.read_text())["runs"]["performance"]["config"]
    assert config["submission_shortfalls"][0] == f"min_duration_ms 1000 < 600000 (from user.conf {conf}:1)"


# -- enough queries for LoadGen's early stopping (issue 11, item 17) ---------------------------------


def run_result(out: Path, scenario: str) -> dict:
    (saved,) = out.glob(f"results/*/resnet18/{scenario}/measurements.json")
    return json.loads(saved.read_text())["runs"]["performance"]


def test_plain_multistream_run_on_the_cpu_is_valid(cache_dir: Path, out: Path) -> None:
    # Was INVALID: "Only processed 246 queries. Need to process at least 662 queries".
    proc = run_cli(["--scenario", "MultiStream", "--gpu", "cpu", "--model", "resnet18", "--image-size", "32",
                    "--dataset-count", "256", "--no-progress", "--output", out], cache_dir, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "result: VALID" in proc.stdout, proc.stdout
    # The warm-up raised the query count to what LoadGen's early stopping needs for p99,
    # even where the minimum duration alone would run that many at the warm-up's pace (a
    # busy host's run slower than its warm-up was INVALID).
    result = run_result(out, "MultiStream")
    assert result["config"]["loadgen"]["min_query_count"] >= 662, result["config"]["loadgen"]
    assert result["harness"]["samples_completed"] // 8 >= 662, result["harness"]


def test_plain_server_run_on_the_cpu_has_the_queries_p99_needs(cache_dir: Path, out: Path) -> None:
    # Was INVALID by early stopping alone: 100 queries where p99 needs 459 at the least.
    proc = run_cli(["--scenario", "Server", "--gpu", "cpu", "--model", "resnet18", "--image-size", "32",
                    "--dataset-count", "256", "--target-qps", "60", "--no-progress", "--output", out],
                   cache_dir, timeout=300)
    assert_finished(proc)
    result = run_result(out, "Server")
    # 60 s at 60 QPS affords the most the sizing takes: 2669 queries, p99 with 15 over the bound.
    assert result["config"]["loadgen"]["min_query_count"] == 2669
    # With 15 or fewer queries over the 15 ms bound, 2669 queries meet early stopping; a busy
    # shared host may stall more of them than that, and then the latency is the reason, not the count.
    (run_dir,) = out.glob("results/*/resnet18/Server/performance/run_1")
    over = parse_detail(run_dir / "mlperf_log_detail.txt").result["overlatency_query_count"]
    assert result["summary"]["valid"] or over > 15, (over, result["summary"])


def test_max_batch_in_singlestream(cache_dir: Path, out: Path) -> None:
    proc = run_cli(["--max-batch", "4", "--scenario", "SingleStream", "--gpu", "cpu", "--output", out], cache_dir)
    assert_one_line_error(proc, "--max-batch 4", "SingleStream", "max batch 1")


def test_max_batch_in_multistream(cache_dir: Path, out: Path) -> None:
    proc = run_cli(["--max-batch", "4", "--scenario", "MultiStream", "--gpu", "cpu", "--output", out], cache_dir)
    assert_one_line_error(proc, "--max-batch 4", "MultiStream", "max batch 8")


def test_target_qps_in_singlestream(cache_dir: Path, out: Path) -> None:
    proc = run_cli(["--target-qps", "5", "--scenario", "SingleStream", "--gpu", "cpu", "--output", out], cache_dir)
    assert_one_line_error(proc, "--target-qps", "SingleStream")


# -- results are never overwritten silently ---------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def repeated_runs(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict:
    """The same tiny run three times into one --output: plain, plain again, --overwrite."""
    output = tmp_path_factory.mktemp("repeat") / "out"
    first = run_cli([*TINY, "-q", "--output", output], cache_dir)
    after_first = snapshot(output)
    second = run_cli([*TINY, "-q", "--output", output], cache_dir)
    after_second = snapshot(output)
    third = run_cli([*TINY, "-q", "--output", output, "--overwrite"], cache_dir)
    after_third = snapshot(output)
    return {"output": output, "first": first, "second": second, "third": third,
            "after_first": after_first, "after_second": after_second, "after_third": after_third}


def test_first_run_succeeds(repeated_runs: dict) -> None:
    proc = repeated_runs["first"]
    assert_finished(proc)
    run_dir = repeated_runs["output"] / "results" / SYSTEM / "resnet18" / "Offline" / "performance" / "run_1"
    assert (run_dir / "mlperf_log_summary.txt").is_file()
    assert str(run_dir) in proc.stdout


def test_second_run_refuses_to_overwrite(repeated_runs: dict) -> None:
    line = assert_one_line_error(repeated_runs["second"], "--overwrite", "already holds a result")
    assert "run_1" in line
    assert repeated_runs["second"].returncode == 2


def test_refused_run_leaves_first_result_untouched(repeated_runs: dict) -> None:
    before, after = repeated_runs["after_first"], repeated_runs["after_second"]
    assert any(name.endswith("mlperf_log_summary.txt") for name in before)
    assert any(name.endswith("measurements.json") for name in before)
    assert after == before  # same files, same contents, same mtimes


def test_overwrite_replaces_the_result(repeated_runs: dict) -> None:
    proc = repeated_runs["third"]
    assert_finished(proc)
    before, after = repeated_runs["after_first"], repeated_runs["after_third"]
    summary = next(name for name in before if name.endswith("mlperf_log_summary.txt"))
    assert summary in after
    assert after[summary][0] != before[summary][0], "the summary should have been rewritten"


# -- help -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def help_text(cache_dir: Path) -> str:
    proc = run_cli(["--help"], cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


@pytest.mark.parametrize("default", [
    "default: Offline", "default: resnet50", "default: fp32", "default: auto", "default: quick",
    "default: performance", "default: synthetic", "default: 224", "default: seeded", "default: deepgap-results",
])
def test_help_spot_checks_defaults(help_text: str, default: str) -> None:
    assert default in " ".join(help_text.split())


def test_help_mentions_every_flags_default(help_text: str) -> None:
    from harness.cli import build_parser

    flat = " ".join(help_text.split())
    blocks: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        stripped = line.strip()
        if line.startswith("  -") and not line.startswith("   "):
            current = stripped.split()[0].rstrip(",")
            blocks[current] = ""
        elif not line.startswith(" "):
            current = None
        if current:
            blocks[current] += " " + stripped
    flags = [a.option_strings[0] for a in build_parser()._actions if a.option_strings and a.dest != "help"]
    assert flags
    for flag in flags:
        assert flag in flat, f"{flag} missing from --help"
        assert "(default:" in " ".join(blocks[flag].split()), f"{flag} shows no default: {blocks[flag]!r}"


def test_equivalent_command_parses_back_to_the_same_request() -> None:
    import shlex

    from harness.cli import build_parser, command_for, request_from_args
    from runs.config import CliRequest

    request = CliRequest(scenario="Server", model="resnet18", precision="fp16", max_batch=64, target_qps=1234.5,
                         cuda_graphs=False, channels_last=False, skip_accuracy_gate=True, calibration_seed=7,
                         output=Path("/tmp/with space"), run_profile="submission", overwrite=True,
                         int8_cpu_path="u8u8")
    line = command_for(request)
    assert line.startswith("python harness/run.py ") and "'/tmp/with space'" in line
    args = build_parser().parse_args(shlex.split(line)[2:])
    assert request_from_args(args) == request
    assert command_for(CliRequest()) == "python harness/run.py"


# -- exit codes, --json, the screen and the log file (issue 12) ------------------------------------------

NULL_RUN = ["--backend", "null", "--gpu", "cpu", "--model", "resnet18", "--image-size", "32", "--dataset-count", "64",
            "--no-progress"]
# A batch may wait 20 ms for company against Server's 15 ms bound: p99 over it, INVALID every time.
INVALID_RUN = [*NULL_RUN, "--scenario", "Server", "--target-qps", "100", "--batch-timeout-us", "20000",
               "--max-batch", "64", "--min-duration-ms", "300", "--min-query-count", "16"]


def test_an_invalid_result_exits_6_keeps_its_result_and_says_so_in_its_summary(cache_dir: Path, out: Path,
                                                                              tmp_path: Path) -> None:
    # Was exit 0: CI could not tell an INVALID run from a VALID one.
    summary = tmp_path / "summary.json"
    proc = run_cli([*INVALID_RUN, "--output", out, "--json", summary], cache_dir)
    assert proc.returncode == 6, proc.stdout + proc.stderr
    assert "result: INVALID (exit code 6; the result is kept)" in proc.stdout
    data = json.loads(summary.read_text())
    saved = json.loads(Path(data["paths"]["measurements"]).read_text())["runs"]["performance"]
    assert saved["summary"]["valid"] is False
    assert (data["schema"], data["command"], data["exit_code"], data["result"]) == \
        ("deepgap.summary/1", "run", 6, "INVALID")
    assert data["invalid_reasons"] == saved["summary"]["invalid_reasons"]
    assert data["metric"] == {"name": saved["summary"]["metric"], "value": saved["summary"]["value"]}
    assert data["latency_ms"]["p99"] == saved["summary"]["percentiles_ns"]["99.00"] / 1e6 > 15
    assert data["samples_per_s"] > 0 and Path(data["paths"]["run_dir"], "mlperf_log_summary.txt").is_file()


def test_json_to_stdout_is_all_stdout_and_the_screen_moves_to_stderr(cache_dir: Path, out: Path) -> None:
    proc = run_cli([*NULL_RUN, "--min-duration-ms", "1000", "--output", out, "--json", "-"], cache_dir)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["exit_code"] == 0 and data["result"] == "VALID" and set(data["latency_ms"]) == {"p50", "p90", "p99"}
    assert data["system"] == cpu_system("null") and data["scenario"] == "Offline"
    assert "result: VALID" in proc.stderr


def test_bad_input_with_json_writes_the_error_and_its_code(cache_dir: Path, out: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    proc = run_cli(["--gpu", "H100", "--output", out, "--json", summary], cache_dir)
    line = assert_one_line_error(proc, "--gpu H100")
    data = json.loads(summary.read_text())
    assert data["exit_code"] == proc.returncode == 2 and line.endswith(data["error"])
    assert not out.exists()


def test_json_into_a_missing_folder_is_refused_before_the_run(cache_dir: Path, out: Path, tmp_path: Path) -> None:
    proc = run_cli([*NULL_RUN, "--output", out, "--json", tmp_path / "nowhere" / "s.json"], cache_dir)
    assert_one_line_error(proc, "--json", "no such folder")
    assert not out.exists()


def test_a_normal_run_shows_its_screen_and_logs_its_details_to_a_file(cache_dir: Path, out: Path) -> None:
    # Was: INFO lines on stderr (about 45 on a first INT8 run) before the screen.
    proc = run_cli([*NULL_RUN, "--min-duration-ms", "1000", "--output", out], cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert not [line for line in proc.stderr.splitlines() if line.startswith("I ")], proc.stderr
    assert proc.stdout.splitlines()[0].startswith("deepgap ") and "result: VALID" in proc.stdout
    (run_dir,) = out.glob("results/*/resnet18/Offline/performance/run_1")
    log = (run_dir / "deepgap.log").read_text()
    assert "I runs.runner: loading resnet18 fp32 on CPU (null)" in log
    verbose = run_cli([*NULL_RUN, "--min-duration-ms", "1000", "--output", out, "--overwrite", "-v"], cache_dir)
    assert verbose.returncode == 0 and "I runs.runner: loading resnet18 fp32 on CPU (null)" in verbose.stderr


def test_a_run_leaves_no_empty_loadgen_logs(cache_dir: Path, out: Path) -> None:
    # Was: an empty mlperf_log_trace.json and a 4-byte mlperf_log_accuracy.json ("[]") in run_1/.
    assert run_cli([*NULL_RUN, "--min-duration-ms", "300", "--output", out], cache_dir).returncode in (0, 6)
    (run_dir,) = out.glob("results/*/resnet18/Offline/performance/run_1")
    assert sorted(p.name for p in run_dir.iterdir()) == ["deepgap.log", "mlperf_log_detail.txt",
                                                         "mlperf_log_summary.txt", "settings.json"]
    assert run_cli([*NULL_RUN, "--mode", "accuracy", "--output", out], cache_dir).returncode == 0
    (accuracy_dir,) = out.glob("results/*/resnet18/Offline/accuracy")
    assert (accuracy_dir / "mlperf_log_accuracy.json").stat().st_size > 4  # scored from it: always kept
    assert not (accuracy_dir / "mlperf_log_trace.json").exists()
