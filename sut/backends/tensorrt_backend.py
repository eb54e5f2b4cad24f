"""TensorRT on a CUDA GPU: strongly typed engines built from ONNX graphs that carry their
own precision (fp32 export, fp16 graph, explicit Q/DQ int8 graph), cached on disk.

Staged samples live in one NCHW buffer in the engine's input dtype (GPU-resident by
default, or pinned host memory). Each in-flight slot owns a CUDA stream, pinned index and
output buffers, a device input buffer and a device logits buffer sized for max_batch, and
its own execution contexts (contexts are not thread-safe). With CUDA graphs, each slot
captures one graph per batch bucket (`batch_buckets`; the slot machinery is sut/backends/cuda_slots.py, shared with the torch backend) that
copies the row numbers in, gathers the rows, runs the engine, takes the arg-max and copies
the top-1 out: a batch is one replay.

A captured graph bakes in its context's input shape and internal state, and TensorRT
updates a context's state when its input shape changes (its documentation says to enqueue
once after a shape change, before capturing). So every bucket gets its own execution
context with a fixed shape; the contexts of one slot share one block of activation memory
(user-managed allocation), which is safe because they only ever run one after another on
the slot's stream. Without graphs, one context per slot changes shape as batches need.

The engine itself (build, cache, deserialisation, contexts) is sut/trt_engine.py.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from plumbing.errors import BackendError, DeviceError, one_line
from sut.backends.base import BackendOptions, ModelSpec, tight_loop_rows
from sut.backends.cuda_slots import CudaSlot, CudaSlotBackend, batch_buckets, new_slot
from sut.onnx_export import INPUT_NAME, OUTPUT_NAME
from sut.trt_cuda import cuda_stack, import_torch_and_tensorrt
from sut.trt_prepare import prepare_engine, read_calibration
from sut.trt_engine import (
    activation_bytes,
    attach_device_memory,
    user_managed_context,
)
from sut.trt_plan import (
    BindingPlan,
    onnx_for_precision,
)

log = logging.getLogger(__name__)


_TORCH_DTYPES = {"float32": "float32", "float16": "float16"}


# -- the backend -----------------------------------------------------------------------


@dataclass
class _TrtSlot(CudaSlot):
    logits: Any = None  # device (max_batch, classes), engine output dtype: the engine writes this
    context: Any = None  # free-shape context (no-graph path and odd tight-loop sizes)
    context_batch: int = 0  # batch size `context` is currently set to
    scratch: Any = None  # shared activation memory of the user-managed contexts
    contexts: dict[int, Any] = field(default_factory=dict)  # bucket -> fixed-shape context


class TensorRTBackend(CudaSlotBackend):
    """TensorRT engines on one CUDA GPU. Options read from `options.extra`:
    cache_dir (deepgap cache root), calibration (int8: .activation_amax, .weight_scales,
    .cache_hash), trt_workspace_bytes (default 4 GiB), trt_tf32 (default True, TensorRT's
    own default for fp32 layers).

    load() checks, in order: precision (fp32/fp16/int8), int8 calibration, a CUDA device
    string, then imports torch and TensorRT, looks for a GPU and checks TensorRT's CUDA
    build against the driver (sut/trt_cuda.py). Configuration mistakes are thus reported
    the same way on every machine, with or without TensorRT.
    """

    name: ClassVar[str] = "tensorrt"

    def __init__(self, model: ModelSpec, options: BackendOptions) -> None:
        super().__init__(model, options)
        self._trt: Any = None
        self._torch: Any = None
        self._logger: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._plan: BindingPlan | None = None
        self._device: Any = None
        self._in_dtype: Any = None
        self._out_dtype: Any = None
        self._staged: Any = None
        self._reset_slots()
        self._graphs_note = "not built"
        self._info: dict[str, Any] = {}

    # -- lifecycle ---------------------------------------------------------------------

    def load(self) -> None:
        precision = self.model.precision
        graph_kind = onnx_for_precision(precision)  # BackendError for bf16 and others
        calibration = self._calibration() if precision == "int8" else None
        if not self.options.device.startswith("cuda"):
            raise DeviceError(
                f"tensorrt backend runs on CUDA GPUs only; device {self.options.device!r} "
                "is not one (use --backend torch or onnxruntime on the CPU)"
            )
        torch, trt = import_torch_and_tensorrt()  # torch first (pytorch/pytorch#103852)

        if not torch.cuda.is_available():
            raise DeviceError("tensorrt backend: CUDA requested but no CUDA device is visible")
        # Before any Builder or Runtime: a TensorRT wheel built for a newer CUDA than the
        # driver cannot start (the common case: `pip install tensorrt` is CUDA 13).
        stack = cuda_stack(torch)
        stack.check()
        for warning in stack.warnings():
            log.warning("tensorrt: %s", warning)
        self._trt, self._torch = trt, torch
        requested = torch.device(self.options.device)
        index = requested.index if requested.index is not None else torch.cuda.current_device()
        self._device = torch.device("cuda", index)
        torch.cuda.set_device(self._device)
        gpu = torch.cuda.get_device_name(self._device)
        capability = tuple(torch.cuda.get_device_capability(self._device))

        prepared = prepare_engine(trt, self.model, self.options.extra, int(self.options.max_batch), gpu, capability,
                                  graph_kind, calibration)
        self._logger, self._runtime = prepared.logger, prepared.runtime
        self._engine, self._plan, self._info = prepared.engine, prepared.plan, dict(prepared.info, **stack.info())
        self._in_dtype = getattr(torch, _TORCH_DTYPES[prepared.plan.input.dtype])
        self._out_dtype = getattr(torch, _TORCH_DTYPES[prepared.plan.output.dtype])

    def _calibration(self) -> Any:
        return read_calibration(self.options.extra)

    def close(self) -> None:
        torch = self._torch
        if torch is not None and self._slots:
            with contextlib.suppress(Exception):
                torch.cuda.synchronize(self._device)
        self._drop_slots()
        self._staged = None
        self._engine = None
        self._runtime = None
        if torch is not None and self._device is not None:
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()

    # -- staging -----------------------------------------------------------------------

    def _require_loaded(self) -> BindingPlan:
        if self._plan is None or self._engine is None:
            raise BackendError("tensorrt backend is not loaded (call load() first)")
        return self._plan

    def allocate_staging(self, capacity: int) -> None:
        plan = self._require_loaded()
        torch = self._torch
        if capacity < 1:
            raise BackendError(f"staging capacity must be at least 1, got {capacity}")
        if self._staged is not None and self._staged.shape[0] == capacity:
            return  # same size: keep the buffer and the graphs captured against it
        size = self.model.image_size
        on_device = self.options.staging == "device"
        self._retire_slots()  # refuses while a batch is out; waits for the GPU
        self._drop_slots()
        self._staged = None
        self._staged = torch.zeros(
            (capacity, plan.channels, size, size),
            dtype=self._in_dtype,
            device=self._device if on_device else "cpu",
            pin_memory=not on_device,
        )
        self._build_slots()

    def stage(self, rows: np.ndarray, samples: np.ndarray) -> None:
        torch = self._torch
        if self._staged is None:
            raise BackendError("tensorrt backend has no staging buffer (allocate_staging)")
        nchw = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
        index = torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(self._staged.device)
        self._staged.index_copy_(0, index, nchw.to(self._staged.device, self._in_dtype))
        torch.cuda.synchronize(self._device)

    # -- slots, contexts and graphs ----------------------------------------------------

    def _drop_slots(self) -> None:
        for slot in self._slots:
            slot.graphs.clear()  # graphs first: they reference the contexts' memory
            slot.contexts.clear()
            slot.context = None
            slot.scratch = None
        self._reset_slots()

    def _build_slots(self) -> None:
        buckets = batch_buckets(self.options.max_batch)
        self._graphs_note = "off (disabled by option)"
        if self.options.cuda_graphs:
            try:
                self._make_slots(graphs=True)
                self._graphs_note = "per batch bucket"
            except Exception as exc:  # capture, or user-managed contexts, not possible here
                reason = one_line(str(exc)) or type(exc).__name__
                log.warning("tensorrt: CUDA graphs unavailable (%s); running without graphs", reason)
                self._drop_slots()
                with contextlib.suppress(Exception):
                    self._torch.cuda.synchronize(self._device)
                self._graphs_note = f"off (capture failed: {reason})"
        if not self._slots:
            try:
                self._make_slots(graphs=False)
            except BackendError:
                self._drop_slots()
                raise
            except Exception as exc:
                self._drop_slots()
                raise BackendError(
                    f"tensorrt: setting up execution failed: {one_line(str(exc)) or type(exc).__name__}"
                ) from exc
        log.info(
            "tensorrt: %d CUDA slot(s), graphs %s%s",
            len(self._slots),
            self._graphs_note,
            f" for batch buckets {buckets}" if self._graphs_note == "per batch bucket" else "",
        )

    def _make_slots(self, graphs: bool) -> None:
        torch = self._torch
        plan = self._require_loaded()
        max_batch = self.options.max_batch
        in_shape = plan.input_shape(max_batch)
        for _ in range(max(1, self.options.in_flight)):
            slot = new_slot(torch, self._device, max_batch, _TrtSlot,
                            in_dev=torch.zeros(in_shape, dtype=self._in_dtype, device=self._device),
                            logits=torch.zeros(plan.output_shape(max_batch), dtype=self._out_dtype,
                                               device=self._device))
            if self._staged.device != slot.in_dev.device:
                slot.in_host = torch.zeros(in_shape, dtype=self._in_dtype, pin_memory=True)
            self._add_slot(slot)  # listed first so a failure below still frees it
            if graphs:
                # One block of activation memory for all of this slot's contexts: they run
                # one after another on the slot's stream, never at the same time.
                slot.scratch = torch.empty(
                    max(1, activation_bytes(self._engine)), dtype=torch.uint8, device=self._device
                )
                slot.context = self._new_context(slot)
                slot.pool = torch.cuda.graph_pool_handle()
                for bucket in batch_buckets(max_batch):
                    slot.contexts[bucket] = self._new_context(slot, batch=bucket)
                    # TensorRT's CUDA-graph guidance: enqueue once after setting the shape
                    # (it does shape-dependent setup then), outside the capture.
                    slot.graphs[bucket] = self._capture(slot, bucket, 1, slot.contexts[bucket])
            else:
                slot.context = self._new_context(slot)
        torch.cuda.synchronize(self._device)
        self._open_slots()

    def _new_context(self, slot: _TrtSlot, batch: int | None = None) -> Any:
        """An execution context bound to the slot's buffers; with `batch`, its input shape
        is fixed to that batch for good (a graph is captured against it)."""
        if slot.scratch is not None:
            context = user_managed_context(self._trt, self._engine)
            if context is None:
                raise BackendError("TensorRT could not create an execution context")
            attach_device_memory(context, slot.scratch.data_ptr(), slot.scratch.numel())
        else:
            context = self._engine.create_execution_context()
            if context is None:
                raise BackendError(
                    "TensorRT could not create an execution context (out of GPU memory?): "
                    + (self._logger.recent_errors() or "no reason given")
                )
        for name, tensor in ((INPUT_NAME, slot.in_dev), (OUTPUT_NAME, slot.logits)):
            if not context.set_tensor_address(name, tensor.data_ptr()):
                raise BackendError(f"TensorRT refused the address of {name!r}: {self._logger.recent_errors()}")
        if batch is not None:
            self._set_shape(context, batch)
        return context

    def _set_shape(self, context: Any, batch: int) -> None:
        shape = self._plan.input_shape(batch)
        if not context.set_input_shape(INPUT_NAME, shape):
            raise BackendError(
                f"TensorRT refused input shape {list(shape)}: {self._logger.recent_errors() or 'outside the profile'}"
            )

    def _batch_body(self, slot: _TrtSlot, count: int, context: Any) -> None:
        """One batch on the current stream, host buffers to host buffers: row numbers (or
        host-staged pixels) in, gather, engine, arg-max, top-1 out. `context` must already
        have its input shape set to `count`."""
        torch = self._torch
        if slot.in_host is not None:
            slot.in_dev[:count].copy_(slot.in_host[:count], non_blocking=True)
        else:
            slot.idx_dev[:count].copy_(slot.idx_host[:count], non_blocking=True)
            torch.index_select(self._staged, 0, slot.idx_dev[:count], out=slot.in_dev[:count])
        if not context.execute_async_v3(torch.cuda.current_stream(self._device).cuda_stream):
            raise BackendError(
                "TensorRT execution failed: " + (self._logger.recent_errors() or "no reason given")
            )
        top1 = slot.logits[:count].argmax(dim=1).to(torch.int32)
        slot.out_host[:count].copy_(top1, non_blocking=True)

    # -- running -----------------------------------------------------------------------

    def run_batch(self, rows: np.ndarray):
        self._require_loaded()
        if len(rows) and not self._slots:
            raise BackendError("tensorrt backend has no staging buffer (allocate_staging)")
        return self._run_in_slot(rows)

    def _run_ungraphed(self, slot: _TrtSlot, count: int) -> None:
        if slot.context_batch != count:
            self._set_shape(slot.context, count)
            slot.context_batch = count
        self._batch_body(slot, count, slot.context)

    def logits(self, samples: np.ndarray) -> np.ndarray:
        """Engine logits for at most max_batch samples, staged into rows 0..n-1 (the accuracy
        gate's path; not used while LoadGen runs)."""
        self._require_loaded()
        torch = self._torch
        count = len(samples)
        if not 1 <= count <= self.options.max_batch:
            raise BackendError(f"logits for {count} samples: 1..max batch {self.options.max_batch} at a time")
        if self._staged is None or self._staged.shape[0] < count:
            self.allocate_staging(self.options.max_batch)
        self.stage(np.arange(count), samples)
        generation = self._slot_generation
        slot = self._free_slots.get()
        try:
            if slot.in_host is not None:
                torch.index_select(self._staged, 0, torch.arange(count), out=slot.in_host[:count])
            else:
                slot.idx_np[:count] = np.arange(count)
            with torch.cuda.stream(slot.stream):
                self._run_ungraphed(slot, count)
            slot.stream.synchronize()
            return slot.logits[:count].float().cpu().numpy()
        finally:
            self._return_slot(slot, generation)

    def time_tight_loop(self, batch_size: int, iterations: int) -> float:
        self._require_loaded()
        if self._staged is None or not self._slots:
            raise BackendError("tensorrt backend has no staging buffer (allocate_staging)")
        rows = tight_loop_rows(batch_size, self._staged.shape[0], self.options.max_batch)
        return self._time_in_slot(rows, iterations)

    # -- reporting ---------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "backend": self.name,
            "device": self.options.device,
            "precision": self.model.precision,
            "max_batch": self.options.max_batch,
            "in_flight": self.options.in_flight,
            "staging": self.options.staging,
            "cuda_graphs": self._graphs_note,
            "graph_buckets": batch_buckets(self.options.max_batch)
            if self._graphs_note == "per batch bucket"
            else [],
        }
        info.update(self._info)
        return info
