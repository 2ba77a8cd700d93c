from __future__ import annotations

import numpy as np
import pytest

from medfm.core import metrics as M


def test_hand_computed_values():
    assert M.auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert M.dice([[1, 1], [0, 0]], [[1, 0], [0, 0]]) == pytest.approx(2 / 3)
    assert M.dice(np.zeros(3), np.zeros(3)) == 1.0
    assert M.accuracy([1, 0, 1], [1, 1, 1]) == pytest.approx(2 / 3)
    assert M.f1([1, 0, 1, 1], [1, 0, 0, 1]) == pytest.approx(0.8)
    assert M.psnr(np.array([0.0, 1.0]), np.array([0.0, 0.9]), data_range=1.0) == pytest.approx(
        10 * np.log10(1 / 0.005)
    )  # mse = 0.01 / 2
    with pytest.raises(ValueError):
        M.auroc([1, 1], [0.2, 0.3])


def test_bootstrap_ci_is_deterministic_and_brackets_point():
    rng = np.random.default_rng(0)
    x = rng.normal(0.7, 0.1, size=200)
    p1, ci1, _ = M.bootstrap_ci(np.mean, x, seed=3)
    _p2, ci2, _ = M.bootstrap_ci(np.mean, x, seed=3)
    assert ci1 == ci2 and ci1[0] < p1 < ci1[1]
    # The standard error of the mean is 0.1/sqrt(200) ~ 0.0071: the 95 % CI is about +-1.96 SE wide.
    assert (ci1[1] - ci1[0]) == pytest.approx(2 * 1.96 * 0.1 / np.sqrt(200), rel=0.2)


def test_bootstrap_ci_coverage_near_nominal():
    """Over 200 synthetic experiments the 90 % CI of a mean covers the true mean ~90 % of the time."""
    rng = np.random.default_rng(1)
    hits = 0
    for i in range(200):
        x = rng.exponential(1.0, size=60)  # true mean 1.0, skewed
        _, ci, _ = M.bootstrap_ci(np.mean, x, n_resamples=300, level=0.90, seed=i)
        hits += ci[0] <= 1.0 <= ci[1]
    assert 0.80 <= hits / 200 <= 0.97


def test_degenerate_resamples_are_skipped():
    y = np.array([0] * 30 + [1] * 2)
    s = np.linspace(0, 1, 32)
    m = M.with_ci(M.auroc, y, s, n_resamples=200)
    assert m.value == pytest.approx(1.0) and m.n == 32
    stratified = M.with_ci(M.auroc, y, s, n_resamples=200, strata=y)
    assert stratified.ci is not None


def test_with_ci_undefined_metric():
    m = M.with_ci(M.auroc, np.ones(10), np.arange(10))
    assert m.value is None and "single class" in m.note


def test_difference_ci_detects_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(2)
    base = rng.normal(0.5, 0.1, 300)
    better = base + 0.05 + rng.normal(0, 0.02, 300)
    d = M.difference_ci(better, base)
    assert d.ci[0] > 0.04 and d.value == pytest.approx(0.05, abs=0.01)
    null = M.difference_ci(base + rng.normal(0, 0.02, 300), base)
    assert null.ci[0] < 0 < null.ci[1]
    unpaired = M.difference_ci(better, base, paired=False)
    assert unpaired.ci[1] - unpaired.ci[0] > d.ci[1] - d.ci[0]
