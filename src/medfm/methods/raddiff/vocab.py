"""Radiology concept vocabulary shared by the offline judge, the concept ranker and the offline proposer.

A *mention* is one concept found in a short text (a hypothesis or a ground-truth description) with its
attributes: side (``left``/``right``/``bilateral``), severity (``small``/``large``) and negation. Matching is
by synonyms (longest first) on lower-cased text; it is deliberately simple and fully deterministic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: concept -> (CheXpert-style finding or attribute it stands for, synonyms). Order matters only for ties.
CONCEPTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pleural effusion": (
        "Pleural Effusion",
        ("pleural effusion", "effusion", "costophrenic", "pleural fluid", "meniscus"),
    ),
    "cardiomegaly": (
        "Cardiomegaly",
        (
            "cardiomegaly",
            "enlarged heart",
            "heart is enlarged",
            "enlarged cardiac",
            "cardiac silhouette is enlarged",
            "cardiac enlargement",
            "large heart",
        ),
    ),
    "mediastinal widening": (
        "Enlarged Cardiomediastinum",
        ("widened mediastinum", "mediastinal widening", "mediastinum", "cardiomediastinal"),
    ),
    "pulmonary edema": ("Edema", ("edema", "oedema", "vascular congestion", "perihilar haz")),
    "consolidation": ("Consolidation", ("consolidation",)),
    "pneumonia": ("Pneumonia", ("pneumonia", "airspace disease")),
    "atelectasis": ("Atelectasis", ("atelectasis", "atelectatic")),
    "pneumothorax": ("Pneumothorax", ("pneumothorax", "pleural line")),
    "pleural thickening": ("Pleural Other", ("pleural thickening",)),
    "rib fracture": ("Fracture", ("fracture", "callus")),
    "support devices": (
        "Support Devices",
        ("support device", "catheter", "pacemaker", "central line", "venous line", "tube", "lead in the", "device"),
    ),
    "lung nodule": ("Nodule", ("nodule", "nodular")),
    "lung mass": ("Mass", ("mass",)),
    "lung opacity": ("Lung Opacity", ("opacity", "opacities", "opacification")),
    "corner marker": ("marker", ("marker", "corner token", "burned-in", "burned in", "annotation")),
    "portable ap view": ("AP view", ("portable", "ap view", "anteroposterior", "supine")),
    "female patient": ("female", ("female", "breast", "woman", "women")),
}
#: broader concept -> narrower concepts (a hypothesis naming the parent of the truth earns partial credit).
PARENTS: dict[str, tuple[str, ...]] = {
    "lung opacity": ("consolidation", "pneumonia", "atelectasis", "pulmonary edema", "lung nodule", "lung mass"),
    "support devices": (),
}
#: concepts whose side is meaningful.
LATERALISED = frozenset({"pleural effusion", "pneumothorax", "consolidation", "pneumonia", "atelectasis",
                         "pleural thickening", "rib fracture", "lung nodule", "lung mass"})  # fmt: skip

_SIDE = [("bilateral", ("bilateral", "both sides", "both lungs")), ("left", ("left",)), ("right", ("right",))]
_SEVERITY = [
    ("large", ("large", "moderate", "severe", "extensive", "massive", "big")),
    ("small", ("small", "mild", "trace", "tiny", "minimal", "subtle")),
]
_NEGATION = re.compile(r"\b(no|without|absence of|absent|negative for|not|free of|resolved|normal)\b")
_SPLIT = re.compile(r"[.;\n]|,\s*(?:and|but)\b|\bwith\b")
_SYNONYMS = sorted(((syn, c) for c, (_, syns) in CONCEPTS.items() for syn in syns), key=lambda t: -len(t[0]))


@dataclass(frozen=True)
class Mention:
    """One concept found in a text.

    Attributes:
        concept: key of :data:`CONCEPTS`.
        side: ``left``, ``right``, ``bilateral`` or None.
        severity: ``small``, ``large`` or None.
        negated: True when the clause negates it ("no pleural effusion").
    """

    concept: str
    side: str | None = None
    severity: str | None = None
    negated: bool = False


def _first(text: str, table: list[tuple[str, tuple[str, ...]]]) -> str | None:
    for value, words in table:
        if any(re.search(rf"\b{re.escape(w)}\b", text) for w in words):
            return value
    return None


def clause_mentions(clause: str) -> list[Mention]:
    """Concepts of one clause (no sentence splitting); attributes apply to every concept of the clause."""
    text = " " + clause.lower() + " "
    found: list[tuple[int, str]] = []
    taken = [False] * len(text)
    for syn, concept in _SYNONYMS:
        for m in re.finditer(rf"\b{re.escape(syn)}", text):
            if any(taken[m.start() : m.end()]):
                continue
            for k in range(m.start(), m.end()):
                taken[k] = True
            found.append((m.start(), concept))
    if not found:
        return []
    side = _first(text, _SIDE)
    severity = _first(text, _SEVERITY)
    negated = bool(_NEGATION.search(text))
    out, seen = [], set()
    for _, concept in sorted(found):
        if concept in seen:
            continue
        seen.add(concept)
        out.append(Mention(concept, side if concept in LATERALISED else None, severity, negated))
    return out


def mentions(text: str) -> list[Mention]:
    """Every concept mention of ``text``, clause by clause (first mention of a concept wins)."""
    out: list[Mention] = []
    seen: set[str] = set()
    for clause in _SPLIT.split(text or ""):
        for m in clause_mentions(clause):
            if m.concept not in seen:
                seen.add(m.concept)
                out.append(m)
    return out


def normalise_phrase(text: str) -> str:
    """Lower case, single spaces, no surrounding punctuation or list markers (for de-duplication)."""
    t = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", str(text)).strip().lower()
    t = re.sub(r"\s+", " ", t)
    return t.strip(" .,:;\"'`")
