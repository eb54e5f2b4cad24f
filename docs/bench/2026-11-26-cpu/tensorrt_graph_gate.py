"""Accuracy-gate figures of both INT8 encodings, run by ONNX Runtime on the CPU.

TensorRT cannot be installed here, so the graph the TensorRT backend would build from
(every activation int8, zero point 0) is checked by running it in ONNX Runtime, next to
ONNX Runtime's own uint8 graph: same placement, same calibration, same digits stand-in
and check images as the run's gate.

    PYTHONPATH=. python docs/bench/2026-11-26-cpu/tensorrt_graph_gate.py [MODEL ...] > gate.md
"""

from __future__ import annotations

import logging
import sys

from harness.config import CliRequest, resolve
from harness.gating import run_gate
from sut.backends.base import BackendOptions
from sut.onnx_precision import INT8_ENCODINGS


def main(models: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING)
    print("| model | encoding | top-1 | FP32 top-1 | agreement | cosine | rel. error | verdict |")
    print("|---|---|---|---|---|---|---|---|")
    for model in models:
        config = resolve(CliRequest(model=model, precision="int8", gpu="cpu", backend="onnxruntime"))
        for encoding in INT8_ENCODINGS:
            options = BackendOptions(device="cpu", extra={"int8_encoding": encoding})
            verdict = run_gate(config, options)
            f = verdict.figures
            print(f"| {model} | {encoding} | {100 * f.top1:.1f}% | {100 * f.reference_top1:.1f}% | "
                  f"{100 * f.agreement:.1f}% | {f.cosine:.5f} | {f.relative_error:.3f} | "
                  f"{'PASS' if verdict.passed else 'FAIL'} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["resnet18", "resnet50", "resnet101"])
