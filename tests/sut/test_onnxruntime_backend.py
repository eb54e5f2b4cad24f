"""ONNX export and the onnxruntime backend, on the CPU with a small ResNet-18 (64 px)."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

from plumbing.errors import BackendError  # noqa: E402
from sut.backends.base import BackendOptions, ModelSpec  # noqa: E402
from sut.backends.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from sut.data import SyntheticDataset  # noqa: E402
from sut.models import build_model  # noqa: E402
from sut.onnx_export import export_onnx, onnx_path  # noqa: E402

IMAGE_SIZE = 64
SAMPLES = 16


def _spec(**changes: Any) -> ModelSpec:
    fields: dict[str, Any] = dict(name="resnet18", precision="fp32", seed=3, image_size=IMAGE_SIZE)
    fields.update(changes)
    return ModelSpec(**fields)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module so the network is exported once."""
    return tmp_path_factory.mktemp("deepgap-cache")


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    return SyntheticDataset(count=SAMPLES, image_size=IMAGE_SIZE, seed=11).load(np.arange(SAMPLES))


@pytest.fixture(scope="module")
def torch_logits(samples: np.ndarray) -> np.ndarray:
    model = build_model(_spec())
    with torch.no_grad():
        return model(torch.from_numpy(samples)).numpy()


@pytest.fixture(scope="module")
def backend(cache_dir: Path, samples: np.ndarray) -> Iterator[OnnxRuntimeBackend]:
    options = BackendOptions(device="cpu", max_batch=8, threads=2, extra={"cache_dir": cache_dir})
    loaded = OnnxRuntimeBackend(_spec(), options)
    loaded.load()
    loaded.allocate_staging(SAMPLES)
    loaded.stage(np.arange(SAMPLES, dtype=np.int64), samples)
    yield loaded
    loaded.close()


def test_export_round_trip_matches_torch(
    cache_dir: Path, samples: np.ndarray, torch_logits: np.ndarray
) -> None:
    import onnxruntime as ort

    path = export_onnx(_spec(), cache_dir)
    assert path.is_file() and path.parent == cache_dir / "onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    # The batch dimension is symbolic, so any batch size runs through one file.
    assert not isinstance(session.get_inputs()[0].shape[0], int)
    for batch in (1, 5, SAMPLES):
        logits = session.run(["logits"], {"input": samples[:batch]})[0]
        reference = torch_logits[:batch]
        error = np.linalg.norm(logits - reference) / np.linalg.norm(reference)
        assert error < 1e-3
        assert np.array_equal(logits.argmax(axis=1), reference.argmax(axis=1))


def test_cache_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DEEPGAP_CACHE", str(tmp_path))
    caplog.set_level(logging.INFO, logger="sut.onnx_export")
    first = export_onnx(_spec())
    assert first.parent == tmp_path / "onnx"
    assert "exporting" in caplog.text

    def no_second_export(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("exported again despite a cached file")

    monkeypatch.setattr(torch.onnx, "export", no_second_export)
    caplog.clear()
    assert export_onnx(_spec()) == first
    assert "reusing" in caplog.text
    # Only the finished file and its sha256 are left behind: the temporary was renamed into place.
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == [first.name, first.name + ".sha256"]


def test_cache_key_follows_weights_and_size(tmp_path: Path) -> None:
    base = onnx_path(_spec(), tmp_path)
    assert onnx_path(_spec(seed=4), tmp_path) != base
    assert onnx_path(_spec(image_size=96), tmp_path) != base
    assert onnx_path(_spec(name="resnet50"), tmp_path) != base
    # Export is always fp32, so the requested precision does not fork the cache.
    assert onnx_path(_spec(precision="fp16"), tmp_path) == base

    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"first")
    from_file = onnx_path(_spec(weights=str(weights)), tmp_path)
    weights.write_bytes(b"second")
    assert onnx_path(_spec(weights=str(weights)), tmp_path) != from_file


def test_different_seed_exports_different_file(cache_dir: Path) -> None:
    first = export_onnx(_spec(), cache_dir)
    other = export_onnx(_spec(seed=4), cache_dir)
    assert other != first and other.is_file()
    assert other.read_bytes() != first.read_bytes()


def _cached_copy(cache_dir: Path, into: Path) -> Path:
    """A private cache holding the module's export of _spec() and its recorded sha256."""
    source = export_onnx(_spec(), cache_dir)
    (into / "onnx").mkdir(parents=True)
    for name in (source.name, source.name + ".sha256"):
        if (source.parent / name).exists():
            shutil.copy2(source.parent / name, into / "onnx" / name)
    return into / "onnx" / source.name


@pytest.mark.parametrize("damage", ["truncated", "another_model", "no_record"])
def test_a_damaged_or_replaced_export_is_rebuilt(
    cache_dir: Path, tmp_path: Path, samples: np.ndarray, torch_logits: np.ndarray,
    caplog: pytest.LogCaptureFixture, damage: str,
) -> None:
    """A cached export is trusted for its recorded sha256, not for existing: truncated it
    used to fail every run (INVALID_PROTOBUF); replaced by another network, runs 'agreed'
    0% with FP32 and exited 0."""
    target = _cached_copy(cache_dir, tmp_path)
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 3])
    elif damage == "another_model":
        shutil.copyfile(export_onnx(_spec(seed=4), cache_dir), target)
    else:  # written by a deepgap that recorded no sha256
        (target.parent / (target.name + ".sha256")).unlink(missing_ok=True)
    caplog.set_level(logging.INFO, logger="sut.onnx_export")
    backend = OnnxRuntimeBackend(_spec(), BackendOptions(device="cpu", max_batch=8, threads=2,
                                                         extra={"cache_dir": tmp_path}))
    backend.load()
    try:
        backend.allocate_staging(SAMPLES)
        backend.stage(np.arange(SAMPLES, dtype=np.int64), samples)
        top1 = backend.run_batch(np.arange(SAMPLES, dtype=np.int64)).wait()
    finally:
        backend.close()
    assert np.array_equal(top1, torch_logits.argmax(axis=1))
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(target) in warning and "exporting it again" in warning
    assert "\n" not in warning


def test_a_damaged_export_that_cannot_be_rebuilt_says_what_to_delete(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    target = _cached_copy(cache_dir, tmp_path)
    target.write_bytes(b"truncated")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(BackendError) as info:
        export_onnx(_spec(), tmp_path)
    message = str(info.value)
    assert "pip install onnx" in message and f"delete the damaged {target}" in message and "\n" not in message


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_export_files_follow_the_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: int) -> None:
    import sut.onnx_export

    monkeypatch.setattr(sut.onnx_export, "_export_to", lambda spec, path: Path(path).write_bytes(b"graph"))
    old = os.umask(umask)
    try:
        path = export_onnx(_spec(), tmp_path)
    finally:
        os.umask(old)
    for written in (path, path.parent / (path.name + ".sha256")):
        assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~umask, written


def test_failed_export_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_export(*args: Any, **kwargs: Any) -> None:
        Path(args[2]).write_bytes(b"partial")
        raise RuntimeError("exporter exploded\nwith details")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(BackendError, match="exporter exploded"):
        export_onnx(_spec(), tmp_path)
    assert list((tmp_path / "onnx").iterdir()) == []


def test_backend_matches_torch_top1(
    backend: OnnxRuntimeBackend, torch_logits: np.ndarray
) -> None:
    rows = np.arange(SAMPLES, dtype=np.int64)
    pending = backend.run_batch(rows)
    top1 = pending.wait()
    pending.release()
    assert top1.dtype == np.int32 and top1.shape == (SAMPLES,)
    assert np.array_equal(top1, torch_logits.argmax(axis=1))


def test_run_batch_any_row_order(backend: OnnxRuntimeBackend) -> None:
    everything = backend.run_batch(np.arange(SAMPLES, dtype=np.int64)).wait()
    rows = np.array([7, 0, 15, 3, 3, 9], dtype=np.int64)
    assert np.array_equal(backend.run_batch(rows).wait(), everything[rows])
    assert backend.run_batch(np.array([], dtype=np.int64)).wait().shape == (0,)


def test_tight_loop_times_runs(backend: OnnxRuntimeBackend) -> None:
    seconds = backend.time_tight_loop(batch_size=4, iterations=3)
    assert seconds > 0
    # A batch larger than the staged set repeats staged rows (as LoadGen's Offline query
    # does on a small dataset) instead of failing the warm-up.
    assert backend.time_tight_loop(batch_size=SAMPLES + 1, iterations=1) > 0
    with pytest.raises(BackendError, match="tight loop batch size"):
        backend.time_tight_loop(batch_size=0, iterations=1)


def test_describe(backend: OnnxRuntimeBackend, cache_dir: Path) -> None:
    import onnxruntime as ort

    info = backend.describe()
    assert info["backend"] == "onnxruntime"
    assert info["onnxruntime_version"] == ort.__version__
    assert info["providers"] == ["CPUExecutionProvider"]
    assert info["model_path"] == str(export_onnx(_spec(), cache_dir))
    assert info["precision"] == "fp32"
    assert info["device"] == "cpu"
    assert info["threads"] == 2
    assert info["threads_source"] == "--threads"


@pytest.mark.parametrize("precision", ["fp16", "bf16", "int8"])
def test_other_precisions_are_refused(precision: str, tmp_path: Path) -> None:
    backend = OnnxRuntimeBackend(
        _spec(precision=precision), BackendOptions(extra={"cache_dir": tmp_path})
    )
    expected = "needs a calibration cache" if precision == "int8" else "runs fp32 and int8"
    with pytest.raises(BackendError, match=expected) as caught:
        backend.load()
    if precision != "int8":
        assert "--backend torch" in str(caught.value)
    assert "\n" not in str(caught.value)
    # Refused before any export work.
    assert not (tmp_path / "onnx").exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_provider_is_refused(
    device: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    backend = OnnxRuntimeBackend(
        _spec(), BackendOptions(device=device, extra={"cache_dir": tmp_path})
    )
    with pytest.raises(BackendError, match="onnxruntime-gpu is not installed") as caught:
        backend.load()
    assert "CPUExecutionProvider" in str(caught.value)


def test_missing_onnxruntime_is_a_backend_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes the import fail
    backend = OnnxRuntimeBackend(_spec(), BackendOptions(extra={"cache_dir": tmp_path}))
    with pytest.raises(BackendError, match="pip install onnxruntime"):
        backend.load()


def test_unloaded_backend_and_close_twice(tmp_path: Path) -> None:
    backend = OnnxRuntimeBackend(_spec(), BackendOptions(extra={"cache_dir": tmp_path}))
    backend.allocate_staging(2)
    with pytest.raises(BackendError, match="not loaded"):
        backend.run_batch(np.arange(2, dtype=np.int64))
    backend.close()
    backend.close()


@pytest.fixture(scope="module")
def calibration_cache(cache_dir: Path) -> Any:
    from calibration.api import calibrate

    return calibrate(_spec(), "synthetic", count=SAMPLES, algorithm="max", cache_dir=cache_dir).cache


@pytest.mark.parametrize("encoding", [None, "uint8", "int8"])
def test_int8_graph_encoding_follows_the_option(
    encoding: str | None, cache_dir: Path, calibration_cache: Any, samples: np.ndarray
) -> None:
    extra: dict[str, Any] = {"cache_dir": cache_dir, "calibration": calibration_cache}
    if encoding is not None:
        extra["int8_encoding"] = encoding
    backend = OnnxRuntimeBackend(_spec(precision="int8"), BackendOptions(device="cpu", max_batch=4, extra=extra))
    backend.load()
    try:
        expected = encoding or "uint8"  # ONNX Runtime's fast path unless asked otherwise
        info = backend.describe()
        assert f"-int8-{expected}-" in Path(info["model_path"]).name
        assert f"{expected} activations" in info["model_format"]
        assert info["calibration_hash"] == calibration_cache.cache_hash
        logits = backend.logits(samples[:4])
        assert logits.shape == (4, 1000) and np.isfinite(logits).all()
    finally:
        backend.close()


def test_unknown_int8_encoding_is_refused(tmp_path: Path) -> None:
    extra = {"cache_dir": tmp_path, "calibration": object(), "int8_encoding": "int4"}
    backend = OnnxRuntimeBackend(_spec(precision="int8"), BackendOptions(extra=extra))
    with pytest.raises(BackendError, match="'int4' is not one of int8, uint8"):
        backend.load()
    assert not (tmp_path / "onnx").exists()


@pytest.mark.parametrize("cpu_path", ["reduce-range", "u8u8", "vnni"])
def test_forced_int8_cpu_path_shapes_the_graph_and_is_recorded(
    cpu_path: str, cache_dir: Path, calibration_cache: Any, samples: np.ndarray
) -> None:
    """Each path forced, on any CPU: its weight range in the graph, its session option in
    the session, and both with the CPU's ISA in describe() (so in measurements.json)."""
    from sut.cpu_isa import X64_QUANT_PRECISION, detect_cpu_isa

    if cpu_path == "u8u8" and not detect_cpu_isa().is_x86:
        pytest.skip("u8u8 is an x86 path")
    extra = {"cache_dir": cache_dir, "calibration": calibration_cache, "int8_cpu_path": cpu_path}
    backend = OnnxRuntimeBackend(_spec(precision="int8"), BackendOptions(device="cpu", max_batch=4, extra=extra))
    backend.load()
    try:
        info = backend.describe()
        recorded = info["int8_cpu_path"]
        assert (recorded["name"], recorded["requested"]) == (cpu_path, cpu_path)
        assert "forced" in recorded["reason"] and info["cpu_isa"] == detect_cpu_isa().to_json()
        reduced = cpu_path == "reduce-range"
        assert ("-w63-" in Path(info["model_path"]).name) is reduced
        assert ("[-63, 63]" if reduced else "[-127, 127]") in info["model_format"]
        options = backend._session.get_session_options()
        try:
            entry = options.get_session_config_entry(X64_QUANT_PRECISION)
        except RuntimeError:  # onnxruntime's answer for an entry never set
            entry = None
        assert (entry == "1") is (cpu_path == "u8u8")
        assert np.isfinite(backend.logits(samples[:2])).all()
    finally:
        backend.close()


def test_auto_int8_cpu_path_is_this_cpus_and_says_why(cache_dir: Path, calibration_cache: Any) -> None:
    """What auto resolves to depends on the CPU (test_cpu_isa.py covers each kind); here
    only that the record names this CPU's choice and its reason."""
    from sut.cpu_isa import AUTO, choose_int8_cpu_path, detect_cpu_isa

    extra = {"cache_dir": cache_dir, "calibration": calibration_cache}
    backend = OnnxRuntimeBackend(_spec(precision="int8"), BackendOptions(device="cpu", max_batch=2, extra=extra))
    backend.load()
    backend.close()
    recorded = backend.describe()["int8_cpu_path"]
    expected = choose_int8_cpu_path(AUTO, detect_cpu_isa())
    assert recorded == {**expected.to_json(), "requested": AUTO}
    assert recorded["reason"] and recorded["exact"] is not False


def test_fp32_on_the_cpu_records_the_isa_but_no_int8_path(cache_dir: Path) -> None:
    backend = OnnxRuntimeBackend(_spec(), BackendOptions(device="cpu", max_batch=1, extra={"cache_dir": cache_dir}))
    backend.load()
    backend.close()
    info = backend.describe()
    assert info["cpu_isa"]["source"].startswith("CPUID") and info["int8_cpu_path"] is None


@pytest.mark.parametrize("precision, cpu_path, message", [
    ("int8", "int7", "unknown int8_cpu_path 'int7'"),
    ("fp32", "reduce-range", "applies to int8 on the CPU, not fp32 on cpu"),
])
def test_bad_int8_cpu_path_is_refused_before_any_export(
    tmp_path: Path, precision: str, cpu_path: str, message: str
) -> None:
    extra = {"cache_dir": tmp_path, "calibration": object(), "int8_cpu_path": cpu_path}
    backend = OnnxRuntimeBackend(_spec(precision=precision), BackendOptions(device="cpu", extra=extra))
    with pytest.raises(BackendError, match=message):
        backend.load()
    assert not (tmp_path / "onnx").exists()


def test_thread_count_is_always_set_so_onnxruntime_does_not_pin(cache_dir: Path, samples: np.ndarray,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Left at 0 ONNX Runtime pins its threads to cores, which made a 2-core host's batch
    of one take twice as long one time in ten: the count is set even without --threads."""
    import sut.backends.onnxruntime_backend as module

    monkeypatch.setattr(module, "physical_cores", lambda: 1)
    backend = OnnxRuntimeBackend(_spec(), BackendOptions(device="cpu", max_batch=2, extra={"cache_dir": cache_dir}))
    backend.load()
    try:
        assert backend._session.get_session_options().intra_op_num_threads == 1
        info = backend.describe()
        assert (info["threads"], info["threads_source"]) == (1, "physical cores (unpinned)")
    finally:
        backend.close()
