"""PyTorch on the CPU or a CUDA GPU: fp32, fp16, bf16; channels_last, cuDNN autotune,
TorchInductor compilation (sut/compiling.py; the default on CUDA), CUDA graphs per
batch-size bucket around the compiled or eager network.

Staged samples live in one NHWC buffer (GPU-resident by default, or pinned host memory).
On CUDA each in-flight slot owns a stream, index/output buffers and, with graphs, one
captured graph per bucket that gathers the batch from staging, runs the network and
takes the arg-max, so a batch costs a handful of Python calls whatever its size.
"""

from __future__ import annotations

import gc
import logging
import threading
from typing import Any

import numpy as np

from plumbing.errors import BackendError, DeviceError
from sut.backends.base import BackendOptions, DonePending, ModelSpec, staged_rows, tight_loop_rows
from sut.backends.cuda_slots import CudaSlot, CudaSlotBackend, batch_buckets, new_slot
from sut.compiling import CompileRecord, compile_network, eager_record, release_compiled
from sut.models import build_model, weights_description

log = logging.getLogger(__name__)

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
# Compiled networks shared by the torch instances of one device (--instances): a compile
# takes tens of seconds each time (BENCHMARKS.md) and keeps its graphs in Dynamo's cache of
# the network's code, whose entries are limited, so the instances of one network, precision,
# mode and max batch on one device compile once and share the result. Each instance still
# has its own staging, slots, streams and CUDA graphs. Key -> [network, record, users].
_SHARED_LOCK = threading.Lock()
_SHARED_COMPILED: dict[tuple, list] = {}


class TorchBackend(CudaSlotBackend):
    name = "torch"

    def __init__(self, model: ModelSpec, options: BackendOptions) -> None:
        super().__init__(model, options)
        self._torch: Any = None
        self._net: Any = None
        self._staged: Any = None
        self._reset_slots()
        self._lock = threading.Lock()
        self._compiled: CompileRecord | None = None
        self._shared_key: tuple | None = None
        self._shares_compiled = False  # True: another instance on this device compiled it

    @property
    def _cuda(self) -> bool:
        return self.options.device.startswith("cuda")

    def load(self) -> None:
        import torch

        self._torch = torch
        precision = self.model.precision
        if precision not in _DTYPES:
            raise BackendError(
                f"torch backend does not run {precision}; it supports fp32, fp16 and bf16"
            )
        if self._cuda:
            if not torch.cuda.is_available():
                raise DeviceError("torch backend: CUDA requested but no CUDA device is visible")
            requested = torch.device(self.options.device)
            # An explicit index keeps device comparisons exact ("cuda" != "cuda:0").
            index = requested.index if requested.index is not None else torch.cuda.current_device()
            self._device = torch.device("cuda", index)
            torch.cuda.set_device(self._device)
            if precision == "bf16" and not torch.cuda.is_bf16_supported():
                raise DeviceError(
                    f"{torch.cuda.get_device_name(self._device)} has no bf16 support; use fp16"
                )
            torch.backends.cudnn.benchmark = True
        else:
            if precision != "fp32":
                raise DeviceError(
                    f"torch backend runs {precision} on CUDA GPUs only; use fp32 on the CPU"
                )
            self._device = torch.device("cpu")
            if self.options.threads:
                torch.set_num_threads(self.options.threads)
        self._dtype = getattr(torch, _DTYPES[precision])
        if self.options.compile != "none":
            self._net = self._shared_compiled_network()
        else:
            self._net = self._network()

    def _network(self) -> Any:
        torch = self._torch
        net = build_model(self.model).to(self._device, self._dtype)
        return net.to(memory_format=torch.channels_last) if self.options.channels_last else net

    def _shared_compiled_network(self) -> Any:
        """The compiled network of this device, compiled now unless another instance has."""
        key = (str(self._device), self.model, self.options.compile, self.options.max_batch,
               self.options.channels_last)
        with _SHARED_LOCK:  # loads run one after another; the lock keeps it so
            entry = _SHARED_COMPILED.get(key)
            if entry is None:
                entry = [self._compile(self._network()), None, 0]
                entry[1] = self._compiled
                _SHARED_COMPILED[key] = entry
            else:
                self._compiled, self._shares_compiled = entry[1], True
                log.info("torch: %s %s on %s shares the compiled network of an earlier instance",
                         self.model.name, self.model.precision, self._device)
            entry[2] += 1
            self._shared_key = key
            return entry[0]

    def _release_shared_compiled(self) -> bool:
        """Leave the shared compiled network; True when this was its last user."""
        key, self._shared_key = self._shared_key, None
        with _SHARED_LOCK:
            entry = _SHARED_COMPILED.get(key)
            if entry is None:
                return False
            entry[2] -= 1
            if entry[2] > 0:
                return False
            del _SHARED_COMPILED[key]
            return True

    def _compile(self, net: Any) -> Any:
        """The network through TorchInductor, each of its graphs compiled now (the dynamic
        batch graph at the max batch, and batch 1), on inputs laid out as a run's are, so
        that no compilation happens inside a CUDA graph capture or a timed run."""
        torch = self._torch
        size = self.model.image_size
        batches = sorted({self.options.max_batch, 1}, reverse=True)
        examples = [self._images(torch.randn((b, size, size, 3), device=self._device).to(self._dtype))
                    for b in batches]
        where = torch.cuda.get_device_name(self._device) if self._cuda else "cpu"
        label = f"{self.model.name} {self.model.precision} at {size} px"
        key = f"{self.model.name}|{self.model.precision}|{size}|{where}|torch {torch.__version__}"
        compiled, self._compiled = compile_network(torch, net, self.options.compile, label, examples, key)
        return compiled

    def _images(self, nhwc):
        """NHWC pixels as the NCHW tensor the network takes: a view with channels_last
        strides, or a contiguous copy without channels_last. The compiled graphs were traced
        on this layout, so every caller goes through here."""
        images = nhwc.permute(0, 3, 1, 2)
        return images if self.options.channels_last else images.contiguous()

    def _infer(self, nhwc):
        """Run the network on gathered NHWC images; top-1 as int32, all on device."""
        torch = self._torch
        with torch.inference_mode():
            return self._net(self._images(nhwc)).argmax(dim=1).to(torch.int32)

    def _batch_body(self, slot: CudaSlot, count: int) -> None:
        """One batch on the current stream, host buffers to host buffers: copy the row
        numbers (or host-staged pixels) in, gather, infer, copy the top-1 out. Captured
        whole into a CUDA graph, so a launch is one replay."""
        if slot.in_dev is not None:
            slot.in_dev[:count].copy_(slot.in_host[:count], non_blocking=True)
            nhwc = slot.in_dev[:count]
        else:
            slot.idx_dev[:count].copy_(slot.idx_host[:count], non_blocking=True)
            nhwc = self._torch.index_select(self._staged, 0, slot.idx_dev[:count])
        slot.out_host[:count].copy_(self._infer(nhwc), non_blocking=True)

    def allocate_staging(self, capacity: int) -> None:
        torch = self._torch
        if self._staged is not None and self._staged.shape[0] == capacity:
            return  # same size: keep the buffer and the graphs captured against it
        size = self.model.image_size
        on_device = self._cuda and self.options.staging == "device"
        self._retire_slots()  # refuses while a batch is out; waits for the GPU
        self._staged = torch.zeros(
            (capacity, size, size, 3),
            dtype=self._dtype,
            device=self._device if on_device else "cpu",
            pin_memory=self._cuda and not on_device,
        )
        if self._cuda:
            self._build_slots()

    def stage(self, rows: np.ndarray, samples: np.ndarray) -> None:
        torch = self._torch
        nhwc = torch.from_numpy(np.ascontiguousarray(samples.transpose(0, 2, 3, 1)))
        index = torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(self._staged.device)
        self._staged.index_copy_(0, index, nhwc.to(self._staged.device, self._dtype))
        if self._cuda:
            torch.cuda.synchronize(self._device)

    def _build_slots(self) -> None:
        torch = self._torch
        self._reset_slots()
        max_batch = self.options.max_batch
        for _ in range(max(1, self.options.in_flight)):
            buffers = {}
            if self._staged.device != self._device:
                shape = (max_batch, *self._staged.shape[1:])
                buffers = {"in_host": torch.zeros(shape, dtype=self._dtype, pin_memory=True),
                           "in_dev": torch.zeros(shape, dtype=self._dtype, device=self._device)}
            slot = new_slot(torch, self._device, max_batch, **buffers)
            if self.options.cuda_graphs:
                slot.pool = torch.cuda.graph_pool_handle()
                # Largest first: every graph's intermediates are freed when its capture
                # ends, so smaller graphs reuse the largest one's memory and a slot's pool
                # stays near one batch's peak. Ascending order left each larger capture
                # new segments: about 25 GB a slot for resnet50 fp32 up to batch 512.
                # Sharing is safe because a slot replays one graph at a time. Two warm-ups
                # on the slot's stream run cuDNN autotuning outside the capture.
                for bucket in sorted(batch_buckets(max_batch), reverse=True):
                    slot.graphs[bucket] = self._capture(slot, bucket, 2)
            self._add_slot(slot)
        torch.cuda.synchronize(self._device)
        self._open_slots()
        log.info(
            "torch: %d CUDA slot(s), graphs for batch buckets %s; %.1f GiB reserved on %s",
            len(self._slots),
            batch_buckets(max_batch) if self.options.cuda_graphs else "off",
            torch.cuda.memory_reserved(self._device) / 2**30,
            self._device,
        )

    def run_batch(self, rows: np.ndarray):
        if self._staged is None:
            raise BackendError("torch backend: no staged samples (not loaded, or closed)")
        if not self._cuda:
            rows = staged_rows(rows, self._staged.shape[0])
            rows_t = self._torch.from_numpy(np.asarray(rows, dtype=np.int64))
            nhwc = self._torch.index_select(self._staged, 0, rows_t)
            return DonePending(self._infer(nhwc).numpy())
        return self._run_in_slot(rows)

    def logits(self, samples: np.ndarray) -> np.ndarray:
        torch = self._torch
        nhwc = torch.from_numpy(np.ascontiguousarray(samples.transpose(0, 2, 3, 1)))
        with torch.inference_mode():
            return self._net(self._images(nhwc.to(self._device, self._dtype))).float().cpu().numpy()

    def time_tight_loop(self, batch_size: int, iterations: int) -> float:
        import time

        if self._staged is None:
            raise BackendError("torch backend: no staged samples (not loaded, or closed)")
        rows = tight_loop_rows(batch_size, self._staged.shape[0], self.options.max_batch if self._cuda else None)
        if not self._cuda:
            nhwc = self._torch.index_select(self._staged, 0, self._torch.from_numpy(rows))
            self._infer(nhwc)
            start = time.perf_counter()
            for _ in range(iterations):
                self._infer(nhwc)
            return time.perf_counter() - start
        return self._time_in_slot(rows, iterations)

    def describe(self) -> dict[str, Any]:
        torch = self._torch
        info: dict[str, Any] = {
            "backend": self.name,
            "torch": torch.__version__ if torch else None,
            "device": self.options.device,
            "precision": self.model.precision,
            "weights": weights_description(self.model),
            "channels_last": self.options.channels_last,
            "compile": ({**self._compiled.to_json(), "shared_with_earlier_instance": self._shares_compiled}
                        if self._compiled else eager_record()),
            "max_batch": self.options.max_batch,
        }
        if self._cuda and torch is not None:
            info.update(
                gpu=torch.cuda.get_device_name(self._device),
                cuda_graphs=self.options.cuda_graphs,
                graph_buckets=batch_buckets(self.options.max_batch) if self.options.cuda_graphs else [],
                in_flight=self.options.in_flight,
                staging=self.options.staging,
                cudnn=torch.backends.cudnn.version(),
                # PyTorch's default: fp32 convolutions may use TF32 tensor cores on Ampere
                # and newer. Recorded so an "fp32" result says what it ran.
                cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
            )
        elif torch is not None:
            info["threads"] = torch.get_num_threads()
        return info

    def close(self) -> None:
        if self._cuda and self._torch is not None:
            self._retire_slots(refuse_in_flight=False)  # no kernel may outlive its buffers
        self._reset_slots()
        self._staged = None
        self._net = None
        if self._shared_key is not None and self._release_shared_compiled():
            release_compiled(self._torch)
        if self._cuda and self._torch is not None:
            gc.collect()  # graphs held in reference cycles keep their private pools
            self._torch.cuda.empty_cache()
