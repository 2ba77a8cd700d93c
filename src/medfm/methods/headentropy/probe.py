"""Probes and scores on extracted features: sparse logistic regression, training-free scores, AUROC with CIs,
paired comparisons and the in-domain / out-of-domain transfer matrix (spec A, 1.5-1.7).

Trained probes are ``StandardScaler`` (fit on the train split) then ``LogisticRegression(penalty="l1",
solver="liblinear", C, max_iter=10000, random_state=42)``; C = 1 for Head Entropy and 0.1 for the trained
baselines (the repo's defaults), or, with ``c_grid``, C chosen for every probe alike by stratified 5-fold
inner cross-validation (AUROC) on the train split, so no method gets a better-tuned probe than another.
Transfer applies the *frozen* scaler and classifier to every item of another dataset (none of them was
seen in training). Scores are oriented so that higher means "predicted correct"; the positive class is a
correct answer.

Confound scorers (``answer_length``, ``format``) are one-feature probes on the answer's length in tokens and
on whether the generation kept the two-line format: a signal that only beats them is a length/format
detector, not a correctness one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from medfm.core.metrics import auroc, average_precision, with_ci
from medfm.core.results import Metric

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scorer:
    """One way to turn an item's features into a correctness score.

    Attributes:
        name: method name in tables.
        feature: key of the feature array it reads.
        trained: L1 logistic-regression probe (True) or a training-free score (False).
        C: inverse L1 strength of the probe.
        sign: training-free orientation: score = sign * (mean over the vector, or the scalar).
        label: human-readable description.
    """

    name: str
    feature: str
    trained: bool
    C: float = 1.0
    sign: float = 1.0
    label: str = ""


SCORERS: dict[str, Scorer] = {
    s.name: s
    for s in (
        Scorer("head_entropy", "he_answer", True, 1.0, label="Head Entropy (H2, answer span), L1-LR C=1"),
        Scorer("head_entropy_pregen", "he_question", True, 1.0, label="Head Entropy, question span (pre-generation)"),
        Scorer("trace_jacobian", "tj_answer", True, 1.0, label="1 - sum a^2 (answer span), L1-LR C=1"),
        Scorer("lookback_ratio", "lookback", True, 0.1, label="Lookback-Lens ratio, L1-LR C=0.1"),
        Scorer("hidden_state", "hidden", True, 0.1, label="last-layer hidden-state probe, L1-LR C=0.1"),
        Scorer("mean_head_entropy", "he_answer", False, sign=-1.0, label="training-free -mean(H2)"),
        Scorer("mean_head_entropy_pregen", "he_question", False, sign=-1.0, label="training-free -mean(H2), question"),
        Scorer("attn_score", "attn_score", False, sign=1.0, label="LLM-Check attention score (as computed)"),
        Scorer("token_prob", "token_prob", False, sign=1.0, label="mean answer-token probability"),
        Scorer("token_entropy", "token_entropy", False, sign=-1.0, label="-mean answer-token entropy"),
        Scorer("certainty", "certainty", False, sign=1.0, label="verbalised certainty (missing -> mean)"),
        Scorer("answer_length", "answer_length", True, 1.0, label="confound: answer length in tokens, 1-feature LR"),
        Scorer("format", "format_ok", True, 1.0, label="confound: two-line format kept, 1-feature LR"),
    )
}
C_GRID = (1e-3, 1e-2, 0.1, 0.5, 1.0, 2.0, 4.0)  # the repo's C-ablation grid plus its defaults
DEFAULT_SCORERS = tuple(SCORERS)


def _as_matrix(x: Any) -> np.ndarray:
    """``(N, F)`` float64 with NaN -> 0; a scalar feature ``(N,)`` becomes ``(N, 1)``."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64))
    return x[:, None] if x.ndim == 1 else x


def fit_probe(x: Any, y: Any, C: float = 1.0, random_state: int = 42, c_grid: tuple[float, ...] | None = None,
              folds: int = 5) -> Any:  # fmt: skip
    """StandardScaler + L1 logistic regression (liblinear) fit on ``x`` ``(N, F)`` (or ``(N,)``) and labels ``y``.

    With ``c_grid``, C is the grid value of best mean AUROC under stratified ``folds``-fold cross-validation
    on ``(x, y)`` (ties to the smaller C), then the probe is refit on all of ``(x, y)``; ``C`` is ignored.

    Raises:
        ValueError: ``y`` has a single class.
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(y).astype(int)
    if len(np.unique(y)) < 2:
        raise ValueError("the training split has a single class; a probe needs correct and incorrect answers")
    x = _as_matrix(x)
    if c_grid:
        C = select_c(x, y, c_grid, folds, random_state)
    pipe = make_pipeline(StandardScaler(), _l1_logistic_regression(C, random_state))
    return pipe.fit(x, y)


def select_c(x: np.ndarray, y: np.ndarray, c_grid: tuple[float, ...], folds: int = 5, random_state: int = 42) -> float:
    """The C of ``c_grid`` with the best mean validation AUROC over stratified folds (scikit-learn's
    ``GridSearchCV``; ties go to the smaller C; fewer folds when a class is smaller than ``folds``, the smallest C
    when no fold can be formed)."""
    import warnings

    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    k = min(folds, int(np.bincount(y, minlength=2).min()))
    if k < 2:
        return float(min(c_grid))
    pipe = Pipeline([("scale", StandardScaler()), ("lr", _l1_logistic_regression(1.0, random_state))])
    search = GridSearchCV(pipe, {"lr__C": sorted(c_grid)}, scoring="roc_auc", refit=False,
                          cv=StratifiedKFold(k, shuffle=True, random_state=random_state))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # liblinear convergence notes on the sparsest C
        search.fit(x, y)
    return float(search.best_params_["lr__C"])


def _l1_logistic_regression(C: float, random_state: int = 42) -> Any:
    """``LogisticRegression`` with an L1 penalty and liblinear (``l1_ratio=1`` from scikit-learn 1.8 on)."""
    import sklearn
    from sklearn.linear_model import LogisticRegression

    major, minor = (int(x) for x in sklearn.__version__.split(".")[:2])
    l1 = {"l1_ratio": 1.0} if (major, minor) >= (1, 8) else {"penalty": "l1"}
    return LogisticRegression(solver="liblinear", C=C, max_iter=10000, random_state=random_state, **l1)


def probe_score(probe: Any, x: Any) -> np.ndarray:
    """Probability of "correct" under a fitted probe for ``x`` ``(N, F)``."""
    return probe.predict_proba(_as_matrix(x))[:, 1]


def probe_to_dict(probe: Any) -> dict[str, Any]:
    """JSON-able parameters of a fitted probe (scaler mean/scale, coefficients, intercept)."""
    scaler, lr = probe[0], probe[-1]
    return {"mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(), "coef": lr.coef_[0].tolist(),
            "intercept": float(lr.intercept_[0]), "C": float(lr.C)}  # fmt: skip


def probe_from_dict(d: dict[str, Any]) -> Any:
    """Rebuild a probe saved with :func:`probe_to_dict` (predicts exactly as the original)."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    scaler.mean_ = np.asarray(d["mean"], dtype=np.float64)
    scaler.scale_ = np.asarray(d["scale"], dtype=np.float64)
    scaler.var_ = scaler.scale_**2
    scaler.n_features_in_ = len(scaler.mean_)
    lr = _l1_logistic_regression(d.get("C", 1.0))
    lr.coef_ = np.asarray([d["coef"]], dtype=np.float64)
    lr.intercept_ = np.asarray([d["intercept"]], dtype=np.float64)
    lr.classes_ = np.array([0, 1])
    lr.n_features_in_ = lr.coef_.shape[1]
    return make_pipeline(scaler, lr)


def training_free_score(values: Any, sign: float = -1.0) -> np.ndarray:
    """``sign * mean`` over the last axis of ``(N, F)`` (or ``sign * value`` for ``(N,)``); NaN -> mean of the rest."""
    v = np.asarray(values, dtype=np.float64)
    s = sign * (v.mean(axis=1) if v.ndim == 2 else v)
    if np.isnan(s).any():
        fill = np.nanmean(s) if np.isfinite(s).any() else 0.0
        s = np.where(np.isnan(s), fill, s)
    return s


def auroc_metrics(y: Any, score: Any, seed: int = 0, n_resamples: int = 1000) -> dict[str, Metric]:
    """AUROC and PR-AUC (positive = correct) with percentile-bootstrap 95 % CIs over items."""
    y, score = np.asarray(y).astype(int), np.asarray(score, dtype=np.float64)
    return {
        "auroc": with_ci(auroc, y, score, seed=seed, n_resamples=n_resamples),
        "pr_auc": with_ci(average_precision, y, score, seed=seed, n_resamples=n_resamples),
    }


def paired_auroc_difference(y: Any, score_a: Any, score_b: Any, seed: int = 0, n_resamples: int = 1000) -> Metric:
    """AUROC(a) - AUROC(b) on the same items with a paired bootstrap CI (items resampled jointly)."""
    y = np.asarray(y).astype(int)
    return with_ci(lambda t, a, b: auroc(t, a) - auroc(t, b), y, np.asarray(score_a, float), np.asarray(score_b, float),
                   seed=seed, n_resamples=n_resamples, note="paired bootstrap over items")  # fmt: skip


def split_indices(y: Any, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test indices (stratification dropped when a class has fewer than 2 items)."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(y).astype(int)
    idx = np.arange(len(y))
    strat = y if np.bincount(y, minlength=2).min() >= 2 else None
    tr, te = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=strat)
    return np.sort(tr), np.sort(te)


@dataclass
class Domain:
    """Features and labels of one dataset with its train/test split.

    With ``crossfit = k > 1`` (see :func:`crossfit_domain`) train and test are every item: in-domain scores
    are out-of-fold (k stratified folds, each scored by probes fit on the other k - 1), and the probe that
    transfers to other domains is fit on all items.
    """

    name: str
    arrays: dict[str, np.ndarray]
    y: np.ndarray
    train: np.ndarray
    test: np.ndarray
    crossfit: int = 0


def crossfit_domain(domain: Domain, k: int = 5) -> Domain:
    """The same items evaluated by ``k``-fold cross-fitting instead of one train/test split."""
    every = np.arange(len(domain.y))
    return Domain(domain.name, domain.arrays, domain.y, every, every, crossfit=k)


def out_of_fold_scores(domain: Domain, scorer: Scorer, c_grid: tuple[float, ...] | None = None,
                       random_state: int = 42) -> np.ndarray | None:  # fmt: skip
    """Scores of every item of ``domain`` from probes fit on the other folds (stratified ``domain.crossfit``
    folds, fewer when a class is smaller); None when a fold's training part has a single class."""
    from sklearn.model_selection import StratifiedKFold

    y = domain.y.astype(int)
    x = domain.arrays[scorer.feature]
    k = min(domain.crossfit, int(np.bincount(y, minlength=2).min()))
    if k < 2:
        return None
    out = np.empty(len(y))
    for tr, te in StratifiedKFold(k, shuffle=True, random_state=random_state).split(np.zeros(len(y)), y):
        try:
            probe = fit_probe(x[tr], y[tr], C=scorer.C, c_grid=c_grid)
        except ValueError:
            return None
        out[te] = probe_score(probe, x[te])
    return out


def fit_scorers(domain: Domain, scorers: list[Scorer], c_grid: tuple[float, ...] | None = None) -> dict[str, Any]:
    """Fit every trained scorer on ``domain``'s train split (C by inner CV on ``c_grid`` when given, else the
    scorer's own); value None (with a logged reason) when impossible."""
    probes: dict[str, Any] = {}
    for s in scorers:
        if not s.trained:
            continue
        try:
            probes[s.name] = fit_probe(domain.arrays[s.feature][domain.train], domain.y[domain.train], C=s.C,
                                       c_grid=c_grid)  # fmt: skip
        except ValueError as exc:
            log.warning("%s on %s: %s", s.name, domain.name, exc)
            probes[s.name] = None
    return probes


def score_items(scorer: Scorer, probe: Any, arrays: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray | None:
    """Scores of items ``idx`` under a scorer (its fitted probe for trained ones); None when the probe is missing."""
    x = arrays[scorer.feature][idx]
    if scorer.trained:
        return None if probe is None else probe_score(probe, x)
    return training_free_score(x, scorer.sign)


def eval_indices(src: Domain, dst: Domain) -> np.ndarray:
    """Items a probe trained on ``src`` is scored on in ``dst``: the test split in-domain, every item otherwise."""
    return dst.test if src.name == dst.name else np.arange(len(dst.y))


def transfer_matrix(domains: list[Domain], scorers: list[Scorer], seed: int = 0, n_resamples: int = 1000,
                    reference: str = "lookback_ratio", c_grid: tuple[float, ...] | None = None,
                    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """In-domain and out-of-domain AUROC of every scorer for every (train, test) pair of domains.

    Trained scorers are fit on the train split of the train domain (C by inner CV on ``c_grid`` when given)
    and applied frozen to the test split of the same domain or to *every* item of another domain
    (:func:`eval_indices`); a cross-fitted domain (:func:`crossfit_domain`) is scored in-domain out of fold.
    Training-free scorers do not depend on the train domain (only diagonal rows).
    Each row also has the paired AUROC difference to ``reference`` (same items) with its bootstrap CI.

    Returns:
        ``(rows, extras)``: rows ``{train, test, method, in_domain, auroc, auroc_lo, auroc_hi, pr_auc, n,
        prevalence, diff_vs_ref, diff_lo, diff_hi}``; extras: ``probes`` (name -> domain -> probe) and
        ``scores`` ((method, train, test) -> (y, score)) for plots.
    """
    probes = {d.name: fit_scorers(d, scorers, c_grid) for d in domains}
    rows: list[dict[str, Any]] = []
    scores: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
    by_name = {s.name: s for s in scorers}
    for src in domains:
        for dst in domains:
            idx = eval_indices(src, dst)
            y = dst.y[idx]
            cell: dict[str, np.ndarray] = {}
            for s in scorers:
                if not s.trained and src.name != dst.name:
                    continue
                if s.trained and src is dst and src.crossfit > 1:
                    sc = out_of_fold_scores(src, s, c_grid)
                else:
                    sc = score_items(s, probes[src.name].get(s.name), dst.arrays, idx)
                if sc is not None:
                    cell[s.name] = sc
            for name, sc in cell.items():
                m = auroc_metrics(y, sc, seed=seed, n_resamples=n_resamples)
                row = {"train": src.name, "test": dst.name, "method": name, "in_domain": src.name == dst.name,
                       "trained": by_name[name].trained, "auroc": m["auroc"].value,
                       "auroc_lo": m["auroc"].ci[0] if m["auroc"].ci else None,
                       "auroc_hi": m["auroc"].ci[1] if m["auroc"].ci else None,
                       "pr_auc": m["pr_auc"].value, "n": len(y), "prevalence": float(np.mean(y))}  # fmt: skip
                probe = probes[src.name].get(name)
                if probe is not None:
                    row["C"] = float(probe[-1].C)
                ref = cell.get(reference)
                if ref is not None and name != reference:
                    d = paired_auroc_difference(y, sc, ref, seed=seed, n_resamples=n_resamples)
                    row.update(diff_vs_ref=d.value, diff_lo=d.ci[0] if d.ci else None,
                               diff_hi=d.ci[1] if d.ci else None)  # fmt: skip
                rows.append(row)
                scores[(name, src.name, dst.name)] = (y, sc)
    return rows, {"probes": probes, "scores": scores}
