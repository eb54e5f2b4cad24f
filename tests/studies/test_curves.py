"""The pure curve functions the study and the reports share."""

from __future__ import annotations

import math

import pytest

from studies.curves import knee, ladder, latency_bound_qps, peak, spread

# A typical throughput-versus-batch curve: rises, saturates, dips a little at the end.
CURVE = {1: 1000.0, 2: 1900.0, 4: 3500.0, 8: 6000.0, 16: 8600.0, 32: 9300.0, 64: 9600.0, 128: 9700.0, 256: 9650.0}


def test_knee_is_the_smallest_batch_reaching_the_fraction_of_peak():
    assert knee(CURVE, 0.90) == 32  # 0.9 * 9700 = 8730: 16 gives 8600, 32 gives 9300
    assert knee(CURVE, 0.95) == 32  # 9215
    assert knee(CURVE, 0.98) == 64  # 9506
    assert knee(CURVE, 1.0) == 128
    assert knee(CURVE, 0.05) == 1


def test_knee_ignores_insertion_order_and_ties_go_to_the_smaller_batch():
    shuffled = dict(reversed(list(CURVE.items())))
    assert knee(shuffled, 0.90) == 32
    assert knee({8: 500.0, 4: 500.0, 2: 100.0}, 1.0) == 4
    assert peak({8: 500.0, 4: 500.0, 2: 100.0}) == (4, 500.0)


@pytest.mark.parametrize("curve, fraction", [({}, 0.9), (CURVE, 0.0), (CURVE, 1.5), ({1: math.nan}, 0.9), ({1: -3.0}, 0.9)])
def test_knee_rejects_bad_input(curve, fraction):
    with pytest.raises(ValueError):
        knee(curve, fraction)


def test_spread_uses_the_sample_standard_deviation():
    s = spread([10.0, 12.0, 14.0])
    assert s["mean"] == pytest.approx(12.0)
    assert s["std"] == pytest.approx(2.0)
    assert (s["n"], s["min"], s["max"]) == (3, 10.0, 14.0)
    assert spread([5.0])["std"] == 0.0
    with pytest.raises(ValueError):
        spread([])


def test_ladder_is_ascending_fractions_of_the_maximum():
    assert ladder(1000.0, (1.0, 0.5, 0.1, 0.5)) == [(0.1, 100.0), (0.5, 500.0), (1.0, 1000.0)]
    for bad in ((0.0, 1.0), (1.2,), ()):
        with pytest.raises(ValueError):
            ladder(1000.0, bad)
    with pytest.raises(ValueError):
        ladder(0.0)


def test_latency_bound_keeps_batches_whose_two_batch_times_fit():
    # batch 64 at 9600/s takes 6.7 ms: two of them (13.3 ms) fit 15 ms; batch 128 (26 ms) does not
    assert latency_bound_qps(CURVE, 15.0) == 9600.0
    assert latency_bound_qps(CURVE, 0.1) == 0.0
