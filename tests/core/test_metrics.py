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
    assert M.psnr(np.array([0.0, 1.0]), np.array([0.0, 0.9]), data_range=2.0) == pytest.approx(10 * np.log10(4 / 0.005))
    assert M.dice([1, 1, 0, 0], [1, 1, 1, 0]) == pytest.approx(0.8)  # 2 x 2 / (2 + 3)
    assert M.f1([0, 0, 0], [0, 0, 0]) == 0.0  # no positives at all: zero_division gives 0, not 1
    assert M.average_precision([0, 1, 1], [0.1, 0.9, 0.8]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        M.average_precision([0, 0], [0.1, 0.2])
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


def test_bootstrap_draws_every_unit():
    """The last unit must be drawable: max over resamples of [0, ..., 0, 1] reaches 1 (also within strata)."""
    x = np.array([0.0] * 7 + [1.0])
    _, ci, values = M.bootstrap_ci(np.max, x, n_resamples=400, seed=0)
    assert values.max() == 1.0 and ci[1] == 1.0
    _, _, strat = M.bootstrap_ci(np.max, x, n_resamples=400, seed=0, strata=np.array([0] * 4 + [1] * 3 + [2]))
    assert strat.min() == 1.0  # the 1 is alone in its stratum, so every resample draws it


def test_a_few_failed_resamples_keep_the_ci():
    """About 4 % of resamples of 3 positives in 40 have no positive; the CI comes from the rest."""
    y = np.array([1, 1, 1] + [0] * 37)
    s = np.linspace(1, 0, 40)
    point, ci, values = M.bootstrap_ci(M.auroc, y, s, n_resamples=500, seed=1)
    assert point == pytest.approx(1.0) and ci is not None and 400 < len(values) < 500
    assert M.with_ci(M.auroc, y, s, n_resamples=500, seed=1).ci is not None


def test_unpaired_difference_resamples_each_arm():
    rng = np.random.default_rng(4)
    a = rng.normal(1.0, 1.0, 400)
    b = np.zeros(300)  # constant arm: the CI is the CI of mean(a)
    d = M.difference_ci(a, b, paired=False, n_resamples=1000)
    ref = M.mean_ci(a, n_resamples=1000)
    assert d.value == pytest.approx(a.mean()) and d.n == 700
    assert d.ci[0] == pytest.approx(ref.ci[0], abs=0.03) and d.ci[1] == pytest.approx(ref.ci[1], abs=0.03)
    d2 = M.difference_ci(b, a, paired=False, n_resamples=1000)  # and the other arm's spread when it varies
    assert d2.ci[0] == pytest.approx(-ref.ci[1], abs=0.03) and d2.ci[1] == pytest.approx(-ref.ci[0], abs=0.03)


def test_psnr_default_range_is_max_minus_min():
    t = np.array([2.0, 3.0, 2.5])
    p = t + 0.1
    assert M.psnr(p, t) == pytest.approx(10 * np.log10(1.0 / 0.01))
    assert M.psnr(t, t) == float("inf")


def test_hierarchical_bootstrap_resamples_seeds_then_items():
    rng = np.random.default_rng(5)
    # three runs whose effects differ (training noise) evaluated on many items each
    runs = [(rng.normal(mu, 0.05, 300),) for mu in (0.02, 0.10, 0.18)]
    point, ci, _ = M.hierarchical_bootstrap(np.mean, runs, seed=0)
    assert point == pytest.approx(np.mean([r[0].mean() for r in runs]))
    items_only = M.bootstrap_ci(np.mean, np.concatenate([r[0] for r in runs]), seed=0)[1]
    # seed-level spread dominates: the hierarchical CI is several times the items-only one
    assert (ci[1] - ci[0]) > 4 * (items_only[1] - items_only[0])
    assert ci[0] < 0.05 and ci[1] > 0.15
    seeds_only = M.hierarchical_bootstrap(np.mean, runs, items=False, seed=0)[1]
    assert seeds_only[0] >= min(r[0].mean() for r in runs) - 1e-12
    assert seeds_only[1] <= max(r[0].mean() for r in runs) + 1e-12
    one = M.hierarchical_bootstrap(np.mean, runs[:1], items=False)
    assert one[1] is None
    m = M.seeds_ci(lambda a, b: float(np.mean(a - b)), [(r[0], r[0] - 0.01) for r in runs])
    assert m.value == pytest.approx(0.01) and m.n == 900 and m.ci[0] == pytest.approx(0.01)


def test_hierarchical_bootstrap_draws_every_seed():
    runs = [(np.zeros(5),)] * 4 + [(np.ones(5),)]
    _, _, values = M.hierarchical_bootstrap(np.mean, runs, items=False, n_resamples=300, seed=0)
    assert values.max() > 0.2 and values.min() == 0.0


def test_two_class_cells_and_their_mean():
    rng = np.random.default_rng(6)
    y = np.array([1] * 40 + [0] * 60)
    good = M.two_class_cell(M.auroc, y, y + rng.normal(0, 0.8, 100), seed=0)
    assert not good.degenerate and good.ci[0] < good.value < good.ci[1] and (good.positives, good.negatives) == (40, 60)
    small = M.two_class_cell(M.auroc, np.array([1] * 4 + [0] * 25), np.arange(29.0))
    assert small.degenerate and "4 positives" in small.degenerate and small.ci is None
    one = M.two_class_cell(M.auroc, np.zeros(30), np.arange(30.0))
    assert one.degenerate and one.value is None
    other = M.two_class_cell(M.auroc, y, y + rng.normal(0, 2.0, 100), seed=1)
    mean, ci, used = M.mean_over_cells([good, small, one, other])
    assert used == 2 and mean == pytest.approx((good.value + other.value) / 2)  # degenerate cells left out
    assert ci[0] < mean < ci[1]
    # the mean's CI is narrower than the wider cell's own CI (averaging independent errors)
    assert ci[1] - ci[0] < max(good.ci[1] - good.ci[0], other.ci[1] - other.ci[0])
    assert M.mean_over_cells([small, one]) == (None, None, 0)


Z95 = 1.959964  # standard normal quantile of a two-sided 95 % interval


def _normal_sample(n: int = 400, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.0, n)


def _half_widths(ci, x) -> float:
    """CI width in units of 2 x the standard error of the mean (about 1.96 for a 95 % bootstrap CI)."""
    se = x.std() / np.sqrt(len(x))
    return (ci[1] - ci[0]) / (2 * se)


def test_ci_level_gives_the_normal_quantile_everywhere():
    """Each CI's tail probability (1 - level) / 2: a 95 % CI of a mean spans +-1.96 SE (to 4 %)."""
    x = _normal_sample()
    assert _half_widths(M.bootstrap_ci(np.mean, x, n_resamples=20000)[1], x) == pytest.approx(Z95, rel=0.04)
    h = M.hierarchical_bootstrap(np.mean, [(x,)], n_resamples=20000)[1]
    assert _half_widths(h, x) == pytest.approx(Z95, rel=0.04)
    d = M.difference_ci(x, np.full(300, 0.5), paired=False, n_resamples=20000)
    assert d.value == pytest.approx(x.mean() - 0.5) and _half_widths(d.ci, x) == pytest.approx(Z95, rel=0.04)
    cell = M.Cell(0.0, None, np.random.default_rng(1).normal(0, 1, 20000), 50, 50)
    _, ci, _ = M.mean_over_cells([cell])
    assert (ci[1] - ci[0]) / 2 == pytest.approx(Z95, rel=0.04)


class _FailEveryOther:
    """A metric that raises on every second resample (after the point estimate): exactly half finite."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *arrays):
        self.calls += 1
        if self.calls > 1 and self.calls % 2 == 0:
            raise ValueError("degenerate resample")
        return float(np.mean(arrays[0]))


class _FailThreeInFive(_FailEveryOther):
    """40 % of resamples finite: fewer than half."""

    def __call__(self, *arrays):
        self.calls += 1
        if self.calls > 1 and (self.calls - 2) % 5 >= 2:
            raise ValueError("degenerate resample")
        return float(np.mean(arrays[0]))


def test_a_ci_needs_at_least_half_the_resamples_finite():
    x = _normal_sample(50)
    _, ci, values = M.bootstrap_ci(_FailEveryOther(), x, n_resamples=40)
    assert len(values) == 20 and ci is not None
    _, hci, hvalues = M.hierarchical_bootstrap(_FailEveryOther(), [(x,)], n_resamples=40)
    assert len(hvalues) == 20 and hci is not None
    _, ci, values = M.bootstrap_ci(_FailThreeInFive(), x, n_resamples=40)
    assert len(values) == 16 and ci is None
    _, hci, hvalues = M.hierarchical_bootstrap(_FailThreeInFive(), [(x,)], n_resamples=40)
    assert len(hvalues) == 16 and hci is None


def test_smallest_samples():
    assert M.bootstrap_ci(np.mean, np.array([1.0, 2.0]))[1] is not None  # two units: a CI
    assert M.bootstrap_ci(np.mean, np.array([1.0]))[1] is None  # one unit: none
    two_seeds = [(np.array([0.1]),), (np.array([0.3]),)]
    assert M.hierarchical_bootstrap(np.mean, two_seeds, items=False)[1] is not None
    first = np.array([1.0] + [0.0] * 7)  # the first unit must be drawable too
    assert M.bootstrap_ci(np.max, first, n_resamples=300)[2].max() == 1.0
    assert M.hierarchical_bootstrap(np.max, [(first,)], n_resamples=300)[2].max() == 1.0


def test_undefined_and_failing_metrics_keep_n_and_say_why():
    with pytest.warns(RuntimeWarning):
        empty = M.mean_ci([])
    assert empty.value is None and empty.note == "undefined" and empty.n == 0

    def bad(v):
        raise ValueError("cannot score this")

    m = M.with_ci(bad, np.arange(3.0))
    assert m.value is None and m.n == 3 and m.note == "cannot score this"
    assert M.mean_ci([1.0, 2.0]).higher_is_better is True


def test_hierarchical_defaults_and_single_arrays():
    rng = np.random.default_rng(8)
    runs = [(rng.normal(0.5, 1.0, 100),) for _ in range(3)]
    assert (
        M.hierarchical_bootstrap(np.mean, runs, seed=2)[1]
        == M.hierarchical_bootstrap(np.mean, runs, items=True, seed=2)[1]
    )
    m = M.seeds_ci(np.mean, runs, seed=2)
    assert m.n == 300 and m.higher_is_better is True
    assert m.ci == M.hierarchical_bootstrap(np.mean, runs, items=True, seed=2)[1]


def test_class_count_boundary_and_mean_over_uneven_cells():
    rng = np.random.default_rng(9)
    y20 = np.array([1] * 20 + [0] * 20)
    assert not M.two_class_cell(M.auroc, y20, y20 + rng.normal(0, 1, 40), n_resamples=100).degenerate
    y19 = np.array([1] * 19 + [0] * 40)
    assert M.two_class_cell(M.auroc, y19, rng.normal(0, 1, 59)).degenerate
    c = M.two_class_cell(M.auroc, np.array([1] * 25 + [0] * 35), rng.normal(0, 1, 60), n_resamples=50)
    assert (c.positives, c.negatives) == (25, 35)
    a = M.Cell(0.6, (0.5, 0.7), rng.normal(0.6, 0.05, 300), 30, 30)
    b = M.Cell(0.7, (0.6, 0.8), rng.normal(0.7, 0.05, 200), 30, 30)  # fewer finite resamples
    mean, ci, used = M.mean_over_cells([a, b])
    assert used == 2 and mean == pytest.approx(0.65) and ci[0] < 0.65 < ci[1]
    two = M.Cell(0.6, None, np.array([0.5, 0.7]), 30, 30)
    assert M.mean_over_cells([two])[1] is not None
    one = M.Cell(0.6, None, np.array([0.5]), 30, 30)
    assert M.mean_over_cells([one]) == (0.6, None, 1)


def test_auroc_equals_sklearn_with_ties_and_label_types():
    from sklearn.metrics import roc_auc_score

    from medfm.core.metrics import auroc

    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 50)
        s = rng.integers(0, 6, 50).astype(float)  # many ties
        if y.min() == y.max():
            continue
        assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert auroc(y.astype(bool), s) == pytest.approx(roc_auc_score(y.astype(bool), s), abs=1e-12)
    with pytest.raises(ValueError):
        auroc([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(ValueError):
        auroc([1, 1], [0.1, 0.2])
