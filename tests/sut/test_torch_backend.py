"""TorchBackend on the CPU everywhere, and on CUDA where a GPU is visible (the GPU
machine runs these; CI skips them with the reason)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plumbing.errors import BackendError, DeviceError
from sut.backends.base import BackendOptions, ModelSpec, staged_rows, tight_loop_rows
from sut.backends.cuda_slots import batch_buckets
from sut.backends.torch_backend import TorchBackend
from sut.data import SyntheticDataset

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
COUNT = 48


def make_backend(precision="fp32", device="cpu", image_size=32, **options) -> TorchBackend:
    defaults = dict(device=device, max_batch=16, in_flight=3)
    defaults.update(options)
    backend = TorchBackend(ModelSpec("resnet18", precision, image_size=image_size), BackendOptions(**defaults))
    backend.load()
    backend.allocate_staging(COUNT)
    dataset = SyntheticDataset(count=COUNT, image_size=image_size)
    backend.stage(np.arange(COUNT), dataset.load(np.arange(COUNT)))
    return backend


def answers(backend: TorchBackend, rows: np.ndarray) -> np.ndarray:
    pending = backend.run_batch(rows)
    try:
        return pending.wait().copy()
    finally:
        pending.release()


def test_batch_buckets_cover_every_size_with_little_padding():
    assert batch_buckets(1) == [1]
    assert batch_buckets(8) == [1, 2, 4, 8]
    assert batch_buckets(48) == [1, 2, 4, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48]
    assert batch_buckets(256)[-5:] == [128, 160, 192, 224, 256]
    for max_batch in (1, 7, 48, 100, 256, 2048):
        buckets = batch_buckets(max_batch)
        assert buckets == sorted(set(buckets)) and buckets[-1] == max_batch
        for size in range(9, max_batch + 1):
            bucket = next(b for b in buckets if b >= size)
            assert (bucket - size) / bucket <= 0.2, (max_batch, size, bucket)


def test_cpu_answers_do_not_depend_on_batch_composition():
    backend = make_backend()
    single = np.array([answers(backend, np.array([i]))[0] for i in range(COUNT)])
    shuffled = np.random.default_rng(0).permutation(COUNT)[:16]
    assert np.array_equal(answers(backend, shuffled), single[shuffled])
    assert len(set(single.tolist())) > 3, "seeded network should not answer one class for everything"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda)])
@pytest.mark.parametrize("bad", [-1, COUNT])
def test_rows_outside_the_staged_set_fail_the_batch_not_the_device(device, bad):
    """An unstaged sample (row -1) or a row past the staging buffer must be a BackendError:
    inside a CUDA graph the gather would read out of bounds and kill the CUDA context."""
    backend = make_backend(device=device)
    with pytest.raises(BackendError, match="outside the 48 staged samples"):
        backend.run_batch(np.array([0, bad, 3]))
    assert answers(backend, np.array([1, 2])).shape == (2,)  # the backend still works


def test_tight_loop_rows_wrap_round_a_staged_set_smaller_than_the_batch():
    assert tight_loop_rows(4, 48).tolist() == [0, 1, 2, 3]
    assert tight_loop_rows(7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert tight_loop_rows(16, 3, max_batch=16).max() == 2
    for batch, staged, limit in ((0, 3, None), (17, 3, 16)):
        with pytest.raises(BackendError, match="tight loop batch size"):
            tight_loop_rows(batch, staged, limit)
    with pytest.raises(BackendError, match="no staged samples"):
        tight_loop_rows(4, 0)


STAGINGS = [pytest.param("cpu", "device", id="cpu"),
            pytest.param("cuda", "device", marks=cuda, id="cuda-device"),
            pytest.param("cuda", "host", marks=cuda, id="cuda-host")]


@pytest.mark.parametrize("device, staging", STAGINGS)
def test_tight_loop_of_a_batch_larger_than_the_staged_set_runs_full_batches(device, staging, monkeypatch):
    """An Offline run on a dataset smaller than its max batch (96 images, batch 256 on the
    H200) timed rows 0..255 of a 96-row buffer: a device-side assert on CUDA, a copy error
    with host staging, and on the CPU a silently smaller batch. The loop must run whole
    batches of staged rows, and the backend must answer correctly afterwards."""
    backend = TorchBackend(ModelSpec("resnet18", "fp32", image_size=32),
                           BackendOptions(device=device, max_batch=16, in_flight=2, staging=staging))
    backend.load()
    backend.allocate_staging(3)
    samples = SyntheticDataset(count=3, image_size=32).load(np.arange(3))
    backend.stage(np.arange(3), samples)
    before = answers(backend, np.array([0, 1, 2]))
    if device == "cpu":
        sizes: list[int] = []
        infer = backend._infer
        monkeypatch.setattr(backend, "_infer", lambda nhwc: (sizes.append(nhwc.shape[0]), infer(nhwc))[1])
        assert backend.time_tight_loop(16, 2) > 0
        assert sizes == [16, 16, 16]  # one warm-up batch, then the timed ones
    else:
        assert backend.time_tight_loop(16, 2) > 0
        torch.cuda.synchronize()
    # The padding of a later, smaller batch reuses the loop's rows: they must be in range.
    assert np.array_equal(answers(backend, np.array([2, 0, 1])), before[[2, 0, 1]])
    assert np.array_equal(answers(backend, np.array([1, 0, 2, 2, 1, 0, 1, 2, 0, 1, 1])),
                          before[[1, 0, 2, 2, 1, 0, 1, 2, 0, 1, 1]])
    backend.close()


def test_staged_rows_accepts_rows_inside_the_buffer_only():
    assert staged_rows(np.array([0, 47]), 48).dtype == np.int64
    assert staged_rows(np.array([], dtype=np.int64), 0).size == 0
    for bad in ([-1], [48]):
        with pytest.raises(BackendError, match="outside the 48 staged samples"):
            staged_rows(np.array(bad), 48)


def test_reduced_precision_on_cpu_is_a_clear_error():
    backend = TorchBackend(ModelSpec("resnet18", "fp16", image_size=32), BackendOptions(device="cpu"))
    with pytest.raises(DeviceError, match="CUDA GPUs only"):
        backend.load()


def test_int8_is_refused_by_torch_backend():
    backend = TorchBackend(ModelSpec("resnet18", "int8", image_size=32), BackendOptions(device="cpu"))
    with pytest.raises(BackendError, match="fp32, fp16 and bf16"):
        backend.load()


def test_cuda_requested_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    backend = TorchBackend(ModelSpec("resnet18", "fp32", image_size=32), BackendOptions(device="cuda"))
    with pytest.raises(DeviceError, match="no CUDA device"):
        backend.load()


def test_tight_loop_and_describe_on_cpu():
    backend = make_backend()
    assert backend.time_tight_loop(4, 2) > 0
    info = backend.describe()
    assert info["backend"] == "torch" and info["precision"] == "fp32" and "seeded" in info["weights"]


@cuda
def test_cuda_graphs_match_eager_and_every_bucket_pads_correctly():
    graphs = make_backend(device="cuda")
    eager = make_backend(device="cuda", cuda_graphs=False)
    per_sample = np.array([answers(eager, np.array([i]))[0] for i in range(COUNT)])
    for size in range(1, 17):
        rows = np.arange(size)[::-1] + 3
        assert np.array_equal(answers(graphs, rows), per_sample[rows]), size


@cuda
def test_cuda_agrees_with_cpu_fp32():
    cpu = make_backend()
    gpu = make_backend(device="cuda")
    rows = np.arange(16)
    agreement = np.mean(answers(cpu, rows) == answers(gpu, rows))
    assert agreement >= 0.9  # TF32 convolutions may flip near-ties


@cuda
def test_cuda_batches_in_flight_keep_their_own_results():
    backend = make_backend(device="cuda", in_flight=3)
    reference = np.array([answers(backend, np.array([i]))[0] for i in range(COUNT)])
    batches = [np.arange(k, k + 16) for k in range(0, 32, 8)]
    pendings = [backend.run_batch(b) for b in batches[:3]]  # three slots busy at once
    for rows, pending in zip(batches, pendings):
        assert np.array_equal(pending.wait(), reference[rows])
        pending.release()


@cuda
def test_host_staging_matches_device_staging():
    device = make_backend(device="cuda")
    host = make_backend(device="cuda", staging="host")
    rows = np.array([5, 1, 40, 7, 7, 22])
    assert np.array_equal(answers(device, rows), answers(host, rows))


@cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_on_cuda_mostly_agrees_with_fp32(precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("GPU lacks bf16")
    fp32 = make_backend(device="cuda", image_size=64)
    low = make_backend(precision, device="cuda", image_size=64)
    rows = np.arange(COUNT)
    assert np.mean(answers(fp32, rows[:16]) == answers(low, rows[:16])) >= 0.75
    assert low.describe()["precision"] == precision
