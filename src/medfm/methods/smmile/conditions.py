"""Experimental conditions: how a problem's in-context examples are presented (spec §2.4-2.5).

``zero_shot``        query only.
``icl``              examples in their ``order``, then the query.
``permutations``     SMMILE++: every order of the examples when k! <= cap (24), else ``cap`` unique seeded
                     shuffles; ids ``<problem_id>_perm_<n>`` (n from 1); reasoning problems are excluded.
``random_noise``     one triplet from another problem inserted among the examples at a seeded position.
``targeted_noise``   the same with a triplet from a problem of the same speciality.
``order_last``       the most relevant example moved to the end (recency).
``order_not_last``   relevant examples only earlier: a non-relevant example last.
``order_first``      the most relevant example moved to the front.
``order_not_first``  relevant examples only later: a non-relevant example first.

Relevance is ``answer`` (an example whose normalised answer equals the query's; the paper's 69-problem subset
needs at least one such example) or ``image`` (cosine similarity of image embeddings from any embedder, by
default the downsampled pixels; CLIP embeddings can be plugged in). Every random choice uses a generator seeded
by ``(seed, problem_id)``, so a problem gets the same treatment whatever else is in the set.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfm.methods.smmile.data import Problem, SmmileRow
from medfm.methods.smmile.metrics import image_similarities, normalize_answer

CONDITIONS = (
    "zero_shot",
    "icl",
    "permutations",
    "random_noise",
    "targeted_noise",
    "order_last",
    "order_not_last",
    "order_first",
    "order_not_first",
)
# How each condition is called in result file names (the original's "0-shot" / "ICL").
MODE_LABEL = {
    "zero_shot": "0-shot",
    "icl": "ICL",
    "permutations": "ICL-perm",
    "random_noise": "ICL-random-noise",
    "targeted_noise": "ICL-targeted-noise",
    "order_last": "ICL-order-last",
    "order_not_last": "ICL-order-not-last",
    "order_first": "ICL-order-first",
    "order_not_first": "ICL-order-not-first",
}
Embedder = Callable[[Sequence[Any]], np.ndarray]


@dataclass
class Instance:
    """A problem as presented under a condition.

    Attributes:
        instance_id: ``problem_id`` or ``<problem_id>_perm_<n>``.
        problem: the source problem.
        examples: the in-context examples in presentation order (empty for zero-shot).
        condition: the condition name.
        meta: what the condition did (permutation, noise source/position, moved example).
    """

    instance_id: str
    problem: Problem
    examples: list[SmmileRow]
    condition: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def query(self) -> SmmileRow:
        return self.problem.query


def problem_rng(seed: int, problem_id: str, stream: int = 0) -> np.random.Generator:
    """A generator seeded by ``(seed, problem_id, stream)`` (stable across processes)."""
    h = int.from_bytes(hashlib.sha256(problem_id.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, h & 0xFFFFFFFF, h >> 32, int(stream)])


def permutation_orders(k: int, cap: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """All k! orders (itertools order) when k! <= cap, else ``cap`` unique orders drawn by shuffling."""
    if k <= 0:
        return [()]
    if math.factorial(k) <= cap:
        return list(itertools.permutations(range(k)))
    seen: list[tuple[int, ...]] = []
    while len(seen) < cap:
        p = tuple(int(i) for i in rng.permutation(k))
        if p not in seen:
            seen.append(p)
    return seen


def _inject(problem: Problem, donors: list[Problem], rng: np.random.Generator, kind: str) -> Instance | None:
    if not donors:
        return None
    donor = donors[int(rng.integers(len(donors)))]
    row = donor.rows[int(rng.integers(len(donor.rows)))]
    pos = int(rng.integers(len(problem.examples) + 1))
    ex = list(problem.examples)
    ex.insert(pos, row)
    meta = {"noise_position": pos, "noise_problem": donor.problem_id, "noise_order": row.order}
    return Instance(problem.problem_id, problem, ex, kind, meta)


def pixel_embedder(images: Sequence[Any], size: int = 32) -> np.ndarray:
    """``(N, size*size)`` L2-normalised, mean-centred grayscale pixels: a model-free image embedding."""
    from medfm.backends.base import load_image

    out = []
    for im in images:
        a = np.asarray(load_image(im).convert("L").resize((size, size)), dtype=np.float32).ravel()
        a = a - a.mean()
        out.append(a / (np.linalg.norm(a) + 1e-8))
    return np.stack(out) if out else np.zeros((0, size * size), np.float32)


def relevance_scores(
    problem: Problem, examples: Sequence[SmmileRow], relevance: str, embedder: Embedder | None
) -> list[float]:
    """Per example: 1/0 answer match with the query (``answer``) or image cosine similarity (``image``)."""
    if relevance == "answer":
        q = normalize_answer(problem.query.answer)
        return [float(normalize_answer(e.answer) == q) for e in examples]
    if relevance == "image":
        sims = image_similarities([e.image for e in examples], problem.query.image, embedder or pixel_embedder)
        return [float(x) for x in sims]
    raise ValueError(f"relevance must be 'answer' or 'image', got {relevance!r}")


def _reorder(
    problem: Problem, condition: str, relevance: str, embedder: Embedder | None
) -> tuple[Instance | None, str]:
    ex = list(problem.examples)
    scores = relevance_scores(problem, ex, relevance, embedder)
    if relevance == "answer":
        relevant = [i for i, s in enumerate(scores) if s > 0]
        if not relevant:
            return None, "no in-context example has the query's answer"
    else:
        relevant = [int(np.argmax(scores))]
    others = [i for i in range(len(ex)) if i not in relevant]
    best = max(relevant, key=lambda i: (scores[i], i))
    if condition == "order_last":
        order = [i for i in range(len(ex)) if i != best] + [best]
    elif condition == "order_first":
        order = [best] + [i for i in range(len(ex)) if i != best]
    else:
        if not others:
            return None, "every in-context example has the query's answer"
        if condition == "order_not_last":
            last = others[-1]
            order = [i for i in range(len(ex)) if i != last] + [last]
        else:
            first = others[0]
            order = [first] + [i for i in range(len(ex)) if i != first]
    meta = {"order": order, "relevant": relevant, "moved": best, "relevance": relevance}
    return Instance(problem.problem_id, problem, [ex[i] for i in order], condition, meta), ""


def expand(
    problems: Sequence[Problem],
    condition: str,
    *,
    seed: int = 0,
    perm_cap: int = 24,
    relevance: str = "answer",
    embedder: Embedder | None = None,
    exclude_reasoning: bool = True,
) -> tuple[list[Instance], list[dict[str, str]]]:
    """Instances of ``problems`` under ``condition``, plus ``{"problem_id", "reason"}`` for each left out.

    Args:
        problems: loaded problems.
        condition: one of :data:`CONDITIONS`.
        seed: seed of permutation shuffles, noise donors and positions.
        perm_cap: maximum permutations per problem (24 in SMMILE++).
        relevance: ``answer`` or ``image`` (ordering conditions).
        embedder: image embedder for ``relevance="image"`` (default :func:`pixel_embedder`).
        exclude_reasoning: drop "reasoning classification" problems from ``permutations`` (as SMMILE++ does).
    """
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; one of {', '.join(CONDITIONS)}")
    out: list[Instance] = []
    excluded: list[dict[str, str]] = []
    for p in problems:
        if condition == "zero_shot":
            out.append(Instance(p.problem_id, p, [], condition))
        elif condition == "icl":
            out.append(Instance(p.problem_id, p, list(p.examples), condition))
        elif condition == "permutations":
            if exclude_reasoning and p.is_reasoning:
                excluded.append({"problem_id": p.problem_id, "reason": "reasoning problem (excluded from SMMILE++)"})
                continue
            orders = permutation_orders(len(p.examples), perm_cap, problem_rng(seed, p.problem_id, 1))
            for n, order in enumerate(orders, 1):
                out.append(
                    Instance(
                        f"{p.problem_id}_perm_{n}",
                        p,
                        [p.examples[i] for i in order],
                        condition,
                        {"permutation": list(order)},
                    )
                )
        elif condition in ("random_noise", "targeted_noise"):
            donors = [d for d in problems if d.problem_id != p.problem_id]
            if condition == "targeted_noise":
                donors = [d for d in donors if d.speciality == p.speciality]
            inst = _inject(p, donors, problem_rng(seed, p.problem_id, 2), condition)
            if inst is None:
                excluded.append({"problem_id": p.problem_id, "reason": "no other problem of the same speciality"})
            else:
                out.append(inst)
        else:
            inst, why = _reorder(p, condition, relevance, embedder)
            if inst is None:
                excluded.append({"problem_id": p.problem_id, "reason": why})
            else:
                out.append(inst)
    return out, excluded
