"""Finding extraction from report text and the report / VQA metrics.

Findings are read from text with SRRG's negation- and uncertainty-aware lexicon labeller
(:class:`medfm.methods.srrg.lexicon.LexiconLabeller`, 55 SRR-BERT leaves) and mapped to CheXpert finding names
with :data:`SRR_TO_CHEXPERT`. Only findings whose mapping is one-to-one are scored (:data:`EVAL_FINDINGS`):
SRRG folds "consolidation" into its Pneumonia leaf, labels tubes/lines only when malpositioned and has no
"widened mediastinum" leaf, so Consolidation, Pneumonia, Support Devices and Enlarged Cardiomediastinum are
not scored. A finding counts as mentioned-positive when the labeller says Present or Uncertain; the ground truth
is positive for label 1 (present) or -1 (uncertain / subtle).

Finding F1 is micro-averaged over (report, finding) pairs; its CI resamples reports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medfm.methods.vlm.data import present

SRR_TO_CHEXPERT: dict[str, tuple[str, ...]] = {
    "Pleural Effusion": ("Simple pleural effusion", "Loculated pleural effusion"),
    "Pneumothorax": ("Simple pneumothorax", "Loculated pneumothorax", "Tension pneumothorax", "Hydropneumothorax"),
    "Cardiomegaly": ("Cardiomegaly",),
    "Edema": ("Edema", "Pulmonary congestion"),
    "Atelectasis": ("Atelectasis", "Lung collapse"),
    "Nodule": ("Nodule/Solitary lung nodule",),
    "Mass": ("Mass/Solitary lung mass",),
    "Fracture": ("Acute rib fracture", "Acute clavicle fracture", "Acute humerus fracture", "Acute scapula fracture",
                 "Compression fracture"),
    "Pleural Other": ("Pleural scarring",),
}  # fmt: skip
EVAL_FINDINGS: tuple[str, ...] = tuple(SRR_TO_CHEXPERT)

_SENT = re.compile(r"(?<=[.!?])\s+|\n+")


def sentences(text: str) -> list[str]:
    """Sentences of a report (section headers kept with their first sentence)."""
    return [s.strip() for s in _SENT.split(text or "") if s.strip()]


def extract_findings(texts: Sequence[str], findings: Sequence[str] = EVAL_FINDINGS) -> np.ndarray:
    """Which findings each text mentions as present or uncertain.

    Returns:
        ``(N, F)`` bool over ``findings``.
    """
    from medfm.methods.srrg.labels import merge_findings
    from medfm.methods.srrg.lexicon import LexiconLabeller

    lab = LexiconLabeller()
    out = np.zeros((len(texts), len(findings)), dtype=bool)
    for i, text in enumerate(texts):
        merged = merge_findings(lab.predict(sentences(text)))
        for j, f in enumerate(findings):
            out[i, j] = any(merged.get(leaf) in ("Present", "Uncertain") for leaf in SRR_TO_CHEXPERT[f])
    return out


def truth_matrix(labels: Sequence[Mapping[str, Any]], findings: Sequence[str] = EVAL_FINDINGS) -> np.ndarray:
    """``(N, F)`` bool: finding present (label 1 or -1) per example."""
    return np.array([[present(lab.get(f)) for f in findings] for lab in labels], dtype=bool).reshape(
        len(labels), len(findings)
    )


def micro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Micro F1 over all (row, finding) cells of two ``(N, F)`` bool arrays; 0 when nothing is positive."""
    return f1_from_counts(per_report_counts(y_true, y_pred))


def per_report_counts(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """``(N, 3)`` per-report (tp, n_true, n_pred): micro F1 of a resample is ``2 sum(tp) / (sum(n_true)+sum(n_pred))``."""
    return np.stack([np.logical_and(y_true, y_pred).sum(1), y_true.sum(1), y_pred.sum(1)], axis=1).astype(float)


def f1_from_counts(counts: np.ndarray) -> float:
    """Micro F1 ``2 sum(tp) / (sum(n_true) + sum(n_pred))`` of ``(N, 3)`` counts; 0 when nothing is positive."""
    denom = counts[:, 1].sum() + counts[:, 2].sum()
    return 0.0 if denom == 0 else float(2.0 * counts[:, 0].sum() / denom)


def normalize_answer(text: str) -> str:
    """Lower-case, first word-ish token for yes/no (``"Yes, there is ..."`` -> ``yes``), else stripped text."""
    t = (text or "").strip().lower()
    t = re.sub(r"[^\w\s]", " ", t).strip()
    first = t.split()[0] if t.split() else ""
    if first in ("yes", "no"):
        return first
    return " ".join(t.split())


def exact_match(predictions: Sequence[str], answers: Sequence[str]) -> np.ndarray:
    """Per-question 0/1 exact match after :func:`normalize_answer`."""
    return np.array([normalize_answer(p) == normalize_answer(a) for p, a in zip(predictions, answers)], dtype=float)


def prior_report_predictions(train_truth: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Label-prior baseline for reports: each finding drawn positive with its training prevalence.

    Args:
        train_truth: ``(N_train, F)`` bool truth of the training reports.
        n: number of test reports.

    Returns:
        ``(n, F)`` bool.
    """
    rate = train_truth.mean(0) if len(train_truth) else np.zeros(train_truth.shape[1])
    return np.random.default_rng(seed).random((n, train_truth.shape[1])) < rate[None, :]


def prior_vqa_answers(
    train_questions: Sequence[str], train_answers: Sequence[str], questions: Sequence[str]
) -> list[str]:
    """Label-prior baseline for VQA: the most frequent training answer to the same question (overall if unseen)."""
    from collections import Counter

    per_q: dict[str, Counter] = {}
    for q, a in zip(train_questions, train_answers):
        per_q.setdefault(q, Counter())[normalize_answer(a)] += 1
    overall = Counter(normalize_answer(a) for a in train_answers)
    default = overall.most_common(1)[0][0] if overall else "no"
    return [per_q[q].most_common(1)[0][0] if q in per_q else default for q in questions]
