"""SMMILE metrics (spec §2.3): normalised exact match, bootstrap mean ± std, stratified breakdowns, baselines.

Scores are per problem instance in {0, 1}; accuracies are reported in percent. The bootstrap resamples
instances with replacement 1000 times with seed 42 and reports the mean and standard deviation of the resampled
accuracies (the paper's "mean ± std"), plus a 95 % percentile interval from the same resamples.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """Lower-case, delete every ``string.punctuation`` character, collapse whitespace, strip."""
    return " ".join(_PUNCT.sub("", (text or "").lower()).split())


def exact_match(prediction: str, truth: str, strict: bool = False) -> bool:
    """Normalised (default) or raw-string (``strict``) equality."""
    if strict:
        return (prediction or "") == (truth or "")
    return normalize_answer(prediction) == normalize_answer(truth)


def contains_match(prediction: str, truth: str) -> bool:
    """The rule-based stand-in judge: the normalised truth occurs as whole words in the normalised prediction."""
    t, p = normalize_answer(truth), normalize_answer(prediction)
    return bool(t) and re.search(rf"(?<!\w){re.escape(t)}(?!\w)", p) is not None


@dataclass
class Summary:
    """Accuracy of per-instance scores with the paper's bootstrap.

    Attributes:
        accuracy: plain accuracy in percent.
        boot_mean: mean of the bootstrap accuracies (percent).
        boot_std: their standard deviation (percent).
        ci: 2.5 and 97.5 percentiles of the bootstrap accuracies (percent).
        n: number of instances.
    """

    accuracy: float
    boot_mean: float
    boot_std: float
    ci: tuple[float, float] | None
    n: int

    def to_json(self) -> dict[str, Any]:
        return {
            "accuracy": round(self.accuracy, 4),
            "bootstrap_mean": round(self.boot_mean, 4),
            "bootstrap_std": round(self.boot_std, 4),
            "ci": None if self.ci is None else [round(self.ci[0], 4), round(self.ci[1], 4)],
            "n": self.n,
        }


def bootstrap_accuracy(scores: Sequence[float], n_resamples: int = 1000, seed: int = 42) -> Summary:
    """Bootstrap over instances (resampled with replacement) of the mean score, in percent."""
    s = np.asarray(scores, dtype=float)
    n = len(s)
    if n == 0:
        return Summary(float("nan"), float("nan"), float("nan"), None, 0)
    from medfm.core.metrics import bootstrap_ci

    point, ci, boots = bootstrap_ci(lambda x: float(x.mean() * 100), s, n_resamples=n_resamples, seed=seed)
    if ci is None:  # a single instance: every resample is that instance
        return Summary(point, point, 0.0, (point, point), n)
    return Summary(point, float(boots.mean()), float(boots.std()), ci, n)


def paired_difference(a: Sequence[float], b: Sequence[float], n_resamples: int = 1000, seed: int = 42) -> Summary:
    """Bootstrap of mean(a) - mean(b) in percentage points over paired instances (same problems)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"paired scores differ in length: {len(x)} vs {len(y)}")
    return bootstrap_accuracy(x - y, n_resamples, seed)


def breakdown(records: Sequence[Mapping[str, Any]], score_key: str, by: Sequence[str]) -> list[dict[str, Any]]:
    """Accuracy per value of each field in ``by`` (the paper's stratification), as table rows.

    Args:
        records: per-instance records holding the fields and ``score_key`` (0/1, None = not scored).
        score_key: which score to stratify (e.g. ``em``, ``judge``, ``mcqa``).
        by: field names, e.g. ``speciality``, ``flag_answer_format``, ``n_examples``, ``last_example_matches``.
    """
    rows = []
    for f in by:
        groups: dict[str, list[float]] = {}
        for r in records:
            v = r.get(score_key)
            if v is None:
                continue
            groups.setdefault(str(r.get(f, "")), []).append(float(v))
        for value, scores in sorted(groups.items()):
            rows.append(
                {"field": f, "value": value, "n": len(scores), "accuracy": round(100 * float(np.mean(scores)), 2)}
            )
    return rows


# ----------------------------------------------------------------------------------------------------------------------
# Baselines (spec §2.2)


def majority_answer(example_answers: Sequence[str]) -> str:
    """Most common in-context answer (``Counter.most_common``: ties go to the first seen)."""
    return Counter(example_answers).most_common(1)[0][0] if example_answers else ""


def random_answer(example_answers: Sequence[str], rng: np.random.Generator) -> str:
    """Uniform choice among the in-context answers."""
    return example_answers[int(rng.integers(len(example_answers)))] if example_answers else ""


def nearest_image_answer(
    example_images: Sequence[Any],
    example_answers: Sequence[str],
    query_image: Any,
    embedder: Callable[[Sequence[Any]], np.ndarray],
) -> str:
    """Answer of the in-context example whose image is most similar (cosine) to the query's: a model-free
    multimodal in-context learner (it needs the examples and cannot answer zero-shot)."""
    if not example_answers:
        return ""
    return example_answers[int(np.argmax(image_similarities(example_images, query_image, embedder)))]


def image_similarities(
    example_images: Sequence[Any], query_image: Any, embedder: Callable[[Sequence[Any]], np.ndarray]
) -> np.ndarray:
    """``(K,)`` cosine similarity of each example image's embedding to the query image's (one embedder call)."""
    emb = np.asarray(embedder([*example_images, query_image]), dtype=np.float64)
    emb = emb / (np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12)
    return emb[:-1] @ emb[-1]
