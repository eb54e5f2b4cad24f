"""ONNX Runtime backend: the torchvision network exported to ONNX, run by an InferenceSession.

Inputs are staged in a host numpy array; ONNX Runtime copies each batch to the device
itself, so batches run synchronously and `run_batch` returns a finished `DonePending`.
It runs fp32 and int8 (the explicit Q/DQ graph from `calibration/` scales); fp16/bf16
belong to the torch backend. `extra["int8_encoding"]` picks the int8 graph's encoding
(default uint8, ONNX Runtime's fast path; "int8" is TensorRT's encoding, run here to check
its accuracy where TensorRT is missing, in ONNX Runtime's placement: TensorRT's own graph
also leaves each residual Conv->Add input unquantized, sut/qdq_placement.py). On the CPU, `extra["int8_cpu_path"]`
(default auto) picks how the int8 graph stays exact on this CPU's integer kernels: its
weight range and session options (sut/cpu_isa.py); describe() records the CPU's ISA, the
path and why.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from plumbing.errors import BackendError, first_line
from sut.backends.base import Backend, BackendOptions, DonePending, ModelSpec, tight_loop_rows
from sut.onnx_export import INPUT_NAME, OPSET_VERSION, OUTPUT_NAME, export_onnx
from sut.cpu_cores import physical_cores
from sut.cpu_isa import AUTO, INT8_CPU_PATHS, INT8_MAX, CpuIsa, Int8CpuPath, choose_int8_cpu_path, detect_cpu_isa
from sut.onnx_precision import INT8_ENCODINGS, SIGNED, UNSIGNED, precision_graph, weight_range

log = logging.getLogger(__name__)

_CPU_PROVIDER = "CPUExecutionProvider"
_CUDA_PROVIDER = "CUDAExecutionProvider"


class OnnxRuntimeBackend(Backend):
    name: ClassVar[str] = "onnxruntime"

    def __init__(self, model: ModelSpec, options: BackendOptions) -> None:
        super().__init__(model, options)
        self._session: Any = None  # onnxruntime.InferenceSession once loaded
        self._staging: np.ndarray | None = None
        self._model_path: Path | None = None
        self._ort_version: str | None = None
        self._requested_providers: list[str] = []
        # Kept apart from the session so describe() still answers after close().
        self._session_providers: list[str] | None = None
        self._intra_op_threads: int | None = None
        self._calibration_hash: str | None = None
        self._int8_encoding: str = str(options.extra.get("int8_encoding", UNSIGNED))
        self._int8_cpu_request: str = str(options.extra.get("int8_cpu_path", AUTO))
        self._cpu_isa: CpuIsa | None = None
        self._int8_cpu_path: Int8CpuPath | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def load(self) -> None:
        if self.model.precision not in ("fp32", "int8"):
            raise BackendError(
                f"onnxruntime backend runs fp32 and int8, not {self.model.precision}; "
                "use --backend torch for fp16/bf16"
            )
        calibration = self.options.extra.get("calibration")
        if self.model.precision == "int8" and calibration is None:
            raise BackendError("onnxruntime int8 needs a calibration cache (the runner calibrates first)")
        if self._int8_encoding not in INT8_ENCODINGS:
            raise BackendError(
                f"onnxruntime int8_encoding {self._int8_encoding!r} is not one of {', '.join(INT8_ENCODINGS)}"
            )
        self._choose_int8_cpu_path()
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError("onnxruntime is not installed: pip install onnxruntime") from exc
        self._ort_version = ort.__version__

        providers = self._providers_for_device(ort)
        self._requested_providers = [p if isinstance(p, str) else p[0] for p in providers]

        path = self._int8_cpu_path
        cache_dir = self.options.extra.get("cache_dir")
        # int8 runs the explicit Q/DQ graph made from calibration/ scales, with TensorRT's
        # placement and ranges, by default in uint8 so ONNX Runtime fuses integer kernels.
        self._model_path = precision_graph(
            self.model.precision, export_onnx(self.model, cache_dir), calibration, self._int8_encoding,
            path.weight_max if path is not None else INT8_MAX,
        )
        self._calibration_hash = getattr(calibration, "cache_hash", None)

        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        for key, value in (path.session_config if path is not None else {}).items():
            session_options.add_session_config_entry(key, value)
        # Always set: left at 0, ONNX Runtime also pins its threads to cores (sut/cpu_cores.py).
        self._intra_op_threads = int(self.options.threads) if self.options.threads is not None else physical_cores()
        session_options.intra_op_num_threads = self._intra_op_threads
        try:
            session = ort.InferenceSession(
                str(self._model_path), sess_options=session_options, providers=providers
            )
        except Exception as exc:
            raise BackendError(
                f"onnxruntime could not load {self._model_path}: {first_line(exc)}"
            ) from exc

        used = list(session.get_providers())
        if _CUDA_PROVIDER in self._requested_providers and _CUDA_PROVIDER not in used:
            # ONNX Runtime quietly falls back to the CPU when the CUDA provider's libraries
            # (CUDA, cuDNN) fail to load; a GPU benchmark must not silently measure the CPU.
            raise BackendError(
                "onnxruntime could not start CUDAExecutionProvider (check that the CUDA and "
                f"cuDNN versions match onnxruntime-gpu {ort.__version__}); session providers: "
                f"{', '.join(used)}"
            )
        self._check_io(session)
        self._session = session
        self._session_providers = used

        # The first run allocates the memory arena and picks kernels; keep that out of
        # the measurement.
        size = self.model.image_size
        warmup = np.zeros((max(1, self.options.max_batch), 3, size, size), dtype=np.float32)
        self._run(warmup)
        log.info(
            "onnxruntime %s session ready: %s on %s",
            ort.__version__,
            self._model_path.name,
            ", ".join(used),
        )

    def close(self) -> None:
        self._session = None
        self._staging = None

    # -- staging and running -----------------------------------------------------------

    def allocate_staging(self, capacity: int) -> None:
        if capacity < 1:
            raise BackendError(f"staging capacity must be at least 1, got {capacity}")
        size = self.model.image_size
        self._staging = np.zeros((capacity, 3, size, size), dtype=np.float32)

    def stage(self, rows: np.ndarray, samples: np.ndarray) -> None:
        staging = self._require_staging()
        staging[np.asarray(rows, dtype=np.int64)] = samples

    def run_batch(self, rows: np.ndarray) -> DonePending:
        staging = self._require_staging()
        # Fancy indexing gathers the rows into a fresh C-contiguous batch, which is what
        # the session needs as its input tensor.
        batch = np.take(staging, np.asarray(rows, dtype=np.int64), axis=0)
        if batch.shape[0] == 0:
            return DonePending(np.empty(0, dtype=np.int32))
        logits = self._run(batch)
        return DonePending(np.argmax(logits, axis=1).astype(np.int32))

    def logits(self, samples: np.ndarray) -> np.ndarray:
        return self._run(np.ascontiguousarray(samples, dtype=np.float32)).astype(np.float32)

    def time_tight_loop(self, batch_size: int, iterations: int) -> float:
        session = self._require_session()
        staging = self._require_staging()
        rows = tight_loop_rows(batch_size, staging.shape[0])
        feed = {INPUT_NAME: np.take(staging, rows, axis=0)}
        outputs = [OUTPUT_NAME]
        run = session.run
        try:
            start = time.perf_counter()
            for _ in range(iterations):
                run(outputs, feed)
            return time.perf_counter() - start
        except Exception as exc:
            raise BackendError(f"onnxruntime inference failed: {first_line(exc)}") from exc

    # -- reporting ---------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        path = self._int8_cpu_path
        weights = weight_range(path.weight_max if path is not None else INT8_MAX)
        return {
            "backend": self.name,
            "onnxruntime_version": self._ort_version,
            "providers": self._session_providers,
            "requested_providers": self._requested_providers,
            "model_path": str(self._model_path) if self._model_path is not None else None,
            "model_format": f"onnx opset {OPSET_VERSION}, {self.model.precision}"
            + (f" (explicit Q/DQ, per-channel weights in {weights}, {self._int8_encoding} activations)"
               if self.model.precision == "int8" else "")
            + ", dynamic batch",
            "cpu_isa": self._cpu_isa.to_json() if self._cpu_isa is not None else None,
            "int8_cpu_path": path.to_json() if path is not None else None,
            "calibration_hash": self._calibration_hash,
            "precision": self.model.precision,
            "device": self.options.device,
            "threads": self._intra_op_threads,
            "threads_source": "--threads" if self.options.threads is not None else "physical cores (unpinned)",
            "graph_optimization": "all",
            "staging": "host",
        }

    # -- internals ---------------------------------------------------------------------

    def _choose_int8_cpu_path(self) -> None:
        """On the CPU: its ISA, and for int8 the path that is exact on it (sut/cpu_isa.py)."""
        on_cpu = self.options.device == "cpu"
        if self._int8_cpu_request not in INT8_CPU_PATHS:
            raise BackendError(f"unknown int8_cpu_path {self._int8_cpu_request!r}; choose from "
                               f"{', '.join(INT8_CPU_PATHS)}")
        if self._int8_cpu_request != AUTO and not (on_cpu and self.model.precision == "int8"):
            raise BackendError(f"int8_cpu_path {self._int8_cpu_request!r} applies to int8 on the CPU, "
                               f"not {self.model.precision} on {self.options.device}")
        if not on_cpu:
            return
        self._cpu_isa = detect_cpu_isa()
        if self.model.precision == "int8":
            self._int8_cpu_path = choose_int8_cpu_path(
                self._int8_cpu_request, self._cpu_isa, signed_graph=self._int8_encoding == SIGNED
            )
            log.info("int8 on the CPU: %s path (%s)", self._int8_cpu_path.name, self._int8_cpu_path.reason)

    def _providers_for_device(self, ort: Any) -> list[str | tuple[str, dict[str, Any]]]:
        device = self.options.device
        if device == "cpu":
            return [_CPU_PROVIDER]
        if device == "cuda" or device.startswith("cuda:"):
            available = list(ort.get_available_providers())
            if _CUDA_PROVIDER not in available:
                raise BackendError(
                    "onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu is not "
                    f"installed); available providers: {', '.join(available)}"
                )
            index = device.partition(":")[2] or "0"
            if not index.isdigit():
                raise BackendError(f"bad device {device!r}: expected cpu, cuda or cuda:N")
            # CPU stays listed so ONNX Runtime can place the few shape ops CUDA lacks.
            return [(_CUDA_PROVIDER, {"device_id": int(index)}), _CPU_PROVIDER]
        raise BackendError(f"onnxruntime backend: unsupported device {device!r} (cpu or cuda)")

    def _check_io(self, session: Any) -> None:
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if inputs != [INPUT_NAME] or OUTPUT_NAME not in outputs:
            raise BackendError(
                f"{self._model_path} has inputs {inputs} and outputs {outputs}; expected "
                f"{INPUT_NAME!r} -> {OUTPUT_NAME!r} (delete the cached file to re-export)"
            )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        session = self._require_session()
        try:
            return session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        except Exception as exc:
            raise BackendError(f"onnxruntime inference failed: {first_line(exc)}") from exc

    def _require_session(self) -> Any:
        if self._session is None:
            raise BackendError("onnxruntime backend is not loaded (call load() first)")
        return self._session

    def _require_staging(self) -> np.ndarray:
        if self._staging is None:
            raise BackendError("onnxruntime backend has no staging buffer (allocate_staging)")
        return self._staging
