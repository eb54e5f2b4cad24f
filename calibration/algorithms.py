"""Symmetric INT8 calibration arithmetic, in plain numpy.

Activations get one range per tensor (`amax`: the largest |x| kept before clipping) chosen
by one of three algorithms over a histogram of |x|; weights get one scale per output
channel. A scale maps int8 127 to `amax`: x_q = round(x / scale), scale = amax / 127.
"""

from __future__ import annotations

import numpy as np

INT8_MAX = 127
# The default activation range, chosen on the digits-trained ResNets the accuracy gate
# checks (BENCHMARKS.md, issue 3). Entropy (TensorRT's default calibrator) clipped too
# much: ONNX Runtime INT8 failed the 99%-of-FP32 rule on resnet18 and resnet50. Once Conv
# outputs were quantized too, percentile 99.99 failed it on resnet101 (92.6% vs 93.8%)
# and max did too (92.4%); percentile 99.999 passed all three.
DEFAULT_ALGORITHM = "percentile"
DEFAULT_PERCENTILE = 99.999
NUM_BINS = 2048  # TensorRT's histogram resolution for entropy calibration
NUM_QUANT_BINS = 128  # levels of |x| that signed int8 can tell apart
# A scale must be positive for the runtimes that consume it; an all-zero tensor or weight
# channel quantises to zero whatever its scale, so any tiny positive value is exact.
MIN_SCALE = 1e-8


def amax_max(values: np.ndarray) -> float:
    """The largest |x|: nothing is clipped, so one outlier coarsens every other value."""
    values = np.asarray(values)
    if values.size == 0:
        raise ValueError("amax_max needs at least one value")
    return float(np.max(np.abs(values)))


def amax_percentile(hist: np.ndarray, edges: np.ndarray, percentile: float = 99.99) -> float:
    """Upper edge of the bin where the cumulative count of |x| reaches `percentile` %.

    The upper edge (not the lower) guarantees at least `percentile` % of the values are
    at most the returned amax, so 100 returns the histogram's full range.
    """
    hist, edges = _check_histogram(hist, edges)
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    cumulative = np.cumsum(hist, dtype=np.float64)
    total = cumulative[-1]
    if total <= 0:
        return float(edges[-1])
    # A relative tolerance keeps exact fractions (9999 of 10000 at 99.99 %) from missing
    # their bin through float rounding of percentile / 100.
    target = total * (percentile / 100.0) * (1.0 - 1e-12)
    index = int(np.searchsorted(cumulative, target, side="left"))
    return float(edges[min(index, hist.size - 1) + 1])


def amax_entropy(
    hist: np.ndarray,
    edges: np.ndarray,
    num_quant_bins: int = NUM_QUANT_BINS,
    start_bin: int | None = None,
) -> float:
    """TensorRT's entropy calibration: the clipping threshold whose int8 version of the
    distribution of |x| loses the least information (smallest KL divergence).

    For each candidate threshold of i bins (i = `start_bin`, default `num_quant_bins`, up
    to all of them): the reference P is bins[:i] with every count beyond the threshold
    folded into its last bin (clipped values saturate there); the candidate Q quantises
    bins[:i] into `num_quant_bins` levels and spreads each level's count evenly over the
    bins of that level where P is non-zero. Returns the upper edge of the best threshold's
    last bin. Ties go to the larger threshold, which clips less.
    """
    hist, edges = _check_histogram(hist, edges)
    if num_quant_bins < 1:
        raise ValueError(f"num_quant_bins must be positive, got {num_quant_bins}")
    counts = hist.astype(np.float64)
    if counts.size > 1:
        # ReLU outputs pile exact zeros into bin 0. Zero is exact at any scale, so those
        # zeros say nothing about the threshold, yet their weight would dominate the
        # divergence; NVIDIA's pytorch-quantization levels bin 0 with bin 1 for this reason.
        counts[0] = counts[1]
    if counts.sum() <= 0:
        return float(edges[-1])

    first = max(1, min(start_bin if start_bin is not None else num_quant_bins, counts.size))
    candidates, divergences = _divergences(counts, num_quant_bins, first)
    # The last minimum: ties go to the larger threshold.
    best = divergences.size - 1 - int(np.argmin(divergences[::-1]))
    return float(edges[candidates[best]])


def _divergences(
    counts: np.ndarray, num_quant_bins: int, first: int
) -> tuple[np.ndarray, np.ndarray]:
    """KL(P || Q) of amax_entropy for every candidate i = first..len(counts), all at once.

    Bin j < i belongs to level floor(j * levels / i), i.e. levels span bins
    [ceil(k * i / levels), ceil((k + 1) * i / levels)), so per-level sums are differences
    of prefix sums. With T the total count, O = T - sum(bins[:i]) the clipped outliers,
    L_k and N_k the count and non-zero bins of level k (the last bin counting as non-zero
    when it only holds outliers) and M_k the P mass of level k (L_k, plus O for the last bin's level):

        KL = (sum_j p_j log p_j - sum_k M_k log(L_k / N_k)) / T + log((T - O) / T)

    A level with P mass but no Q mass (only outliers in the last level) gives +inf: that
    threshold cannot represent mass that exists.
    """
    counts = counts.astype(np.float64)
    total = counts.sum()
    candidates = np.arange(first, counts.size + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(counts > 0, counts * np.log(counts), 0.0)
    prefix = np.concatenate([[0.0], np.cumsum(counts)])
    prefix_nonzero = np.concatenate([[0.0], np.cumsum(counts > 0)])
    prefix_plogp = np.concatenate([[0.0], np.cumsum(plogp)])

    i = candidates[:, None]
    bounds = (np.arange(num_quant_bins + 1)[None, :] * i + num_quant_bins - 1) // num_quant_bins
    level_counts = np.diff(prefix[bounds], axis=1)
    level_nonzero = np.diff(prefix_nonzero[bounds], axis=1)
    last_bin = counts[candidates - 1]
    outliers = total - prefix[candidates]
    # The last bin's level: the last one, except for i < levels where levels stay empty.
    rows, last_level = np.arange(candidates.size), (candidates - 1) * num_quant_bins // candidates
    level_nonzero[rows, last_level] += (last_bin == 0) & (outliers > 0)
    mass = level_counts.copy()
    mass[rows, last_level] += outliers

    folded = last_bin + outliers  # P's last bin
    with np.errstate(divide="ignore", invalid="ignore"):
        p_log_p = prefix_plogp[candidates - 1] + np.where(folded > 0, folded * np.log(folded), 0.0)
        log_q = np.log(level_counts / level_nonzero)
        p_log_q = np.where(mass > 0, mass * log_q, 0.0).sum(axis=1)
        kept = prefix[candidates]
        kl = (p_log_p - p_log_q) / total + np.log(kept / total)
    kl = np.where(np.isnan(kl), np.inf, kl)
    # Rounding can leave a perfect match a hair below zero.
    return candidates, np.maximum(kl, 0.0)


def scale_from_amax(amax: float | np.ndarray) -> float | np.ndarray:
    """amax / 127, never below MIN_SCALE (an all-zero tensor still needs a valid scale)."""
    scale = np.maximum(np.asarray(amax, dtype=np.float64) / INT8_MAX, MIN_SCALE)
    return float(scale) if scale.ndim == 0 else scale


def weight_scales_per_channel(weights: np.ndarray, axis: int = 0) -> np.ndarray:
    """Symmetric int8 scale per channel along `axis`: max |w| over the other axes / 127.

    float32, one entry per channel; all-zero channels get MIN_SCALE.
    """
    weights = np.asarray(weights)
    if weights.ndim == 0:
        raise ValueError("weight_scales_per_channel needs at least a 1-D tensor")
    axis = axis % weights.ndim
    if weights.shape[axis] == 0:
        raise ValueError(f"weights have no channels along axis {axis}")
    others = tuple(d for d in range(weights.ndim) if d != axis)
    magnitude = np.abs(weights.astype(np.float64))
    if magnitude.size == 0:  # channels with no elements (a zero-sized kernel axis)
        amax = np.zeros(weights.shape[axis], dtype=np.float64)
    else:
        amax = np.max(magnitude, axis=others) if others else magnitude
    return np.maximum(amax / INT8_MAX, MIN_SCALE).astype(np.float32)


class HistogramCollector:
    """Streaming statistics of one tensor's |x| over many batches, in two passes.

    Pass 1 (`observe_max`) finds the range; pass 2 (`observe_histogram`) bins |x| over the
    fixed range [0, amax] into `num_bins` equal bins. Fixing the range after a full first
    pass means no bin is ever re-split, so the histogram is exactly what one np.histogram
    over all values would give, at the cost of running the data twice.
    """

    def __init__(self, num_bins: int = NUM_BINS) -> None:
        if num_bins < 1:
            raise ValueError(f"num_bins must be positive, got {num_bins}")
        self.num_bins = num_bins
        self.amax = 0.0
        self.count = 0  # values seen in pass 1
        self._hist: np.ndarray | None = None
        self._edges: np.ndarray | None = None
        self.clipped = 0  # pass-2 values beyond pass 1's range (different data)

    def observe_max(self, values: np.ndarray) -> None:
        if self._hist is not None:
            raise RuntimeError("observe_max after the histogram pass started")
        values = np.asarray(values)
        if values.size:
            self.amax = max(self.amax, float(np.max(np.abs(values))))
            self.count += values.size

    def observe_histogram(self, values: np.ndarray) -> None:
        hist, _ = self._ensure_histogram()
        magnitude = np.abs(np.asarray(values, dtype=np.float32)).ravel()
        if magnitude.size == 0:
            return
        if self.amax == 0.0:
            hist[0] += magnitude.size
            return
        over = magnitude > self.amax
        if over.any():
            # Pass 2 saw larger values than pass 1 (it was fed other data): count them
            # in the last bin, where clipping at amax would put them.
            self.clipped += int(over.sum())
            magnitude = np.minimum(magnitude, np.float32(self.amax))
        counts, _ = np.histogram(magnitude, bins=self.num_bins, range=(0.0, self.amax))
        hist += counts

    @property
    def histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """(counts int64, edges float64) of |x| over [0, amax]."""
        hist, edges = self._ensure_histogram()
        return hist.copy(), edges.copy()

    def _ensure_histogram(self) -> tuple[np.ndarray, np.ndarray]:
        # The first histogram call ends pass 1: the range is fixed from here on.
        if self._hist is None or self._edges is None:
            self._hist = np.zeros(self.num_bins, dtype=np.int64)
            self._edges = np.linspace(0.0, self.amax, self.num_bins + 1)
        return self._hist, self._edges


def _check_histogram(hist: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hist = np.asarray(hist)
    edges = np.asarray(edges, dtype=np.float64)
    if hist.ndim != 1 or hist.size == 0:
        raise ValueError(f"histogram must be a non-empty 1-D array, got shape {hist.shape}")
    if edges.shape != (hist.size + 1,):
        raise ValueError(f"expected {hist.size + 1} bin edges, got shape {edges.shape}")
    return hist, edges
