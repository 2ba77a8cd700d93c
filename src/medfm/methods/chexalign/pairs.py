"""Preference pairs from judged candidates (CheXalign ``get_preference.py`` / ``get_kto_data.py``).

For each study with N judged candidates: chosen = the candidate with the highest reward, rejected = the one with
the lowest; the study is dropped when ``max - min <= tie_threshold`` (all candidates tie, e.g. every generation
empty or equally wrong). Candidates whose judgement failed (``score is None``) are ignored; a study with fewer than
two scored candidates is dropped. Ties for the best (worst) candidate are broken by the first occurrence, as
``argmax`` (``argmin``) does. KTO rows: every pair becomes two unpaired rows, chosen with ``label=True`` and
rejected with ``label=False``. Torch-free.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TIE_THRESHOLD = 1e-8


@dataclass
class PairStats:
    """Why studies did or did not yield a pair."""

    studies: int = 0
    pairs: int = 0
    dropped_ties: int = 0
    dropped_unscored: int = 0
    empty_candidates: int = 0
    reasons: dict[str, str] = field(default_factory=dict)  # study id -> reason it was dropped

    def to_dict(self) -> dict[str, Any]:
        return {
            "studies": self.studies,
            "pairs": self.pairs,
            "dropped_ties": self.dropped_ties,
            "dropped_unscored": self.dropped_unscored,
            "empty_candidates": self.empty_candidates,
        }


def select_pair(scores: Sequence[float | None], tie_threshold: float = TIE_THRESHOLD) -> tuple[int, int] | None:
    """``(chosen index, rejected index)`` among ``scores`` (None = unscored), or None for a tie / too few scores."""
    valid = [(i, float(s)) for i, s in enumerate(scores) if s is not None]
    if len(valid) < 2:
        return None
    best = max(valid, key=lambda t: t[1])  # first occurrence on ties
    worst = min(valid, key=lambda t: t[1])
    if best[1] - worst[1] <= tie_threshold:
        return None
    return best[0], worst[0]


def build_pairs(
    studies: Iterable[Mapping[str, Any]], tie_threshold: float = TIE_THRESHOLD
) -> tuple[list[dict[str, Any]], PairStats]:
    """Pairs from judged studies.

    Args:
        studies: dicts with ``id``, ``candidates`` (texts), ``scores`` (floats or None, one per candidate) and any
            other fields (``images``, ``prompt``, ``reference`` ...), which are copied into the pair.
        tie_threshold: drop a study when ``max - min`` of its scores is at most this.

    Returns:
        ``(pairs, stats)``; each pair holds the study's fields plus ``chosen``, ``rejected``, ``chosen_score``,
        ``rejected_score``, ``chosen_index``, ``rejected_index``.
    """
    pairs, stats = [], PairStats()
    for st in studies:
        stats.studies += 1
        cands, scores = list(st["candidates"]), list(st["scores"])
        stats.empty_candidates += sum(1 for c in cands if not str(c).strip())
        if sum(s is not None for s in scores) < 2:
            stats.dropped_unscored += 1
            stats.reasons[str(st["id"])] = "fewer than two candidates could be judged"
            continue
        sel = select_pair(scores, tie_threshold)
        if sel is None:
            stats.dropped_ties += 1
            stats.reasons[str(st["id"])] = "all candidates tie"
            continue
        w, lo = sel
        base = {k: v for k, v in st.items() if k not in ("candidates", "scores", "judgements", "tokens")}
        pairs.append(
            {
                **base,
                "chosen": cands[w],
                "rejected": cands[lo],
                "chosen_score": scores[w],
                "rejected_score": scores[lo],
                "chosen_index": w,
                "rejected_index": lo,
            }
        )
        stats.pairs += 1
    return pairs, stats


def kto_rows(pairs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Two unpaired rows per pair: ``completion = chosen, label = True`` then ``completion = rejected, label = False``."""
    rows = []
    for p in pairs:
        base = {
            k: v
            for k, v in p.items()
            if k not in ("chosen", "rejected", "chosen_score", "rejected_score", "chosen_index", "rejected_index")
        }
        rows.append({**base, "completion": p["chosen"], "label": True, "score": p["chosen_score"]})
        rows.append({**base, "completion": p["rejected"], "label": False, "score": p["rejected_score"]})
    return rows
