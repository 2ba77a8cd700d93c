"""Free-text helpers: report sections, sentence splitting, numbering removal and an English check. Torch-free."""

from __future__ import annotations

import re

_ABBREV = ("dr", "mr", "mrs", "ms", "vs", "e.g", "i.e", "approx", "no", "fig", "st", "pt", "cm", "mm", "etc")
_NUM_PREFIX = re.compile(r"^\s*(?:\d+\s*[.)]|[-*\u2022])\s+")
_FREE_SECTION = re.compile(
    r"(?im)^\s*(findings|impression|conclusion|indication|history|comparison|technique|exam(?:ination)?|"
    r"clinical history|final report)\s*:"
)


def remove_list_marker(text: str) -> str:
    """Strip a leading ``1.``, ``2)``, ``-`` or bullet marker."""
    return _NUM_PREFIX.sub("", text).strip()


def split_sentences(text: str) -> list[str]:
    """Split report text into sentences (numbered items and lines are kept apart; decimals and common
    abbreviations like ``vs.`` do not end a sentence). Returns stripped, non-empty sentences."""
    if not text or not text.strip():
        return []
    out: list[str] = []
    # Numbered impressions written inline ("1. A. 2. B.") become separate lines first.
    text = re.sub(r"(?<=[.;])\s+(?=\d{1,2}\s*[.)]\s+[A-Za-z])", "\n", text)
    for line in text.splitlines():
        line = remove_list_marker(line)
        if not line:
            continue
        start = 0
        for m in re.finditer(r"[.!?;]+(?=\s+|$)|(?<=[a-z])\.(?=[A-Z][a-z])", line):
            end = m.end()
            piece = line[start:end]
            word = re.findall(r"([A-Za-z.]+)\.$", piece.strip())
            if word and word[-1].lower().rstrip(".") in _ABBREV and m.group(0) == "." and end < len(line):
                # "no." rarely ends a radiology sentence; only break when the next word is capitalised
                nxt = line[end:].lstrip()[:1]
                if not nxt.isupper():
                    continue
            if re.search(r"\d\.$", piece) and end < len(line) and line[end : end + 1].isdigit():
                continue
            s = piece.strip()
            if s and re.search(r"[A-Za-z]", s):
                out.append(s)
            start = end
        tail = line[start:].strip()
        if tail and re.search(r"[A-Za-z]", tail):
            out.append(tail)
    return out


def free_text_sections(text: str) -> dict[str, str]:
    """Sections of a free-text report keyed by lower-case name (``findings``, ``impression``, ...).

    Text before the first header goes under ``body``; ``conclusion`` counts as ``impression``. A report
    without any header is returned as ``{"body": text}``.
    """
    out: dict[str, str] = {}
    matches = list(_FREE_SECTION.finditer(text))
    if not matches:
        return {"body": text.strip()} if text.strip() else {}
    if text[: matches[0].start()].strip():
        out["body"] = text[: matches[0].start()].strip()
    for m, nxt in zip(matches, [*matches[1:], None]):
        name = m.group(1).lower()
        name = {"conclusion": "impression", "clinical history": "history", "examination": "exam"}.get(name, name)
        body = text[m.end() : nxt.start() if nxt else len(text)].strip()
        out[name] = (out.get(name, "") + " " + body).strip() if name in out else body
    return out


_ENGLISH = set(
    [
        "the",
        "a",
        "an",
        "of",
        "and",
        "or",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "no",
        "not",
        "with",
        "without",
        "there",
        "this",
        "that",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "by",
        "as",
        "is",
        "seen",
        "noted",
        "identified",
        "present",
        "normal",
        "unchanged",
        "stable",
        "heart",
        "lung",
        "lungs",
        "pleural",
        "effusion",
        "pneumothorax",
        "consolidation",
        "cardiac",
        "silhouette",
        "size",
        "mediastinal",
        "chest",
        "right",
        "left",
        "bilateral",
        "mild",
        "moderate",
        "small",
        "large",
        "opacity",
        "opacities",
        "clear",
        "acute",
        "evidence",
        "within",
        "limits",
        "focal",
        "upper",
        "lower",
        "lobe",
        "base",
        "bases",
        "tube",
        "line",
        "catheter",
        "atelectasis",
        "edema",
        "pulmonary",
        "vascular",
        "contour",
        "contours",
        "silhouette",
        "findings",
        "impression",
    ]
)


def looks_english(text: str, min_ratio: float = 0.15) -> bool:
    """Heuristic: at least ``min_ratio`` of the words are common English / radiology words.

    Texts with fewer than 4 words are accepted (too short to judge)."""
    words = re.findall(r"[^\W\d_]+", text.lower())
    if len(words) < 4:
        return True
    return sum(w in _ENGLISH for w in words) / len(words) >= min_ratio
