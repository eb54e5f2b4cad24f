"""Fidelity figures and the pass/fail rule of the accuracy gate, on fixed inputs."""

from __future__ import annotations

import numpy as np
import pytest

from runs.gate import fidelity, judge


def test_identical_logits_are_perfect():
    ref = np.random.default_rng(0).normal(size=(50, 10))
    figures = fidelity(ref.copy(), ref, None, "test")
    assert figures.agreement == 1.0 and figures.cosine == pytest.approx(1.0) and figures.relative_error == 0.0
    assert judge(figures).passed


def test_figures_on_known_values():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [1.0, 3.0]])
    out = np.array([[1.0, 0.0], [1.0, 0.0], [2.0, 1.0], [1.0, 3.0]])  # sample 1 flips
    labels = np.array([0, 1, 1, 1])
    f = fidelity(out, ref, labels, "test")
    assert f.agreement == 0.75
    assert f.cosine == pytest.approx((1 + 0 + 1 + 1) / 4)
    assert f.relative_error == pytest.approx(np.sqrt(2) / np.linalg.norm(ref))
    assert f.top1 == 0.5 and f.reference_top1 == 0.75
    verdict = judge(f)
    assert not verdict.passed and "99% of FP32" in verdict.rule
    assert "FAIL" in verdict.line() and "\n" not in verdict.line()


def test_mlperf_rule_passes_at_exactly_99_percent_of_fp32():
    labels = np.arange(100) % 10
    ref = np.eye(10)[labels] * 5
    out = ref.copy()
    out[0] = np.eye(10)[(labels[0] + 1) % 10] * 5  # one miss in 100
    f = fidelity(out, ref, labels, "test")
    assert f.top1 == 0.99 and f.reference_top1 == 1.0
    assert judge(f).passed


def test_without_labels_the_rule_is_agreement():
    ref = np.eye(4)[np.arange(100) % 4]
    out = ref.copy()
    out[:2] = np.roll(out[:2], 1, axis=1)
    f = fidelity(out, ref, None, "test")
    assert f.top1 is None
    assert judge(f, min_agreement=0.98).passed
    assert not judge(f, min_agreement=0.99).passed


def test_nan_logits_fail_every_figure():
    ref = np.random.default_rng(1).normal(size=(8, 5))
    out = ref.copy()
    out[3] = np.nan
    f = fidelity(out, ref, None, "test")
    assert f.relative_error == float("inf")
    assert f.cosine < 1.0
    with pytest.raises(ValueError):
        fidelity(out[:4], ref, None, "test")
