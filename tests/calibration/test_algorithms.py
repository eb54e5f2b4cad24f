"""Calibration arithmetic on fixed and seeded tensors: exact where the answer is exact."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.algorithms import (
    MIN_SCALE,
    NUM_BINS,
    HistogramCollector,
    amax_entropy,
    amax_max,
    amax_percentile,
    scale_from_amax,
    weight_scales_per_channel,
)


def _histogram(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    collector = HistogramCollector()
    collector.observe_max(values)
    collector.observe_histogram(values)
    return collector.histogram


# -- max and percentile ------------------------------------------------------------------


def test_amax_max_is_largest_magnitude() -> None:
    assert amax_max(np.array([[-3.5, 1.0], [2.0, 0.25]], dtype=np.float32)) == 3.5
    assert amax_max(np.zeros(4)) == 0.0
    with pytest.raises(ValueError):
        amax_max(np.array([]))


def test_percentile_on_hand_made_histogram() -> None:
    hist, edges = np.array([50, 30, 19, 1]), np.arange(5.0)
    # The upper edge of the bin where the cumulative count reaches the percentile.
    assert amax_percentile(hist, edges, 50) == 1.0
    assert amax_percentile(hist, edges, 80) == 2.0
    assert amax_percentile(hist, edges, 99) == 3.0
    assert amax_percentile(hist, edges, 99.5) == 4.0
    assert amax_percentile(hist, edges, 100) == 4.0


def test_percentile_on_fixed_tensor() -> None:
    # 9999 ones and one 2048: the range is [0, 2048] in 2048 bins of width 1, so the ones
    # fill bin [1, 2) and 99.99 % of the values lie at or below 2.0.
    values = np.concatenate([np.ones(9999, dtype=np.float32), [np.float32(-2048.0)]])
    hist, edges = _histogram(values)
    assert hist[1] == 9999 and hist[-1] == 1 and hist.sum() == 10000
    assert amax_percentile(hist, edges, 99.99) == 2.0
    assert amax_percentile(hist, edges, 100) == 2048.0


@pytest.mark.parametrize("percentile", [0, -1, 100.5])
def test_percentile_out_of_range(percentile: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        amax_percentile(np.ones(4), np.arange(5.0), percentile)


def test_histogram_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="edges"):
        amax_percentile(np.ones(4), np.arange(4.0))
    with pytest.raises(ValueError, match="non-empty"):
        amax_entropy(np.array([]), np.array([0.0]))


# -- entropy -----------------------------------------------------------------------------


def test_entropy_clips_a_far_outlier() -> None:
    rng = np.random.default_rng(0)
    bulk = rng.normal(size=100_000)
    hist, edges = _histogram(np.concatenate([bulk, [50.0]]))
    amax = amax_entropy(hist, edges)
    assert edges[-1] == 50.0
    # Well below the outlier, within the bulk's tail (|x| of N(0, 1) reaches about 4.7).
    assert 3.0 < amax < np.abs(bulk).max() + 0.1


def test_entropy_keeps_the_range_of_a_uniform_distribution() -> None:
    values = np.random.default_rng(1).uniform(-3.0, 3.0, size=100_000)
    hist, edges = _histogram(values)
    # Clipping a flat distribution always piles mass into the last bin: nothing is gained.
    assert amax_entropy(hist, edges) >= 0.99 * edges[-1]


def test_entropy_of_empty_histogram_is_the_range() -> None:
    assert amax_entropy(np.zeros(NUM_BINS), np.linspace(0, 3, NUM_BINS + 1)) == 3.0


def _reference_divergences(counts: np.ndarray, levels: int, first: int) -> np.ndarray:
    """The definition in amax_entropy's docstring, one candidate at a time."""
    beyond = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])
    result = []
    for i in range(first, counts.size + 1):
        kept = counts[:i]
        p = kept.copy()
        p[-1] += beyond[i]
        nonzero = p > 0
        level = np.arange(i) * levels // i
        level_counts = np.bincount(level, weights=kept, minlength=levels)
        level_nonzero = np.bincount(level, weights=nonzero, minlength=levels)
        q = np.where(nonzero, level_counts[level] / np.maximum(level_nonzero[level], 1), 0.0)
        if q.sum() <= 0 or np.any(q[nonzero] <= 0):
            result.append(np.inf)
            continue
        p_n, q_n = p[nonzero] / p.sum(), q[nonzero] / q.sum()
        result.append(float(np.sum(p_n * np.log(p_n / q_n))))
    return np.array(result)


@pytest.mark.parametrize("size, levels", [(2048, 128), (300, 128), (50, 128), (40, 4)])
def test_entropy_divergences_match_the_definition(size: int, levels: int) -> None:
    from calibration.algorithms import _divergences

    rng = np.random.default_rng(size)
    counts = rng.integers(0, 50, size).astype(np.float64)
    counts[rng.random(size) < 0.3] = 0.0  # empty bins, including some last bins
    candidates, fast = _divergences(counts, levels, 1)
    slow = _reference_divergences(counts, levels, 1)
    assert candidates.tolist() == list(range(1, size + 1))
    np.testing.assert_array_equal(np.isinf(fast), np.isinf(slow))
    finite = np.isfinite(slow)
    np.testing.assert_allclose(fast[finite], slow[finite], atol=1e-12)


# -- scales ------------------------------------------------------------------------------


def test_weight_scales_per_output_channel() -> None:
    weights = np.zeros((3, 2, 2), dtype=np.float32)
    weights[0] = [[0.5, -2.54], [1.0, 0.0]]
    # channel 1 stays all zero
    weights[2] = [[-127.0, 3.0], [0.0, 64.0]]
    scales = weight_scales_per_channel(weights, axis=0)
    assert scales.dtype == np.float32 and scales.shape == (3,)
    np.testing.assert_allclose(scales, [2.54 / 127, MIN_SCALE, 1.0], rtol=1e-6)
    assert scales[1] == np.float32(MIN_SCALE)  # all-zero channel: tiny but valid


def test_weight_scales_other_axis() -> None:
    # A Gemm weight stored (K, N) with transB=0: output channels on axis 1.
    weights = np.array([[1.0, -4.0, 0.0], [2.0, 0.5, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(
        weight_scales_per_channel(weights, axis=1), np.float32([2 / 127, 4 / 127, MIN_SCALE])
    )
    np.testing.assert_array_equal(
        weight_scales_per_channel(weights, axis=-1), weight_scales_per_channel(weights, axis=1)
    )


def test_scale_from_amax() -> None:
    assert scale_from_amax(12.7) == pytest.approx(0.1)
    assert scale_from_amax(0.0) == MIN_SCALE
    np.testing.assert_allclose(scale_from_amax(np.array([127.0, 254.0])), [1.0, 2.0])


# -- streaming histogram -----------------------------------------------------------------


def test_two_pass_histogram_equals_one_histogram_of_everything() -> None:
    rng = np.random.default_rng(2)
    # The last batch has the widest range: a single-pass histogram would need re-binning.
    batches = [rng.normal(scale=s, size=(4, 3, 5, 5)).astype(np.float32) for s in (0.5, 1.0, 3.0)]
    collector = HistogramCollector()
    for batch in batches:
        collector.observe_max(batch)
    for batch in batches:
        collector.observe_histogram(batch)
    everything = np.abs(np.concatenate([b.ravel() for b in batches]))
    expected, expected_edges = np.histogram(
        everything, bins=NUM_BINS, range=(0.0, float(everything.max()))
    )
    hist, edges = collector.histogram
    assert collector.amax == float(everything.max())
    assert collector.count == everything.size
    np.testing.assert_array_equal(hist, expected)
    np.testing.assert_allclose(edges, expected_edges)


def test_histogram_counts_values_beyond_the_first_pass_in_the_last_bin() -> None:
    collector = HistogramCollector(num_bins=4)
    collector.observe_max(np.array([1.0, -4.0]))
    collector.observe_histogram(np.array([0.5, 9.0, -5.0]))
    hist, edges = collector.histogram
    assert hist.tolist() == [1, 0, 0, 2]
    assert edges.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert collector.clipped == 2


def test_histogram_of_an_all_zero_tensor() -> None:
    hist, edges = _histogram(np.zeros((2, 8), dtype=np.float32))
    assert hist[0] == 16 and hist.sum() == 16
    assert amax_percentile(hist, edges) == 0.0
    assert amax_entropy(hist, edges) == 0.0


def test_max_pass_cannot_follow_the_histogram_pass() -> None:
    collector = HistogramCollector()
    collector.observe_max(np.ones(3))
    collector.observe_histogram(np.ones(3))
    with pytest.raises(RuntimeError):
        collector.observe_max(np.ones(3))
