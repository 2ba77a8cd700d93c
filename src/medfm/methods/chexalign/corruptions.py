"""Planted, known errors in a reference report: candidates with ground truth for tests and benchmarks. Torch-free.

* :func:`swap_sides` — every ``left`` / ``right`` exchanged (GREEN error (c), wrong location);
* :func:`swap_findings` — findings substituted by another finding (errors (a) false and (b) missed finding).
"""

from __future__ import annotations

import re

#: side word -> the opposite side (case kept).
SIDE_SWAPS: dict[str, str] = {"left": "right", "right": "left", "Left": "Right", "Right": "Left"}

#: finding (lower case) -> the finding that replaces it.
FINDING_SWAPS: dict[str, str] = {
    "pneumothorax": "pleural effusion",
    "pleural effusion": "pneumothorax",
    "atelectasis": "consolidation",
    "consolidation": "atelectasis",
    "nodule": "mass",
    "mass": "nodule",
    "pneumonia": "edema",
    "fracture": "nodule",
    "pleural thickening": "pneumothorax",
    "cardiomegaly": "pulmonary edema",
    "edema": "cardiomegaly",
}

_SIDE_RE = re.compile(r"\b(left|right|Left|Right)\b")
_FINDING_RE = re.compile(rf"\b({'|'.join(sorted(FINDING_SWAPS, key=len, reverse=True))})\b", re.IGNORECASE)


def swap_sides(text: str) -> str:
    """``text`` with every side word exchanged (``left`` <-> ``right``, ``Left`` <-> ``Right``)."""
    return _SIDE_RE.sub(lambda m: SIDE_SWAPS[m.group(1)], text)


def swap_findings(text: str, count: int = 0) -> str:
    """``text`` with the first ``count`` finding mentions (0: all) replaced per :data:`FINDING_SWAPS` (longest
    finding first, any case; the replacement is lower case)."""
    return _FINDING_RE.sub(lambda m: FINDING_SWAPS[m.group(1).lower()], text, count=count)
