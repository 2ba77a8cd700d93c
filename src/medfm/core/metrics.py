"""Metrics with bootstrap confidence intervals.

All functions take NumPy-compatible arrays over *units* (studies, volumes, questions): the bootstrap
resamples units with replacement, which is the right unit of uncertainty when items are independent.
Classification metrics wrap scikit-learn; segmentation metrics take boolean masks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medfm.core.results import Metric


def bootstrap_ci(
    metric: Callable[..., float],
    *arrays: Any,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    strata: Any = None,
) -> tuple[float, tuple[float, float] | None, np.ndarray]:
    """Percentile bootstrap of ``metric(*arrays)`` over the first axis.

    Args:
        metric: function of the (resampled) arrays returning a scalar; may raise ValueError or return NaN
            on a degenerate resample (e.g. one class for AUROC), which is then skipped.
        arrays: equally long arrays, resampled together by the same row indices.
        n_resamples: number of bootstrap resamples.
        level: two-sided coverage, e.g. 0.95.
        seed: RNG seed (results are deterministic for a given seed).
        strata: optional labels; resampling is done within each stratum (keeps class balance).

    Returns:
        ``(point, (low, high) or None, resampled_values)``; the CI is None when fewer than half the
        resamples gave a finite value.
    """
    arrs = [np.asarray(a) for a in arrays]
    n = len(arrs[0])
    if any(len(a) != n for a in arrs):
        raise ValueError(f"bootstrap arrays differ in length: {[len(a) for a in arrs]}")
    point = float(metric(*arrs))
    if n < 2:
        return point, None, np.array([])
    rng = np.random.default_rng(seed)
    if strata is None:
        idx = rng.integers(0, n, size=(n_resamples, n))
    else:
        strata = np.asarray(strata)
        parts = []
        for s in np.unique(strata):
            members = np.flatnonzero(strata == s)
            parts.append(members[rng.integers(0, len(members), size=(n_resamples, len(members)))])
        idx = np.concatenate(parts, axis=1)
    values = np.empty(n_resamples)
    for b in range(n_resamples):
        try:
            values[b] = metric(*(a[idx[b]] for a in arrs))
        except ValueError:
            values[b] = np.nan
    finite = values[np.isfinite(values)]
    if len(finite) < n_resamples / 2:
        return point, None, finite
    alpha = (1 - level) / 2
    lo, hi = np.quantile(finite, [alpha, 1 - alpha])
    return point, (float(lo), float(hi)), finite


def with_ci(
    metric: Callable[..., float],
    *arrays: Any,
    higher_is_better: bool = True,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    strata: Any = None,
    note: str = "",
) -> Metric:
    """A :class:`Metric` holding the point value, its bootstrap CI and n."""
    try:
        point, ci, _ = bootstrap_ci(metric, *arrays, n_resamples=n_resamples, level=level, seed=seed, strata=strata)
    except ValueError as exc:
        return Metric(value=None, n=len(arrays[0]), higher_is_better=higher_is_better, note=str(exc))
    if not np.isfinite(point):
        return Metric(value=None, n=len(arrays[0]), higher_is_better=higher_is_better, note=note or "undefined")
    return Metric(value=point, ci=ci, n=len(arrays[0]), higher_is_better=higher_is_better, ci_level=level, note=note)


def mean_ci(values: Sequence[float], **kwargs: Any) -> Metric:
    """Mean of per-unit values with a bootstrap CI (e.g. per-volume Dice, per-question correctness)."""
    return with_ci(lambda v: float(np.mean(v)), np.asarray(values, dtype=float), **kwargs)


def difference_ci(a: Sequence[float], b: Sequence[float], paired: bool = True, **kwargs: Any) -> Metric:
    """Mean(a) - mean(b) with a bootstrap CI; paired resamples the same units for both."""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if paired:
        return with_ci(lambda x, y: float(np.mean(x) - np.mean(y)), a_arr, b_arr, **kwargs)
    seed = kwargs.pop("seed", 0)
    n_resamples = kwargs.pop("n_resamples", 1000)
    level = kwargs.pop("level", 0.95)
    rng = np.random.default_rng(seed)
    diffs = np.array(
        [rng.choice(a_arr, len(a_arr)).mean() - rng.choice(b_arr, len(b_arr)).mean() for _ in range(n_resamples)]
    )
    alpha = (1 - level) / 2
    lo, hi = np.quantile(diffs, [alpha, 1 - alpha])
    return Metric(
        value=float(a_arr.mean() - b_arr.mean()),
        ci=(float(lo), float(hi)),
        n=len(a_arr) + len(b_arr),
        ci_level=level,
        **kwargs,
    )


def hierarchical_bootstrap(
    statistic: Callable[..., float],
    per_seed: Sequence[Sequence[Any]],
    *,
    items: bool = True,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, tuple[float, float] | None, np.ndarray]:
    """Seeds-then-items percentile bootstrap of the seed-averaged ``statistic``.

    Training noise lives between runs, so an effect of training is resampled over runs (seeds) first,
    then over the items each run was evaluated on.

    Args:
        statistic: function of one seed's (resampled) arrays returning a scalar, e.g. a paired mean
            difference ``lambda a, b: np.mean(a - b)`` or ``auroc``; a ValueError or NaN on a resample
            skips that resample.
        per_seed: one entry per seed (training run), each a tuple of equally long arrays over items.
        items: also resample items within each drawn seed (``seeds×items``); False resamples seeds only.
        n_resamples, level, seed: as in :func:`bootstrap_ci`.

    Returns:
        ``(point, (low, high) or None, resampled_values)``: the point is the mean over seeds of the
        statistic on each seed's full data; the CI is None with one seed and items=False, or when
        fewer than half the resamples gave a finite value.
    """
    runs = [tuple(np.asarray(a) for a in (arrs if isinstance(arrs, tuple | list) else (arrs,))) for arrs in per_seed]
    if not runs:
        raise ValueError("hierarchical_bootstrap needs at least one seed")
    point = float(np.mean([statistic(*r) for r in runs]))
    s = len(runs)
    if s < 2 and not items:
        return point, None, np.array([])
    rng = np.random.default_rng(seed)
    values = np.empty(n_resamples)
    for b in range(n_resamples):
        drawn = rng.integers(0, s, size=s)
        stats = []
        try:
            for k in drawn:
                r = runs[k]
                if items:
                    idx = rng.integers(0, len(r[0]), size=len(r[0]))
                    stats.append(statistic(*(a[idx] for a in r)))
                else:
                    stats.append(statistic(*r))
            values[b] = float(np.mean(stats))
        except ValueError:
            values[b] = np.nan
    finite = values[np.isfinite(values)]
    if len(finite) < n_resamples / 2:
        return point, None, finite
    alpha = (1 - level) / 2
    lo, hi = np.quantile(finite, [alpha, 1 - alpha])
    return point, (float(lo), float(hi)), finite


def seeds_ci(
    statistic: Callable[..., float],
    per_seed: Sequence[Sequence[Any]],
    *,
    items: bool = True,
    higher_is_better: bool = True,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    note: str = "",
) -> Metric:
    """A :class:`Metric` from :func:`hierarchical_bootstrap`; ``n`` counts items summed over seeds."""
    point, ci, _ = hierarchical_bootstrap(
        statistic, per_seed, items=items, n_resamples=n_resamples, level=level, seed=seed
    )
    n_items = sum(len(r[0]) if isinstance(r, tuple | list) else len(r) for r in per_seed)
    return Metric(value=point, ci=ci, n=n_items, higher_is_better=higher_is_better, ci_level=level, note=note)


# -- two-class cells and means over cells -------------------------------------------------------------------------------

#: Below this many positives or negatives a two-class cell (AUROC, AP) is degenerate: never averaged.
MIN_CLASS_COUNT = 20


@dataclass
class Cell:
    """One two-class evaluation cell (a domain, a transfer pair, a finding).

    Attributes:
        value: the metric on the cell's items (None when undefined).
        ci: its bootstrap CI.
        resamples: the bootstrap values behind ``ci`` (used to put a CI on a mean over cells).
        positives / negatives: class counts.
        degenerate: why the cell must not be used ("" when it is usable).
    """

    value: float | None
    ci: tuple[float, float] | None
    resamples: np.ndarray
    positives: int
    negatives: int
    degenerate: str = ""


def two_class_cell(
    metric: Callable[..., float],
    y_true: Any,
    *scores: Any,
    min_class: int = MIN_CLASS_COUNT,
    n_resamples: int = 1000,
    seed: int = 0,
) -> Cell:
    """Evaluate ``metric(y_true, *scores)`` on one cell, marked degenerate below ``min_class`` of a class.

    Resampling is stratified by class, so every resample has both classes and the cell's class balance.
    A paired difference of two scores is ``two_class_cell(lambda y, a, b: auroc(y, a) - auroc(y, b), y, a, b)``.
    """
    y = np.asarray(y_true).astype(int)
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    if min(pos, neg) < min_class:
        value = None
        if pos and neg:
            value = float(metric(y, *scores))
        why = f"{pos} positives / {neg} negatives (< {min_class} of a class)"
        return Cell(value, None, np.array([]), pos, neg, why)
    point, ci, res = bootstrap_ci(metric, y, *scores, n_resamples=n_resamples, seed=seed, strata=y)
    return Cell(point, ci, res, pos, neg, "" if ci is not None else "no finite resamples")


def mean_over_cells(cells: Sequence[Cell], level: float = 0.95) -> tuple[float | None, tuple[float, float] | None, int]:
    """Mean of the usable cells' values with a CI from their (independent) bootstrap distributions.

    Degenerate cells are left out. The b-th resample of the mean is the mean of the cells' b-th
    resamples, so the CI reflects every cell's own uncertainty.

    Returns:
        ``(mean or None, CI or None, number of cells used)``.
    """
    used = [c for c in cells if not c.degenerate and c.value is not None]
    if not used:
        return None, None, 0
    mean = float(np.mean([c.value for c in used]))
    k = min(len(c.resamples) for c in used)
    if k < 2:
        return mean, None, len(used)
    stacked = np.stack([c.resamples[:k] for c in used])
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stacked.mean(axis=0), [alpha, 1 - alpha])
    return mean, (float(lo), float(hi)), len(used)


# -- classification (scikit-learn) -------------------------------------------------------------------------------------


def auroc(y_true: Any, y_score: Any) -> float:
    """Area under the ROC curve (positive class = the larger label); ValueError with a single class, more
    than two classes, or a non-finite score.

    Computed as the Mann-Whitney statistic on mid-ranks, which equals scikit-learn's ``roc_auc_score`` ties
    included (tested) at a fraction of its per-call overhead: bootstrap CIs call it thousands of times.
    """
    from scipy.stats import rankdata

    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=np.float64)
    classes = np.unique(y_true)
    if len(classes) < 2:
        raise ValueError("AUROC is undefined with a single class")
    if len(classes) > 2:
        raise ValueError(f"AUROC needs two classes, got {len(classes)}")
    if y_score.shape != y_true.shape or not np.isfinite(y_score).all():
        raise ValueError("AUROC needs one finite score per label")
    pos = y_true == classes[1]
    n1, n0 = int(pos.sum()), int((~pos).sum())
    ranks = rankdata(y_score)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def average_precision(y_true: Any, y_score: Any) -> float:
    from sklearn.metrics import average_precision_score

    y_true = np.asarray(y_true)
    if y_true.sum() == 0:
        raise ValueError("average precision is undefined without positives")
    return float(average_precision_score(y_true, y_score))


def f1(y_true: Any, y_pred: Any, average: str = "binary") -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average=average, zero_division=0))


def accuracy(y_true: Any, y_pred: Any) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


# -- segmentation ------------------------------------------------------------------------------------------------------


def dice(pred: Any, target: Any, empty: float = 1.0) -> float:
    """Dice of two boolean masks of any shape; ``empty`` when both are empty."""
    p, t = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    denom = p.sum() + t.sum()
    return float(empty) if denom == 0 else float(2.0 * np.logical_and(p, t).sum() / denom)


def psnr(pred: Any, target: Any, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB; ``data_range`` defaults to the target's max - min."""
    p, t = np.asarray(pred, dtype=float), np.asarray(target, dtype=float)
    rng = float(t.max() - t.min()) if data_range is None else float(data_range)
    mse = float(np.mean((p - t) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(rng**2 / mse))
