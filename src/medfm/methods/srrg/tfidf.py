"""TF-IDF + logistic regression finding classifier: the standing bag-of-words baseline for SRR-BERT.

The spec's CPU-seconds alternative to a fine-tuned encoder (part 5.1 (b)): word uni- and bi-gram TF-IDF
(scikit-learn's ``TfidfVectorizer``), one L2 logistic regression per leaf-with-status label (liblinear), the
regularisation C picked from a small grid by validation micro F1, then per-label thresholds tuned on the same
validation split as the encoder's (:mod:`medfm.methods.srrg.thresholds`). It predicts the same
``{leaf: status}`` findings through the same decoder, so ``medfm srrg evaluate|score|structure`` take its
folder wherever they take an SRR-BERT folder.

A model folder holds ``srrg.json`` (labels, thresholds, vectorizer settings, C), ``vocabulary.json`` and
``weights.npz`` (idf ``(V,)``, coef ``(L, V)``, intercept ``(L,)``; plain arrays, no pickle), and the card.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfm.core.errors import DataError
from medfm.methods.srrg.classifier import META, LabelDecoder
from medfm.methods.srrg.data import Sentence, train_val
from medfm.methods.srrg.labels import LEAVES_WITH_STATUSES, findings_matrix
from medfm.methods.srrg.thresholds import micro_f1, tune_thresholds

log = logging.getLogger(__name__)
VECTORIZER = {
    "ngram_range": [1, 2],
    "sublinear_tf": True,
    "min_df": 2,
    "lowercase": True,
    "token_pattern": r"(?u)\b\w+\b",
}  # fmt: skip  (one-letter tokens kept: "no", "a 2 cm")
C_GRID = (1.0, 4.0, 16.0, 64.0)
#: logit of labels never positive in training (sigmoid ~ 2e-9: never predicted)
NEVER = -20.0


class TfidfClassifier(LabelDecoder):
    """``predict(texts) -> list[{leaf: status}]`` from TF-IDF features and per-label logistic regressions.

    Args:
        vocabulary: term -> column.
        idf: inverse document frequencies ``(V,)``.
        coef: weights ``(L, V)``; intercept: ``(L,)``.
        labels: output label names (leaf-with-status labels).
        threshold: one cut or one per label.
        vectorizer: ``TfidfVectorizer`` keyword arguments (see :data:`VECTORIZER`).
        C: the regularisation it was trained with (recorded only).
    """

    def __init__(self, vocabulary: dict[str, int], idf: np.ndarray, coef: np.ndarray, intercept: np.ndarray,
                 labels: Sequence[str] = LEAVES_WITH_STATUSES, threshold: float | Sequence[float] = 0.5,
                 vectorizer: dict[str, Any] | None = None, C: float | None = None):  # fmt: skip
        from sklearn.feature_extraction.text import TfidfVectorizer

        self._init_labels(labels, threshold)
        self.settings = dict(vectorizer or VECTORIZER)
        kw = {**self.settings, "ngram_range": tuple(self.settings["ngram_range"])}
        self.vectorizer = TfidfVectorizer(vocabulary=vocabulary, **{k: v for k, v in kw.items() if k != "min_df"})
        self.vectorizer.idf_ = np.asarray(idf, dtype=np.float64)  # a fitted vectorizer without refitting
        self.coef = np.asarray(coef, dtype=np.float32)
        self.intercept = np.asarray(intercept, dtype=np.float32)
        self.C = C
        if self.coef.shape != (len(self.labels), len(vocabulary)) or self.intercept.shape != (len(self.labels),):
            raise DataError(f"TF-IDF weights {self.coef.shape} / {self.intercept.shape} do not match "
                            f"{len(self.labels)} labels x {len(vocabulary)} terms")  # fmt: skip

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Sigmoid probabilities ``(N, L)`` float32."""
        x = self.vectorizer.transform([t or "" for t in texts])
        z = np.asarray(x @ self.coef.T, dtype=np.float32) + self.intercept
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def save_pretrained(self, directory: str | Path, card: Any = None) -> Path:
        """Write the model folder atomically."""
        from medfm.core.files import atomic_dir

        with atomic_dir(directory) as tmp:
            vocab = self.vectorizer.vocabulary_
            (tmp / "vocabulary.json").write_text(json.dumps({k: int(v) for k, v in vocab.items()}))
            np.savez(tmp / "weights.npz", idf=self.vectorizer.idf_, coef=self.coef, intercept=self.intercept)
            meta = {"medfm_class": f"{type(self).__module__}:{type(self).__qualname__}", "labels": self.labels,
                    "threshold": self.threshold, "thresholds": [round(float(t), 4) for t in self.thresholds],
                    "vectorizer": self.settings, "C": self.C, "label_space": "leaves_with_statuses"}  # fmt: skip
            (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
            if card is not None:
                from medfm.core.hub import write_card

                write_card(tmp, card)
        return Path(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> TfidfClassifier:
        path = Path(directory)
        try:
            meta = json.loads((path / META).read_text())
            vocab = json.loads((path / "vocabulary.json").read_text())
            with np.load(path / "weights.npz", allow_pickle=False) as w:
                idf, coef, intercept = w["idf"], w["coef"], w["intercept"]
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{path}: TF-IDF model files are missing or corrupt ({type(exc).__name__}: "
                            f"{str(exc)[:160]}); re-run 'medfm srrg train --model tfidf'") from None  # fmt: skip
        return cls(vocab, idf, coef, intercept, meta["labels"], meta.get("thresholds", meta.get("threshold", 0.5)),
                   meta.get("vectorizer"), meta.get("C"))  # fmt: skip


@dataclass
class TfidfOutcome:
    classifier: TfidfClassifier
    seconds: float
    C: float
    #: validation micro F1 (tuned cuts) per C of the grid
    val_f1: dict[float, float] = field(default_factory=dict)
    train_sentences: int = 0
    val_sentences: int = 0


def _fit(x: Any, y: np.ndarray, C: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    coef = np.zeros((y.shape[1], x.shape[1]), np.float32)
    intercept = np.full(y.shape[1], NEVER, np.float32)
    for j in range(y.shape[1]):
        pos = int(y[:, j].sum())
        if pos == 0:
            continue
        if pos == len(y):  # always positive in training
            intercept[j] = -NEVER
            continue
        m = LogisticRegression(C=C, solver="liblinear", random_state=seed).fit(x, y[:, j])
        coef[j], intercept[j] = m.coef_[0], m.intercept_[0]
    return coef, intercept


def train_tfidf(sentences: Sequence[Sentence], *, val_fraction: float = 0.1,
                val_sentences: Sequence[Sentence] | None = None, seed: int = 0,
                C_grid: Sequence[float] = C_GRID, threshold: float = 0.5, tune: bool = True) -> TfidfOutcome:  # fmt: skip
    """Fit the baseline on the training split; C and thresholds chosen on the validation split (same split rule
    and seed as :func:`medfm.methods.srrg.train.train_classifier`, so both models see the same data)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    train, val = train_val(sentences, val_fraction, val_sentences, seed)
    t0 = time.perf_counter()
    settings = dict(VECTORIZER)
    vec = TfidfVectorizer(**{**settings, "ngram_range": tuple(settings["ngram_range"]),
                             "min_df": settings["min_df"] if len(train) >= 50 else 1})  # fmt: skip
    x = vec.fit_transform([s.text for s in train])
    y = findings_matrix([s.findings for s in train], "leaves_with_statuses").astype(np.int8)
    vocab = {k: int(v) for k, v in vec.vocabulary_.items()}
    yv = findings_matrix([s.findings for s in val], "leaves_with_statuses") if val else None
    grid = list(C_grid) if val else [float(C_grid[len(C_grid) // 2])]
    scores: dict[float, float] = {}
    best: tuple[float, Any] | None = None
    for C in grid:
        coef, icpt = _fit(x, y, float(C), seed)
        clf = TfidfClassifier(vocab, vec.idf_, coef, icpt, threshold=threshold, vectorizer=settings, C=float(C))
        if val:
            proba = clf.predict_proba([s.text for s in val])
            cuts = tune_thresholds(proba, yv, threshold) if tune else np.full(proba.shape[1], threshold)
            clf.thresholds = cuts.astype(np.float32)
            scores[float(C)] = micro_f1(yv, (proba > cuts).astype(np.int8))
            log.info("tfidf C=%g: validation micro F1 %.4f", C, scores[float(C)])
        if best is None or (val and scores[float(C)] > best[0]):
            best = (scores.get(float(C), 0.0), clf)
    assert best is not None
    return TfidfOutcome(best[1], time.perf_counter() - t0, float(best[1].C), scores, len(train), len(val))
