"""Per-label decision thresholds tuned on a validation split.

The 163 leaf-with-status labels are mostly rare; one sigmoid cut of 0.5 for all of them leaves a weighted-loss
model over-predicting frequent labels and an unweighted one never predicting rare ones. Each label with enough
validation positives gets the cut that maximises its own F1 on validation; the others keep the default.
Numpy only.
"""

from __future__ import annotations

import numpy as np

#: Candidate cuts (sigmoid probability).
GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)


def label_f1(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-column F1 of multi-hot ``(N, L)`` matrices: 2 TP / (|true| + |pred|); 0 where both are empty."""
    tp = (y_true * y_pred).sum(axis=0).astype(np.float64)
    denom = (y_true.sum(axis=0) + y_pred.sum(axis=0)).astype(np.float64)
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def micro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Micro F1 of multi-hot matrices (scikit-learn's ``f1_score(average="micro", zero_division=0)``)."""
    denom = float(y_true.sum() + y_pred.sum())
    return 2.0 * float((y_true * y_pred).sum()) / denom if denom else 0.0


def tune_thresholds(proba: np.ndarray, targets: np.ndarray, default: float = 0.5, min_positives: int = 5,
                    grid: np.ndarray = GRID) -> np.ndarray:  # fmt: skip
    """One threshold per label ``(L,)`` float32.

    Args:
        proba: validation probabilities ``(N, L)``.
        targets: validation multi-hot ``(N, L)`` (0/1).
        default: the cut of labels with fewer than ``min_positives`` validation positives (too few to tune on).
        min_positives: see ``default``.
        grid: candidate cuts; ties go to the cut nearest ``default``.
    """
    targets = np.asarray(targets) > 0
    out = np.full(proba.shape[1], default, np.float32)
    order = np.argsort(np.abs(grid - default), kind="stable")  # nearest-to-default first wins ties
    for j in np.flatnonzero(targets.sum(axis=0) >= min_positives):
        f1 = np.array([label_f1(targets[:, [j]], proba[:, [j]] > grid[i])[0] for i in order])
        out[j] = grid[order[int(np.argmax(f1))]]
    return out
