"""RadDiffBench protocol: Acc@k of the final ranking and of each refinement iteration, summarised over pairs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from medfm.core.results import Results
from medfm.methods.raddiff.protocol import accuracy_at_k, summarise


class _Judge:
    """Scores 2 (of 2) for a hypothesis naming the ground truth of set A, else 0."""

    def scores(self, texts, gt_a, gt_b):
        return [2 if gt_a in t else 0 for t in texts]


def _h(text):
    return SimpleNamespace(text=text)


def test_accuracy_at_k_per_iteration_and_final():
    result = SimpleNamespace(
        iterations=[SimpleNamespace(iteration=0, ranked=[_h("nodule"), _h("effusion")]),
                    SimpleNamespace(iteration=1, ranked=[_h("effusion"), _h("nodule")])],
        final=[_h("effusion"), _h("nodule")],
    )  # fmt: skip
    row = accuracy_at_k(result, _Judge(), [1, 2], "effusion", "")
    assert row == {"acc@1_iter0": 0.0, "acc@2_iter0": 1.0, "acc@1_iter1": 1.0, "acc@2_iter1": 1.0,
                   "acc@1": 1.0, "acc@2": 1.0}  # fmt: skip


def test_summary_over_pairs_by_difficulty_and_iteration_change():
    rows = [
        {
            "difficulty": "easy",
            "acc@1": 1.0,
            "acc@1_iter0": 0.0,
            "acc@1_iter1": 1.0,
            "gt_auroc": 0.9,
            "top1_auroc": 0.8,
        },
        {
            "difficulty": "easy",
            "acc@1": 1.0,
            "acc@1_iter0": 1.0,
            "acc@1_iter1": 1.0,
            "gt_auroc": 0.7,
            "top1_auroc": 0.8,
        },
        {
            "difficulty": "hard",
            "acc@1": 0.0,
            "acc@1_iter0": 1.0,
            "acc@1_iter1": 0.0,
            "gt_auroc": None,
            "top1_auroc": 0.6,
        },
    ]
    res = Results(method="raddiff", verb="evaluate")
    summarise(rows, [1], res, bootstrap=50, seed=0)
    assert res.metrics["acc@1"].value == pytest.approx(2 / 3)
    assert res.groups["difficulty=easy"]["acc@1"].value == 1.0 and res.groups["difficulty=hard"]["acc@1"].value == 0
    assert res.metrics["ground_truth_top_fraction"].value == pytest.approx(0.5)
    assert res.meta["acc@1_iteration_change"] == {"increase": 1, "same": 1, "decrease": 1}
