"""TorchInductor compilation (sut/compiling.py) on the CPU: the cache key (an unchanged
network hits, a changed one compiles, other weights of the same network hit and still run
their own weights), the clear error of a failing compile, and the torch backend's compiled
and eager paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from plumbing.errors import BackendError
from sut.backends.base import BackendOptions, ModelSpec
from sut import compiling
from sut.backends.torch_backend import TorchBackend
from sut.compiling import CompileFailed, compile_network, inductor_cache_dir
from sut.data import SyntheticDataset


class Tiny(nn.Module):
    """Conv, BatchNorm (folded before compiling), ReLU, pooling, a linear layer: a ResNet's parts.
    16 channels: Inductor inlines (and keys by value) only 1-D constants of up to 8 elements."""

    def __init__(self, channels: int = 16, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv, self.bn, self.fc = nn.Conv2d(3, channels, 3), nn.BatchNorm2d(channels), nn.Linear(channels, 12)
        nn.init.uniform_(self.bn.running_mean, -1, 1)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty Inductor cache, and no compiled graph left in this process."""
    monkeypatch.setattr(compiling, "_USER_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    yield tmp_path / "inductor"
    torch._dynamo.reset()


def compile_tiny(net: nn.Module, size: int = 12):
    examples = [torch.randn(4, 3, size, size), torch.randn(1, 3, size, size)]
    return compile_network(torch, net, "default", "tiny fp32", examples, "tiny")


def test_unchanged_network_hits_the_cache_and_a_changed_one_compiles(fresh_cache):
    _, first = compile_tiny(Tiny())
    assert (first.cache, first.cache_misses, first.graphs) == ("miss", 2, 2)
    assert first.cache_dir == str(fresh_cache) and any(fresh_cache.iterdir())
    torch._dynamo.reset()  # as a new process: nothing compiled in memory, the disk cache kept
    _, again = compile_tiny(Tiny())
    assert (again.cache, again.cache_hits) == ("hit", 2)
    torch._dynamo.reset()
    _, wider = compile_tiny(Tiny(channels=24))
    assert wider.cache == "miss"
    torch._dynamo.reset()
    _, larger = compile_tiny(Tiny(), size=20)  # another image size traces another graph
    assert larger.cache == "miss"


def test_other_weights_reuse_the_compiled_code_and_run_their_own(fresh_cache):
    compile_tiny(Tiny(seed=0))
    torch._dynamo.reset()
    other = Tiny(seed=1)
    compiled, record = compile_tiny(other)
    assert record.cache == "hit"
    x = torch.randn(5, 3, 12, 12)
    with torch.inference_mode():
        expected, got = other(x), compiled(x)
        first_weights = Tiny(seed=0)(x)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, first_weights, atol=1e-3)


def test_a_failing_compile_is_one_clear_error(fresh_cache, monkeypatch):
    def broken(net, **kwargs):
        def run(x):
            raise RuntimeError("InductorError: out of resource: triton_mm\nsecond line")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.raises(CompileFailed) as info:
        compile_tiny(Tiny())
    message = str(info.value)
    assert isinstance(info.value, BackendError) and "\n" not in message
    for words in ("tiny fp32", "(default)", "out of resource", "--compile none"):
        assert words in message


def test_the_cache_lives_under_the_deepgap_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(compiling, "_USER_CACHE_DIR", None)
    monkeypatch.setenv("DEEPGAP_CACHE", str(tmp_path))
    # Inductor writes its /tmp default into the environment once it has looked: not a choice.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/torchinductor_someone")
    assert inductor_cache_dir() == tmp_path / "inductor"
    monkeypatch.setattr(compiling, "_USER_CACHE_DIR", str(tmp_path / "mine"))  # set before deepgap ran
    assert inductor_cache_dir() == tmp_path / "mine"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_norm_is_folded_in_fp32_and_keeps_dtype_and_layout(dtype, channels_last):
    net = Tiny().to(dtype)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    folded, count = compiling.fold_batch_norm(torch, net)
    assert count == 1 and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    weight = next(p for p in folded.parameters() if p.dim() == 4)
    assert weight.dtype == dtype and weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the original is left as it was
    x = torch.randn(2, 3, 12, 12)
    want = Tiny()(x)  # fp32, unfolded
    with torch.no_grad():
        got = folded(x.to(dtype)).float()
    assert torch.allclose(got, want, atol=1e-4 if dtype == torch.float32 else 5e-2)


def _backend(compile_mode: str) -> TorchBackend:
    backend = TorchBackend(ModelSpec("resnet18", "fp32", image_size=32),
                           BackendOptions(device="cpu", max_batch=8, compile=compile_mode))
    backend.load()
    return backend


def test_compile_none_is_the_eager_path():
    backend = _backend("none")
    try:
        assert isinstance(backend._net, nn.Module) and not hasattr(backend._net, "_orig_mod")
        assert backend.describe()["compile"] == {"compiled": False, "mode": "none"}
    finally:
        backend.close()


def test_the_compiled_backend_answers_as_the_eager_one(fresh_cache):
    samples = SyntheticDataset(count=8, image_size=32).load(np.arange(8))
    eager = _backend("none")
    compiled = _backend("default")
    try:
        info = compiled.describe()["compile"]
        assert info["compiled"] and info["mode"] == "default" and info["folded_batch_norms"] == 20
        assert info["cache"] == "miss" and info["graphs"] == 2
        want, got = eager.logits(samples), compiled.logits(samples)
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4
        for backend in (eager, compiled):
            backend.allocate_staging(8)
            backend.stage(np.arange(8), samples)
        rows = np.array([3, 1, 7], dtype=np.int64)
        assert np.array_equal(compiled.run_batch(rows).wait(), eager.run_batch(rows).wait())
    finally:
        eager.close()
        compiled.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_the_compiled_network_replays_in_the_backends_own_cuda_graphs(fresh_cache):
    """fp16 on CUDA: every bucket's graph captured around the compiled network, a batch of
    one and a padded batch answer as their logits say, and no compile happens after load."""
    from torch._dynamo.utils import counters

    samples = SyntheticDataset(count=24, image_size=64).load(np.arange(24))
    backend = TorchBackend(ModelSpec("resnet18", "fp16", image_size=64),
                           BackendOptions(device="cuda", max_batch=12, in_flight=2, compile="default"))
    backend.load()
    try:
        compiled_graphs = counters["stats"]["unique_graphs"]
        backend.allocate_staging(24)
        backend.stage(np.arange(24), samples)
        for rows in (np.array([5]), np.arange(3, 14 - 2), np.arange(12)):
            logits = backend.logits(samples[rows])
            top2 = np.sort(logits, axis=1)[:, -2:]
            clear = (top2[:, 1] - top2[:, 0]) > 1e-2 * np.abs(top2[:, 1]).clip(1e-3)  # fp16 ties may flip
            pending = backend.run_batch(rows.astype(np.int64))
            got = pending.wait().copy()
            pending.release()
            assert len(got) == len(rows) and np.array_equal(got[clear], logits.argmax(axis=1)[clear])
        assert counters["stats"]["unique_graphs"] == compiled_graphs  # nothing recompiled
        assert backend.describe()["compile"]["graphs"] == 2
    finally:
        backend.close()
