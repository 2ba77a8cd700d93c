"""Evaluation: a 0/1/2 judge of each ranked hypothesis against the ground truth, then Acc@1 / Acc@5 / Acc@N.

Score 2 = fully aligned with A's description, 1 = more true of A but broader or narrower than it, 0 =
aligned with B or unrelated; a hypothesis earns score / 2. Acc@k of a pair is the maximum over its top-k
hypotheses; unparseable judge answers count 0.

Judges: :class:`LLMJudge` (any chat backend; the paper uses GPT-4.1-nano) and :class:`OfflineJudge` (the
SRRG lexicon finding classifier plus RadDiff's concept synonyms and side/severity attributes).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from medfm.backends.base import Backend, ChatMessage, GenerationRequest
from medfm.methods.raddiff.vocab import PARENTS, Mention, mentions

log = logging.getLogger(__name__)

JUDGE_PROMPT = """You are an expert radiologist grading a proposed difference between two groups of chest \
radiographs.
Group A is described as: "{gt_a}". Group B is described as: "{gt_b}".
Proposed difference (a finding said to be more true of Group A): "{hypothesis}".
Score 2 if it fully matches Group A's description, 1 if it points toward Group A but is broader or narrower \
(e.g. "opacity" for "left consolidation"), 0 if it matches Group B or is unrelated. Examples: A "left lung \
opacity" vs B "right lung opacity": "right opacity" scores 0. A "pleural effusion" vs B "no pleural effusion": \
"pleural effusion" scores 2, "blunted costophrenic angle" scores 1.
Answer as JSON: {{"score": [x]}}"""


def parse_judge(text: str | None) -> int:
    """0, 1 or 2 from ``{"score": [x]}`` (or ``{"score": x}`` / a bare digit); 0 when unparseable."""
    from medfm.methods.raddiff.proposer import extract_json

    obj = extract_json(text)
    val: Any = None
    if isinstance(obj, dict) and "score" in obj:
        val = obj["score"]
        if isinstance(val, list):
            val = val[0] if val else None
    elif text is not None:
        m = re.fullmatch(r"\s*([012])\s*\.?\s*", str(text))
        val = m.group(1) if m else None
    try:
        v = int(float(val))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0
    return v if v in (0, 1, 2) else 0


class LLMJudge:
    """The 0/1/2 judge through any chat backend."""

    def __init__(self, backend: Backend, max_tokens: int = 32):
        self.backend = backend
        self.max_tokens = max_tokens
        self.name = f"llm:{backend.spec}"

    def scores(self, hypotheses: Sequence[str], gt_a: str, gt_b: str) -> list[int]:
        reqs = [GenerationRequest([ChatMessage("user", JUDGE_PROMPT.format(gt_a=gt_a, gt_b=gt_b, hypothesis=h))],
                                  max_tokens=self.max_tokens, json_mode=True) for h in hypotheses]  # fmt: skip
        return [parse_judge(r.text if r.ok else None) for r in self.backend.generate(reqs)] if reqs else []


def _srrg_leaves(text: str) -> set[str]:
    """Present SRR-BERT leaves of a text from the SRRG lexicon labeller (empty if SRRG is unavailable)."""
    try:
        from medfm.methods.srrg.lexicon import LexiconLabeller
    except ImportError:  # pragma: no cover - srrg ships with medfm
        return set()
    global _LEXICON
    if _LEXICON is None:
        _LEXICON = LexiconLabeller()
    return {k for k, v in _LEXICON.predict([text])[0].items() if v in ("Present", "Uncertain")}


_LEXICON: Any = None


def offline_score(hypothesis: str, gt_a: str, gt_b: str | None = None) -> int:
    """The offline 0/1/2 judge.

    2: the hypothesis names A's concept (affirmed) with every attribute A states (side, severity) and none that
    contradicts it. 1: same concept but missing an attribute A states, or its parent / child concept, or
    (when no concept matches) the SRRG lexicon finds the same finding in both texts. 0: otherwise, including
    a contradicting side or severity, a negated finding, or a hypothesis that matches B better than A.
    """
    hs = [m for m in mentions(hypothesis) if not m.negated]
    gas = [m for m in mentions(gt_a) if not m.negated]
    if not hs or not gas:
        if hs or gas:
            return 0
        shared = _srrg_leaves(hypothesis) & _srrg_leaves(gt_a)
        return 1 if shared else 0
    gbs = {m.concept: m for m in mentions(gt_b or "") if not m.negated}
    best = 0
    for g in gas:
        for h in hs:
            best = max(best, _pair_score(h, g, gbs.get(h.concept)))
    return best


def _pair_score(h: Mention, g: Mention, in_b: Mention | None) -> int:
    if h.concept == g.concept:
        if (h.side and g.side and h.side != g.side) or (h.severity and g.severity and h.severity != g.severity):
            return 0
        if in_b is not None:  # B has the finding too: only the attribute that differs separates the sets
            by_side = g.side != in_b.side and h.side == g.side
            by_severity = g.severity != in_b.severity and h.severity == g.severity
            if not (by_side or by_severity):
                return 0
        if (g.side and not h.side) or (g.severity and not h.severity):
            return 1
        return 2
    if g.concept in PARENTS.get(h.concept, ()) or h.concept in PARENTS.get(g.concept, ()):
        return 1
    return 0


class OfflineJudge:
    """:func:`offline_score` as a judge object."""

    name = "offline"

    def scores(self, hypotheses: Sequence[str], gt_a: str, gt_b: str) -> list[int]:
        return [offline_score(h, gt_a, gt_b) for h in hypotheses]


def acc_at_k(scores: Sequence[int], k: int) -> float:
    """max(score / 2) over the first ``k`` judged hypotheses (0 when there are none)."""
    top = list(scores)[:k]
    return float(max(top) / 2.0) if top else 0.0
