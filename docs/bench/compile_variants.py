"""Issue 13's open question, measured in one process: TorchInductor with freezing (deepgap's
`--compile default`) against BatchNorm folded beforehand by torch.fx and compiled without
freezing (whose AOTAutograd cache works, so a cached compile takes seconds on the CPU).

    python docs/bench/compile_variants.py resnet50 fp16 [cold|warm]

Prints, per variant: compile seconds, Inductor cache counters, relative error of the logits
against eager, and tight-loop img/s at batch 256, 64 and 1 inside one CUDA graph each (40
replays, CUDA-event timing, 3 timings). Run it twice with the same TORCHINDUCTOR_CACHE_DIR
(cold, then warm) for the cached startup.
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torchvision
from torch._dynamo.utils import counters
from torch.fx.experimental.optimization import fuse

MODEL, PRECISION = sys.argv[1], sys.argv[2]
DTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[PRECISION]
torch.backends.cudnn.benchmark = True


def build(dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, MODEL)().eval().cuda().to(dtype).to(memory_format=torch.channels_last)


def images(batch: int, dtype: torch.dtype = DTYPE) -> torch.Tensor:
    return torch.randn(batch, 224, 224, 3, device="cuda").to(dtype).permute(0, 3, 1, 2)


def rates(fn, batch: int, replays: int = 40) -> list[float]:
    x, stream = images(batch), torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn(x)
    stream.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        fn(x)
    out = []
    for _ in range(3):
        with torch.cuda.stream(stream):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            for _ in range(replays):
                graph.replay()
            end.record(stream)
        end.synchronize()
        out.append(round(batch * replays / (start.elapsed_time(end) / 1000)))
    return out


def variant(name: str) -> dict:
    torch._dynamo.reset()
    before = dict(counters["inductor"]), dict(counters["aot_autograd"])
    if name == "freezing":
        net, options = build(DTYPE), {"freezing": True}
    else:  # fold BatchNorm in fp32, then cast
        net, options = fuse(build(torch.float32)).to(DTYPE).to(memory_format=torch.channels_last), {}
    compiled = torch.compile(net)
    started = time.perf_counter()
    with torch.inference_mode(), torch._inductor.config.patch(options):
        x = images(256)
        torch._dynamo.mark_dynamic(x, 0)
        compiled(x)
        compiled(images(1))
    torch.cuda.synchronize()
    seconds = round(time.perf_counter() - started, 1)
    cache = {k: v - before[0].get(k, 0) for k, v in counters["inductor"].items() if "cache" in k}
    cache.update({f"aot_{k}": v - before[1].get(k, 0) for k, v in counters["aot_autograd"].items() if "cache" in k})
    with torch.inference_mode():
        probe = images(16, torch.float32)
        reference = build(torch.float32)(probe)
        logits = compiled(probe.to(DTYPE)).float()
        error = float((logits - reference).norm() / reference.norm())
        result = {"variant": name, "compile_s": seconds, "cache": cache, "rel_error_vs_fp32_eager": error}
        result.update({f"b{b}": rates(lambda t: compiled(t).argmax(1), b) for b in (256, 64, 1)})
    return result


if __name__ == "__main__":
    with torch.inference_mode():
        eager = build(DTYPE)
        print(json.dumps({"variant": "eager", **{f"b{b}": rates(lambda t: eager(t).argmax(1), b) for b in (256, 64, 1)}}),
              flush=True)
    for name in ("freezing", "fused-bn"):
        print(json.dumps(variant(name)), flush=True)
