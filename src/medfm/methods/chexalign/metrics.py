"""Evaluation of a report generator before / after alignment (spec part B, 2.4).

Per held-out study (greedy decoding): the judge's GREEN-style score and LC-GREEN, finding-level F1 against the
study's labels (SRRG lexicon extraction mapped to CheXpert names, :func:`medfm.methods.vlm.infer.score_reports`),
F1-SRR-BERT (per-report set F1 of SRR-BERT leaves, :func:`medfm.methods.srrg.metric.f1_srr_bert`), BERTScore-style F1
(MiniLM), ROUGE-L and corpus BLEU-4 (:mod:`medfm.methods.srrg.metric`), and the length in words with the corpus
length ratio ``sum words(generated) / sum words(reference)``. Alignment tax (other tasks of the same model): yes/no
VQA accuracy and finding classification by prompting (AUROC of ``log p(yes) - log p(no)``), both teacher-forced.
CIs are percentile bootstraps over studies; differences between two models are paired.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from medfm.methods.chexalign.green import words

log = logging.getLogger(__name__)

#: metric name -> (higher is better, description)
METRICS: dict[str, tuple[bool, str]] = {
    "green": (True, "GREEN-style judge score"),
    "lc_green": (True, "LC-GREEN"),
    "finding_f1": (True, "finding micro F1 vs labels"),
    "f1_srr_bert": (True, "F1-SRR-BERT (per-report set F1 of SRR-BERT leaves, lexicon labeller)"),
    "bertscore": (True, "BERTScore F1 (MiniLM tokens)"),
    "rouge_l": (True, "ROUGE-L F"),
    "bleu4": (True, "corpus BLEU-4"),
    "length_words": (False, "mean words per generated report"),
    "length_ratio": (False, "sum words(generated) / sum words(reference)"),
}


def per_study_scores(
    texts: Sequence[str], refs: Sequence[str], labels: Sequence[dict[str, Any]], judge: Any, bertscore: Any = None
) -> dict[str, np.ndarray]:
    """Per-study values used by :func:`summarise` (arrays of length N; ``f1_counts`` is ``(N, 3)``)."""
    from medfm.methods.chexalign.green import length_controlled
    from medfm.methods.srrg.lexicon import LexiconLabeller
    from medfm.methods.srrg.metric import f1_srr_bert, rouge_l
    from medfm.methods.vlm.findings import EVAL_FINDINGS, extract_findings, per_report_counts, truth_matrix

    texts, refs = list(texts), list(refs)
    judged = judge.judge(refs, texts)
    raw = np.array([r.raw_score if r.raw_score is not None else np.nan for r in judged], dtype=float)
    out: dict[str, np.ndarray] = {
        "green": raw,
        "lc_green": np.array(
            [length_controlled(s, t, r) if np.isfinite(s) else np.nan for s, t, r in zip(raw, texts, refs)]
        ),
        "f1_srr_bert": np.asarray(f1_srr_bert(texts, refs, LexiconLabeller()).per_sample_f1, dtype=float),
        "rouge_l": np.array([rouge_l(t, r) for t, r in zip(texts, refs)], dtype=float),
        "cand_words": np.array([words(t) for t in texts], dtype=float),
        "ref_words": np.array([words(r) for r in refs], dtype=float),
    }
    if labels and any(labels):
        out["f1_counts"] = per_report_counts(truth_matrix(list(labels), EVAL_FINDINGS), extract_findings(texts))
    if bertscore is not None:
        out["bertscore"] = np.array([r.score for r in bertscore.judge(refs, texts)], dtype=float)
    return out


def _bleu(idx_texts: Any, idx_refs: Any) -> float:
    from medfm.methods.srrg.metric import bleu

    return float(bleu(list(idx_texts), list(idx_refs)))


def summarise(
    per: dict[str, np.ndarray], texts: Sequence[str], refs: Sequence[str], n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Metrics with bootstrap CIs over studies (a :class:`medfm.core.results.Metric` per name in :data:`METRICS`)."""
    from medfm.core.metrics import mean_ci, with_ci
    from medfm.methods.vlm.findings import f1_from_counts

    kw = {"n_resamples": n_boot, "seed": seed}
    out: dict[str, Any] = {}
    for name in ("green", "lc_green", "f1_srr_bert", "rouge_l", "bertscore"):
        if name in per:
            vals = per[name][np.isfinite(per[name])]
            out[name] = mean_ci(vals, higher_is_better=METRICS[name][0], note=METRICS[name][1], **kw)
    if "f1_counts" in per:
        out["finding_f1"] = with_ci(f1_from_counts, per["f1_counts"], note=METRICS["finding_f1"][1], **kw)
    t_arr, r_arr = np.asarray(list(texts), dtype=object), np.asarray(list(refs), dtype=object)
    out["bleu4"] = with_ci(_bleu, t_arr, r_arr, note=METRICS["bleu4"][1], **kw)
    out["length_words"] = mean_ci(per["cand_words"], higher_is_better=False, note=METRICS["length_words"][1], **kw)
    out["length_ratio"] = with_ci(
        lambda c, r: float(c.sum() / max(r.sum(), 1.0)),
        per["cand_words"],
        per["ref_words"],
        higher_is_better=False,
        note=METRICS["length_ratio"][1],
        **kw,
    )
    return out


def paired_differences(
    after: dict[str, np.ndarray], before: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """``after - before`` per metric with paired bootstrap CIs over the same studies."""
    from medfm.core.metrics import difference_ci, with_ci
    from medfm.methods.vlm.findings import f1_from_counts

    out = {}
    for name in ("green", "lc_green", "f1_srr_bert", "rouge_l", "bertscore"):
        if name in after and name in before:
            ok = np.isfinite(after[name]) & np.isfinite(before[name])
            out[f"delta_{name}"] = difference_ci(
                after[name][ok],
                before[name][ok],
                n_resamples=n_boot,
                seed=seed,
                note=f"aligned - SFT, paired over studies: {METRICS[name][1]}",
            )
    if "f1_counts" in after and "f1_counts" in before:
        both = np.concatenate([after["f1_counts"], before["f1_counts"]], axis=1)
        out["delta_finding_f1"] = with_ci(
            lambda c: f1_from_counts(c[:, :3]) - f1_from_counts(c[:, 3:]),
            both,
            n_resamples=n_boot,
            seed=seed,
            note="aligned - SFT finding F1",
        )
    out["length_ratio_vs_sft"] = with_ci(
        lambda a, b: float(a.sum() / max(b.sum(), 1.0)),
        after["cand_words"],
        before["cand_words"],
        n_resamples=n_boot,
        seed=seed,
        higher_is_better=False,
        note="words(aligned) / words(SFT)",
    )
    return out


def alignment_tax(model: Any, processor: Any, examples: Sequence[Any], seed: int = 0) -> dict[str, np.ndarray]:
    """Per-question values of the tax suite: ``vqa_correct`` (0/1), ``yes_minus_no`` score and ``truth`` (0/1).

    Questions: balanced yes/no questions per finding from the studies' labels
    (:func:`medfm.methods.vlm.data.vqa_from_labels`), answered by comparing ``log p("yes")`` with ``log p("no")``.
    """
    from medfm.methods.vlm.data import Example, vqa_from_labels
    from medfm.methods.vlm.infer import answer_logprobs

    rows = vqa_from_labels(
        [{"id": ex.id, "image": ex.images[0], "split": ex.split, "labels": ex.labels} for ex in examples if ex.labels],
        per_image=2,
        seed=seed,
    )
    if not rows:
        return {}
    qs = [Example(r["id"], [r["image"]], r["question"], r["answer"], "vqa", {}, r["finding"]) for r in rows]
    lp = answer_logprobs(model, processor, qs, ["yes", "no"])
    truth = np.array([r["answer"] == "yes" for r in rows], dtype=float)
    score = lp[:, 0] - lp[:, 1]
    return {"vqa_correct": ((score > 0).astype(float) == truth).astype(float), "yes_minus_no": score, "truth": truth}


def tax_metrics(tax: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    from medfm.core.metrics import auroc, mean_ci, with_ci

    if not tax:
        return {}
    return {
        "tax_vqa_accuracy": mean_ci(
            tax["vqa_correct"], n_resamples=n_boot, seed=seed, note="yes/no VQA accuracy (teacher-forced yes vs no)"
        ),
        "tax_finding_auroc": with_ci(
            auroc,
            tax["truth"],
            tax["yes_minus_no"],
            n_resamples=n_boot,
            seed=seed,
            note="finding classification by prompting: AUROC of log p(yes) - log p(no)",
        ),
    }
