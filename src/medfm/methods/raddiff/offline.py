"""An offline, deterministic stand-in for the proposer LLM: phrase-frequency contrast over the prompt's texts.

It reads the "Group A: ..." / "Group B: ..." lines of a proposer prompt, splits them into clauses, drops
negated clauses, counts in how many A and B texts each 1–4-word phrase occurs, and proposes the phrases
whose frequency is highest in A relative to B (more specific phrases win near-ties). A refinement prompt
(with "Top i Difference / Score" lines) adds longer phrases that contain a well-scoring previous hypothesis.
A de-duplication prompt is answered by exact-match de-duplication; a localisation prompt by five fixed
anatomical boxes (it cannot see images). It declares no image capability.

Use it as ``--proposer.backend offline:contrast``. It is a baseline for offline runs, not a language model.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence

from medfm.backends.base import Backend, Capabilities, GenerationRequest, GenerationResponse

_STOP = frozenset(["a", "an", "the", "of", "in", "at", "on", "to", "is", "are", "was", "were", "be", "been", "there", "this", "that", "with", "and", "or", "for", "as", "by", "from", "cannot", "may", "its", "it", "into", "than", "then", "also", "seen", "noted", "view", "chest", "consistent", "compatible", "findings", "finding", "represent", "may", "which", "within", "along", "lateral", "image", "images", "radiograph", "radiographs", "group"])  # fmt: skip
_NEG = re.compile(r"\b(no|without|negative|not|normal|clear|unremarkable|within normal)\b")
_CLAUSE = re.compile(r"[.;:\n]|\bimpression\b|\bfindings\b|\b\d+\.\s")
_FEEDBACK = re.compile(r"Top (\d+) Difference: (.*)\nTop \1 Score: ([\d.]+)")
#: the fixed regions returned for localisation prompts (normalised x1, y1, x2, y2 on one radiograph)
ANATOMICAL_BOXES = [
    (0.05, 0.55, 0.5, 0.95),  # right lower zone (image left)
    (0.5, 0.55, 0.95, 0.95),  # left lower zone
    (0.05, 0.05, 0.5, 0.45),  # right upper zone
    (0.5, 0.05, 0.95, 0.45),  # left upper zone
    (0.3, 0.3, 0.75, 0.8),  # heart and mediastinum
]


def _phrases(text: str, max_n: int = 4) -> set[str]:
    out: set[str] = set()
    for clause in _CLAUSE.split(text.lower()):
        if not clause.strip() or _NEG.search(clause):
            continue
        words = re.findall(r"[a-z][a-z-]*", clause)
        for n in range(1, max_n + 1):
            for i in range(len(words) - n + 1):
                gram = words[i : i + n]
                if gram[0] in _STOP or gram[-1] in _STOP or len(gram[-1]) < 3:
                    continue
                out.add(" ".join(gram))
    return out


def contrast_phrases(texts_a: Sequence[str], texts_b: Sequence[str], k: int = 10,
                     must_contain: str | None = None) -> list[tuple[str, float]]:  # fmt: skip
    """Top-``k`` phrases by ``freq_A - freq_B`` (document frequencies), preferring more specific phrases.

    A phrase is skipped when it is a word-subset of (or contains) an already chosen phrase whose contrast is
    within 0.1 of it. ``must_contain`` keeps only phrases containing all of its words (refinement).
    """
    if not texts_a:
        return []
    ca = Counter(p for t in texts_a for p in _phrases(t))
    cb = Counter(p for t in texts_b for p in _phrases(t))
    na, nb = len(texts_a), max(1, len(texts_b))
    req = set(must_contain.lower().split()) if must_contain else set()
    scored = []
    for p, c in ca.items():
        if req and not req <= set(p.split()):
            continue
        s = c / na - cb.get(p, 0) / nb
        if s > 0 and c >= 2:
            scored.append((p, s))
    scored.sort(key=lambda t: (-round(t[1], 1), -len(t[0].split()), -t[1], t[0]))
    chosen: list[tuple[str, float]] = []
    for p, s in scored:
        ws = set(p.split())
        if any((ws <= set(q.split()) or set(q.split()) <= ws) and abs(s - t) <= 0.1 for q, t in chosen):
            continue
        chosen.append((p, s))
        if len(chosen) >= k:
            break
    return chosen


def split_groups(prompt: str) -> tuple[list[str], list[str]]:
    a = [m.group(1) for m in re.finditer(r"^Group A: (.*)$", prompt, re.M)]
    b = [m.group(1) for m in re.finditer(r"^Group B: (.*)$", prompt, re.M)]
    return a, b


class PhraseContrastBackend(Backend):
    """The offline proposer stand-in (see module docstring).

    Args:
        k: phrases proposed per call.
        refine_min_score: previous hypotheses with AUROC at least this are refined into longer phrases.
    """

    def __init__(self, k: int = 10, refine_min_score: float = 0.6):
        self.k = k
        self.refine_min_score = refine_min_score
        self.spec = "offline:contrast"
        self.model_name = "phrase-contrast"
        self.capabilities = Capabilities(chat=True, images=False, json_mode=True)

    def _answer(self, req: GenerationRequest) -> str:
        prompt = next((m.content for m in reversed(req.messages) if m.role == "user"), "")
        if prompt.startswith("Here is a numbered list"):
            from medfm.methods.raddiff.proposer import exact_dedup

            items = [re.sub(r"^\d+\.\s*", "", ln) for ln in prompt.splitlines() if re.match(r"^\d+\.\s", ln)]
            return json.dumps({"differences": exact_dedup(items)})
        if "bounding boxes" in prompt:
            return json.dumps({"boxes": [dict(zip(("x1", "y1", "x2", "y2"), b)) for b in ANATOMICAL_BOXES]})
        a, b = split_groups(prompt)
        out: list[str] = []
        for m in _FEEDBACK.finditer(prompt):
            hyp, score = m.group(2).strip(), float(m.group(3))
            if score >= self.refine_min_score:
                out += [p for p, _ in contrast_phrases(a, b, k=3, must_contain=hyp) if p != hyp.lower()]
                out.append(hyp)
        out += [p for p, _ in contrast_phrases(a, b, k=self.k)]
        seen: set[str] = set()
        uniq = [p for p in out if not (p.lower() in seen or seen.add(p.lower()))]
        return json.dumps({"differences": uniq[: self.k + 5]})

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResponse]:
        return [GenerationResponse(self._answer(r), model=self.model_name) for r in requests]
