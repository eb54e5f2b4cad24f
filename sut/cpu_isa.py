"""The CPU's integer dot-product instructions, and the INT8 form ONNX Runtime runs exactly
on them.

ONNX Runtime's CPU kernels (MLAS) multiply uint8 activations by int8 weights (U8S8). On
x86 CPUs without VNNI they use VPMADDUBSW (AVX2, AVX-512BW), which adds each pair of
neighbouring u8 x s8 products in saturating 16-bit arithmetic: 2 x 255 x 127 = 64770 is
clamped to 32767, so a convolution silently loses whatever exceeds it. AVX512-VNNI,
AVX-VNNI and AMX accumulate in 32 bits and are exact. MLAS picks its kernels from CPUID
(onnxruntime/core/mlas/lib/platform.cpp: leaf 7 ECX bit 11 AVX512-VNNI, leaf 7.1 EAX
bit 4 AVX-VNNI, leaf 7 EDX bits 24-25 AMX, with the OS's XCR0 state).

The INT8 paths on the CPU (`--int8-cpu-path`):
* `vnni`: full-range int8 weights [-127, 127], TensorRT's; exact with VNNI or AMX only.
* `reduce-range`: weights in [-63, 63]: a pair sum is at most 2 x 255 x 63 = 32130, inside
  int16, so no kernel saturates; one bit less weight resolution. ONNX Runtime's
  quantization guide recommends it on AVX2/AVX-512 machines without VNNI.
* `u8u8`: full-range weights and ONNX Runtime's `session.x64quantprecision`: at load it
  turns the int8 weights of QLinearConv, QGemm, QLinearMatMul, MatMulInteger (and a few
  contrib ops) that leave [-64, 64] into uint8 and runs U8U8 kernels, which widen to 16
  bits before multiplying: exact, slower, x86 builds only.
* `auto`: `vnni` where the CPU has VNNI or AMX, else `reduce-range`; `u8u8` for the
  TensorRT (signed) graph, which must run as TensorRT gets it.

Detection asks CPUID, as MLAS does, never /proc/cpuinfo: the kernel writes that file from
the host CPU, so under an emulator (qemu-user -cpu Haswell) it lists AVX-512 VNNI that the
process cannot execute, while CPUID answers for the CPU the process runs on. The reader is
torch's cpuinfo (`torch.cpu.get_capabilities`, newer torch releases) or else numpy's
runtime dispatcher, which knows AVX512-VNNI but not AVX-VNNI or AMX: those then read as
unknown and `auto` takes reduce-range, exact everywhere. Outside x86, ONNX Runtime's
integer kernels are ARM's (NEON, dot product, i8mm), whose exactness this harness has not
checked: `auto` takes reduce-range there and says why.
"""

from __future__ import annotations

import functools
import logging
import platform
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from plumbing.errors import BackendError

log = logging.getLogger(__name__)

AUTO, VNNI, REDUCE_RANGE, U8U8 = "auto", "vnni", "reduce-range", "u8u8"
INT8_CPU_PATHS = (AUTO, VNNI, REDUCE_RANGE, U8U8)
INT8_MAX = 127  # full-range symmetric int8 weights
# Reduce range: with |w| <= 63 a pair of u8 x s8 products sums to at most 2 x 255 x 63 =
# 32130, inside int16, so the saturating pair sum of x86 u8s8 kernels without VNNI is exact.
REDUCED_WEIGHT_MAX = 63
X64_QUANT_PRECISION = "session.x64quantprecision"  # kOrtSessionOptionsAvx2PrecisionMode

X86_FEATURES = ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
ARM_FEATURES = ("asimddp", "i8mm")
# 32-bit integer dot products, the strongest first: the ones that make U8S8 exact.
_DOT_PRODUCTS = ("amx_int8", "avx512_vnni", "avx_vnni")
_TORCH_NAMES = {"avx2": "avx2", "avx512bw": "avx512_bw", "avx512_vnni": "avx512_vnni",
                "avx_vnni": "avx_vnni", "amx_int8": "amx_int8", "asimddp": "dot", "i8mm": "i8mm"}
_NUMPY_NAMES = {"avx2": "AVX2", "avx512bw": "AVX512BW", "avx512_vnni": "AVX512VNNI", "asimddp": "ASIMDDP"}


@dataclass(frozen=True)
class CpuIsa:
    """What the CPU the process runs on can do, as far as INT8 kernels care."""

    architecture: str  # "x86_64", "aarch64", ... (platform.machine(), lower case)
    features: tuple[str, ...]  # those of X86_FEATURES / ARM_FEATURES present
    unknown: tuple[str, ...]  # those the source cannot tell
    source: str  # the CPUID reader

    @property
    def is_x86(self) -> bool:
        return self.architecture in ("x86_64", "amd64", "i386", "i686", "x86")

    @property
    def dot_product(self) -> str:
        """The 32-bit int8 dot product ONNX Runtime's U8S8 kernels use ("amx_int8",
        "avx512_vnni", "avx_vnni"), "none", "unknown", or "not x86"."""
        if not self.is_x86:
            return "not x86"
        found = [name for name in _DOT_PRODUCTS if name in self.features]
        if found:
            return found[0]
        return "unknown" if set(self.unknown) & set(_DOT_PRODUCTS) else "none"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "int8_dot_product": self.dot_product}


@dataclass(frozen=True)
class Int8CpuPath:
    """How ONNX Runtime runs INT8 on this CPU: the weights' range and session options."""

    name: str  # VNNI, REDUCE_RANGE or U8U8
    requested: str  # AUTO or the forced name
    weight_max: int
    session_config: dict[str, str]
    exact: bool | None  # whether ONNX Runtime's kernels compute it exactly here; None: not known
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def choose_int8_cpu_path(requested: str, isa: CpuIsa, signed_graph: bool = False) -> Int8CpuPath:
    """The path `requested` (AUTO: the exact one for `isa`, see the module docstring).
    `signed_graph`: the graph is TensorRT's, checked here, so auto keeps its weights.
    Raises BackendError for an unknown name or a path this CPU cannot run."""
    if requested not in INT8_CPU_PATHS:
        raise BackendError(f"unknown int8 CPU path {requested!r}; choose from {', '.join(INT8_CPU_PATHS)}")
    dot = isa.dot_product
    if requested != AUTO:
        name, why = requested, f"forced (--int8-cpu-path {requested}) on a CPU with int8 dot product: {dot}"
    elif dot in _DOT_PRODUCTS:
        name, why = VNNI, f"{dot} sums int8 products in 32 bits: full-range weights are exact"
    elif not isa.is_x86:
        name, why = REDUCE_RANGE, (f"{isa.architecture}: ONNX Runtime's integer kernels here are not "
                                   "x86's and unverified; 7-bit weights cannot saturate a 16-bit pair sum")
    elif signed_graph:
        name, why = U8U8, (f"x86 without VNNI ({dot}): u8s8 pair sums saturate; U8U8 kernels keep "
                           "TensorRT's full-range weights exact")
    else:
        name, why = REDUCE_RANGE, (f"x86 without VNNI ({dot}): u8s8 pair sums saturate at 16 bits; "
                                   "7-bit weights keep them in range")
    if name == U8U8 and not isa.is_x86:
        raise BackendError(f"--int8-cpu-path u8u8 relies on ONNX Runtime's {X64_QUANT_PRECISION}, which "
                           f"exists on x86 only (this CPU: {isa.architecture})")
    if name == VNNI:
        exact = True if dot in _DOT_PRODUCTS else False if dot == "none" else None
        if exact is False:
            log.warning("int8 CPU path vnni on a CPU without VNNI: ONNX Runtime's u8s8 kernels saturate "
                        "16-bit pair sums, so INT8 results are inexact")
    else:
        exact = True if isa.is_x86 else None
    return Int8CpuPath(
        name=name,
        requested=requested,
        weight_max=REDUCED_WEIGHT_MAX if name == REDUCE_RANGE else INT8_MAX,
        session_config={X64_QUANT_PRECISION: "1"} if name == U8U8 else {},
        exact=exact,
        reason=why,
    )


@functools.lru_cache(maxsize=1)
def detect_cpu_isa() -> CpuIsa:
    """This CPU's INT8-relevant features, from CPUID (module docstring)."""
    machine = platform.machine().lower() or "unknown"
    try:
        import torch.cpu

        capabilities = torch.cpu.get_capabilities()
    except (ImportError, AttributeError, RuntimeError):
        capabilities = None  # torch before get_capabilities: numpy's reader below
    if capabilities is not None:
        return isa_from_torch(capabilities, machine)
    return isa_from_numpy(_numpy_cpu_features(), machine)


def isa_from_torch(capabilities: Mapping[str, Any], machine: str) -> CpuIsa:
    """A CpuIsa from torch.cpu.get_capabilities()'s mapping."""
    architecture = str(capabilities.get("architecture") or machine).lower()
    wanted = X86_FEATURES if _is_x86(architecture) else ARM_FEATURES
    found = tuple(name for name in wanted if capabilities.get(_TORCH_NAMES[name]) is True)
    return CpuIsa(architecture, found, (), "CPUID via torch.cpu.get_capabilities (pytorch/cpuinfo)")


def isa_from_numpy(features: Mapping[str, bool], machine: str) -> CpuIsa:
    """A CpuIsa from numpy's runtime CPU feature table (__cpu_features__)."""
    wanted = X86_FEATURES if _is_x86(machine) else ARM_FEATURES
    found = tuple(n for n in wanted if n in _NUMPY_NAMES and features.get(_NUMPY_NAMES[n]) is True)
    unknown = tuple(n for n in wanted if n not in _NUMPY_NAMES)
    return CpuIsa(machine, found, unknown, "CPUID via numpy's runtime dispatch (__cpu_features__)")


def _is_x86(architecture: str) -> bool:
    return CpuIsa(architecture, (), (), "").is_x86


def _numpy_cpu_features() -> Mapping[str, bool]:
    try:
        from numpy._core._multiarray_umath import __cpu_features__  # numpy 2
    except ImportError:
        from numpy.core._multiarray_umath import __cpu_features__  # numpy 1
    return __cpu_features__
