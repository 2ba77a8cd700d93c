"""RadDiffBench evaluation protocol (RadDiff §4): Acc@k per pair and its summary over pairs.

Per pair, the judge scores the ranked hypotheses against the ground-truth difference; Acc@k is the judge's best
score among the top k (:func:`~medfm.methods.raddiff.evaluator.acc_at_k`), for the final ranking and for each
refinement iteration. Over pairs: the mean Acc@k with bootstrap CIs, overall and per difficulty, the ranker's
ceiling (how the ground-truth description itself ranks) and how often refinement raised or lowered Acc@k.
"""

from __future__ import annotations

from typing import Any


def accuracy_at_k(result: Any, judge: Any, ks: list[int], gt_a: str, gt_b: str) -> dict[str, float]:
    """``{"acc@k_iter<i>": ..., "acc@k": ...}`` for one pair's pipeline ``result`` (iterations and final ranking)."""
    from medfm.methods.raddiff.evaluator import acc_at_k

    row: dict[str, float] = {}
    for it in result.iterations:
        scores = judge.scores([h.text for h in it.ranked], gt_a, gt_b)
        for k in ks:
            row[f"acc@{k}_iter{it.iteration}"] = acc_at_k(scores, k)
    final_scores = judge.scores([h.text for h in result.final], gt_a, gt_b)
    for k in ks:
        row[f"acc@{k}"] = acc_at_k(final_scores, k)
    return row


def summarise(rows: list[dict[str, Any]], ks: list[int], res: Any, bootstrap: int, seed: int) -> None:
    """Acc@k with bootstrap CIs overall and per difficulty, ranker ceiling, iteration deltas."""
    from medfm.core.metrics import mean_ci

    for k in ks:
        res.add(f"acc@{k}", mean_ci([r[f"acc@{k}"] for r in rows], n_resamples=bootstrap, seed=seed))
        for d in sorted({r["difficulty"] for r in rows if r["difficulty"] is not None}):
            sub = [r[f"acc@{k}"] for r in rows if r["difficulty"] == d]
            res.add(f"acc@{k}", mean_ci(sub, n_resamples=bootstrap, seed=seed), group=f"difficulty={d}")
    gt = [r["gt_auroc"] for r in rows if r["gt_auroc"] is not None]
    if gt:
        res.add("ground_truth_auroc", mean_ci(gt, n_resamples=bootstrap, seed=seed),
                note="ranker ceiling: mean AUROC of the ground-truth description")  # fmt: skip
        res.add("ground_truth_top_fraction", mean_ci([float(r["gt_auroc"] >= (r["top1_auroc"] or 0)) for r in rows
                                                      if r["gt_auroc"] is not None], n_resamples=bootstrap, seed=seed),
                note="pairs where the ground truth would outrank the proposed top-1")  # fmt: skip
    iters = sorted({int(c.split("iter")[1]) for r in rows for c in r if "_iter" in c})
    if len(iters) > 1:
        first, last = iters[0], iters[-1]
        for k in ks:
            a = [r.get(f"acc@{k}_iter{first}", 0.0) for r in rows]
            b = [r.get(f"acc@{k}_iter{last}", 0.0) for r in rows]
            res.meta[f"acc@{k}_iteration_change"] = {"increase": int(sum(y > x for x, y in zip(a, b))),
                                                     "same": int(sum(y == x for x, y in zip(a, b))),
                                                     "decrease": int(sum(y < x for x, y in zip(a, b)))}  # fmt: skip
