"""TorchInductor compilation of a network, cached on disk across runs and processes.

One place for what `--compile` means. `default` folds each BatchNorm into the convolution
before it (torch.fx, in fp32, then cast back) and compiles the result in Inductor's default
mode, which fuses the bias, residual add and ReLU after each convolution into one kernel
(1.70x eager's LoadGen Offline throughput for resnet50 fp16 on an H200, BENCHMARKS.md).
`max-autotune` adds Inductor's kernel benchmarking: minutes the first time. Neither uses
Inductor's own CUDA graphs: the torch backend captures its own graph per batch bucket
around the compiled module, with its gather and arg-max inside, and several slots in flight.

Why folding and not Inductor's freezing, which folds BatchNorm too: the two ran at the same
speed on the H200 (resnet50 fp16, batch 256, 64 and 1, within 1%), but freezing bypasses
AOTAutograd's cache by torch's design, so a cached compile still traced the network and ran
the freezing passes (24 s), while the folded network without freezing is cached whole
(1.6 s; docs/bench/compile_variants.py, BENCHMARKS.md). The weights stay inputs of the
compiled graph, so another set of weights of the same network reuses the compiled code and
runs its own weights (tests/sut/test_compiling.py).

Shapes: the batch dimension is compiled dynamic, so one graph serves every bucket from 2
to the max batch, and batch 1 (which Dynamo always specialises) gets a second graph. A
run therefore compiles at most twice whatever its bucket set, and a sweep's group once.

Cache: Inductor's FX graph and AOTAutograd caches (and Triton's kernel cache beneath them),
in `$DEEPGAP_CACHE/inductor` unless TORCHINDUCTOR_CACHE_DIR is set. Their key covers the
torch, Triton and CUDA versions, the GPU, the traced graph (model, precision, image size,
layout), the weights' shapes and dtypes, and the Inductor options.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from plumbing.errors import BackendError, first_line
from plumbing.files import write_atomic
from sut.onnx_export import cache_root

log = logging.getLogger(__name__)

COMPILE_MODES = ("none", "default", "max-autotune")
# Inductor options per mode, set as Inductor's global config while the graphs are traced
# and compiled (Dynamo reads some options from the global config only, not from
# torch.compile's `options`). Inductor's "max-autotune" mode would also turn on its own CUDA
# graphs; ours wrap the module.
INDUCTOR_OPTIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "max-autotune": {"max_autotune": True, "coordinate_descent_tuning": True},
}
_TIMES_FILE = "deepgap-compile-times.json"
# The user's own setting, read before anything runs Inductor: Inductor writes its /tmp
# default into the environment the first time it looks (the gate's compile, say), and that
# must not be taken for the user's choice.
_USER_CACHE_DIR = os.environ.get("TORCHINDUCTOR_CACHE_DIR")


class CompileFailed(BackendError):
    """torch.compile could not compile (or run) the network."""


@dataclass(frozen=True)
class CompileRecord:
    """What was compiled and how long it took, for describe() and measurements.json."""

    mode: str
    seconds: float
    graphs: int  # compiled graphs: the dynamic batch graph and the batch-1 graph
    folded_batch_norms: int  # BatchNorm layers folded into their convolutions before compiling
    cache_hits: int  # Inductor FX graph cache
    cache_misses: int
    cache_bypasses: int
    cache_dir: str
    options: dict[str, Any]

    @property
    def cache(self) -> str:
        """'hit' (every graph came from the cache), 'miss' (none did) or 'partial'."""
        if self.cache_hits and not (self.cache_misses or self.cache_bypasses):
            return "hit"
        return "partial" if self.cache_hits else "miss"

    def to_json(self) -> dict[str, Any]:
        return {"compiled": True, **asdict(self), "cache": self.cache}


def eager_record() -> dict[str, Any]:
    return {"compiled": False, "mode": "none"}


def inductor_cache_dir() -> Path:
    """Inductor's cache folder: TORCHINDUCTOR_CACHE_DIR where the user set it, else under
    the deepgap cache (Inductor's own default is a folder in /tmp)."""
    return Path(_USER_CACHE_DIR) if _USER_CACHE_DIR else cache_root() / "inductor"


@contextlib.contextmanager
def _cache_env(path: Path) -> Iterator[None]:
    """TORCHINDUCTOR_CACHE_DIR=path while the graphs compile (Inductor reads it then), and
    as it was afterwards."""
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = before


def compile_network(torch: Any, net: Any, mode: str, label: str, examples: Sequence[Any],
                    estimate_key: str) -> tuple[Callable[..., Any], CompileRecord]:
    """`net` compiled in `mode` and run once on each of `examples` (one input per graph, laid out
    as the run will pass them: the first sizes the dynamic batch graph, a batch of one the
    specialised graph), so every graph exists before any CUDA graph is captured.
    `label` names the network in messages ('resnet50 fp16'); `estimate_key` keys the
    first-compile time this machine measured last, which the log line quotes."""
    if mode not in INDUCTOR_OPTIONS:
        raise CompileFailed(f"unknown compile mode {mode!r}; choose from {', '.join(COMPILE_MODES)}")
    cache_dir = inductor_cache_dir()
    from torch._dynamo.utils import counters

    options = dict(INDUCTOR_OPTIONS[mode])
    before = dict(counters["inductor"])
    if mode == "max-autotune":
        log.warning("--compile max-autotune benchmarks Inductor's kernel choices: expect several minutes "
                    "the first time (and Triton 'out of resource' lines for choices it skips)")
    log.info("compiling %s with TorchInductor (%s mode) for %s: %s the first time, less once cached "
             "in %s", label, mode, _shapes(examples), _first_time(cache_dir, estimate_key, mode), cache_dir)
    started = time.perf_counter()
    try:
        folded, folds = fold_batch_norm(torch, net)
        compiled = torch.compile(folded)
        # Past Dynamo's recompile limit the network would run eagerly, silently; raise instead.
        with _cache_env(cache_dir), torch.inference_mode(), torch._inductor.config.patch(options), \
                torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
            for index, example in enumerate(examples):
                if index == 0 and example.shape[0] > 1:
                    torch._dynamo.mark_dynamic(example, 0)
                compiled(example)
        if examples and examples[0].is_cuda:
            torch.cuda.synchronize(examples[0].device)
    except Exception as exc:  # Dynamo, Inductor and Triton raise many types; all end the same way
        raise CompileFailed(f"torch.compile ({mode}) failed for {label}: {type(exc).__name__}: {first_line(exc)[:300]}; "
                            "--compile none runs it eagerly") from exc
    seconds = time.perf_counter() - started
    after = counters["inductor"]
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in ("fxgraph_cache_hit", "fxgraph_cache_miss",
                                                           "fxgraph_cache_bypass")}
    record = CompileRecord(mode=mode, seconds=round(seconds, 2), graphs=len(examples), folded_batch_norms=folds,
                           cache_hits=delta["fxgraph_cache_hit"], cache_misses=delta["fxgraph_cache_miss"],
                           cache_bypasses=delta["fxgraph_cache_bypass"], cache_dir=str(cache_dir),
                           options=options)
    if record.cache != "hit":
        _remember(cache_dir, estimate_key, mode, seconds)
    log.info("compiled %s in %.1f s (Inductor cache: %s, %d hit(s), %d miss(es))", label, seconds,
             record.cache, record.cache_hits, record.cache_misses + record.cache_bypasses)
    return compiled, record


def fold_batch_norm(torch: Any, net: Any) -> tuple[Any, int]:
    """A copy of `net` with each eval-mode BatchNorm folded into the convolution before it,
    computed in fp32 and cast back to the network's dtype and memory format (folding in fp16
    would round the scale 1/sqrt(var + eps) before it multiplies the weights), and how many
    were folded. Raises what
    torch.fx raises for a network it cannot trace; the caller turns that into CompileFailed."""
    import copy

    from torch.fx.experimental.optimization import fuse

    weights = [p for p in net.parameters() if p.dim() == 4]
    dtype = (weights or list(net.parameters()))[0].dtype
    channels_last = bool(weights) and weights[0].is_contiguous(memory_format=torch.channels_last) \
        and not weights[0].is_contiguous()
    folded = fuse(copy.deepcopy(net).float(), inplace=True).to(dtype)
    if channels_last:
        folded = folded.to(memory_format=torch.channels_last)
    return folded, _batch_norms(torch, net) - _batch_norms(torch, folded)


def _batch_norms(torch: Any, net: Any) -> int:
    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


def release_compiled(torch: Any) -> None:
    """Drop every compiled graph of this process. Dynamo keeps them on the network class's
    code, guarded by the weights' identity, each holding its folded weights on the device:
    without this, every closed backend's graphs stay (GPU memory) and a sweep's later groups
    reach Dynamo's recompile limit. The harness runs one compiled backend at a time."""
    torch._dynamo.reset()


def _shapes(examples: Sequence[Any]) -> str:
    sizes = sorted({int(e.shape[0]) for e in examples})
    parts = ["batch 1" if s == 1 else f"batches 2..max (one dynamic graph, traced at {s})" for s in sizes]
    return " and ".join(parts)


def _first_time(cache_dir: Path, key: str, mode: str) -> str:
    seen = _times(cache_dir).get(f"{key}|{mode}")
    if seen is not None:
        return f"about {seen:.0f} s (measured here)"
    return "several minutes" if mode == "max-autotune" else "up to a minute"


def _times(cache_dir: Path) -> dict[str, float]:
    try:
        data = json.loads((cache_dir / _TIMES_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}


def _remember(cache_dir: Path, key: str, mode: str, seconds: float) -> None:
    """Best effort: the estimate is a courtesy, never a reason to fail a run."""
    times = _times(cache_dir)
    times[f"{key}|{mode}"] = round(seconds, 1)
    with contextlib.suppress(OSError):
        write_atomic(cache_dir / _TIMES_FILE, json.dumps(times, indent=1, sort_keys=True))
