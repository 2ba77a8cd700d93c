"""GREEN: the judge score, its length-controlled variant, the judge prompt and a robust parser of judge output.

GREEN (Ostmeier et al., EMNLP Findings 2024; ``Stanford-AIMI/GREEN:green_score``) asks a judge to compare a
candidate report with a reference and count

* clinically significant errors in six categories: (a) false report of a finding, (b) missing a finding present
  in the reference, (c) wrong anatomic location/position, (d) wrong severity, (e) mentioning a comparison absent
  in the reference, (f) omitting a comparison that describes change from a prior study;
* the same six categories of clinically insignificant errors (reported, not scored);
* matched findings ``M``.

``GREEN = M / (M + sum of significant errors)``, and 0 when ``M == 0`` (even with no errors).
LC-GREEN (CheXalign, ACL 2025) divides by the relative verbosity when the candidate is longer than the
reference: ``LC-GREEN = GREEN / max(words(candidate) / words(reference), 1)``.

This module is torch-free.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

#: The six error categories, in GREEN's (a)..(f) order.
CATEGORIES: tuple[str, ...] = (
    "false_finding",
    "missed_finding",
    "wrong_location",
    "wrong_severity",
    "false_comparison",
    "missed_comparison",
)
CATEGORY_TEXT: dict[str, str] = {
    "false_finding": "False report of a finding in the candidate",
    "missed_finding": "Missing a finding present in the reference",
    "wrong_location": "Misidentification of a finding's anatomic location/position",
    "wrong_severity": "Misassessment of the severity of a finding",
    "false_comparison": "Mentioning a comparison that isn't in the reference",
    "missed_comparison": "Omitting a comparison detailing a change from a prior study",
}
MAX_WORDS = 300  # GREEN truncates both reports to 300 whitespace words in its prompt


@dataclass
class GreenCounts:
    """What a GREEN judge found for one (reference, candidate) pair.

    Attributes:
        matched: number of matched findings ``M``.
        significant: clinically significant error count per category (keys of :data:`CATEGORIES`).
        insignificant: clinically insignificant error count per category (reported, not scored).
        matched_findings: the matched findings, when the judge lists them.
        explanation: the judge's free-text explanation, when any.
    """

    matched: int = 0
    significant: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    insignificant: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    matched_findings: list[str] = field(default_factory=list)
    explanation: str = ""

    @property
    def errors(self) -> int:
        """Sum of the clinically significant errors over the six categories."""
        return int(sum(self.significant.values()))

    @property
    def score(self) -> float:
        """GREEN of this pair."""
        return green_score(self.matched, self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "score": self.score}


def green_score(matched: int, significant_errors: int) -> float:
    """``M / (M + E)`` with the GREEN convention that the score is 0 when ``M == 0``.

    Args:
        matched: matched findings ``M`` (>= 0).
        significant_errors: sum of the clinically significant error counts ``E`` (>= 0).
    """
    if matched < 0 or significant_errors < 0:
        raise ValueError(f"counts must be non-negative, got M={matched}, E={significant_errors}")
    if matched == 0:
        return 0.0
    return float(matched) / float(matched + significant_errors)


def words(text: str) -> int:
    """Whitespace word count."""
    return len((text or "").split())


def relative_verbosity(candidate: str, reference: str) -> float:
    """``words(candidate) / words(reference)`` (a reference of 0 words counts as 1 word)."""
    return words(candidate) / max(words(reference), 1)


def length_controlled(score: float, candidate: str, reference: str) -> float:
    """LC variant of any judge score: ``score / max(words(candidate) / words(reference), 1)``."""
    return float(score) / max(relative_verbosity(candidate, reference), 1.0)


def clean_report(text: str) -> str:
    """CheXalign's text cleaning before judging: drop ``[...]`` tags and ``**``, collapse whitespace, lowercase."""
    text = re.sub(r"\[[^\]]*\]", " ", text or "")
    text = text.replace("**", " ")
    return " ".join(text.split()).lower()


# ----------------------------------------------------------------------------------------------------------------------
# Prompt


def _truncate(text: str, n: int = MAX_WORDS) -> str:
    return " ".join((text or "").split()[:n])


def make_prompt(reference: str, candidate: str) -> str:
    """The GREEN judge prompt (same structure and output format as ``green_score.utils.make_prompt``)."""
    cats = "\n".join(f"({k}) {CATEGORY_TEXT[c]}." for k, c in zip("abcdef", CATEGORIES))
    return (
        "Objective: Evaluate the accuracy of a candidate radiology report in comparison to a reference radiology "
        "report composed by expert radiologists.\n\n"
        "Process Overview: You will be presented with:\n\n"
        "1. The criteria for making a judgment.\n2. The reference radiology report.\n"
        "3. The candidate radiology report.\n4. The desired format for your assessment.\n\n"
        "1. Criteria for Judgment:\n\n"
        "For each candidate report, determine:\n\n"
        "The count of clinically significant errors.\nThe count of clinically insignificant errors.\n\n"
        "Errors can fall into one of these categories:\n\n"
        f"{cats}\n\n"
        "Note: Concentrate on the clinical findings rather than the report's writing style. Evaluate only the "
        "findings that appear in both reports.\n\n"
        f"2. Reference Report:\n{_truncate(reference)}\n\n"
        f"3. Candidate Report:\n{_truncate(candidate)}\n\n"
        "4. Reporting Your Assessment:\n\n"
        "Follow this specific format for your output, even if no errors are found:\n"
        "```\n[Explanation]:\n<Explanation>\n\n"
        "[Clinically Significant Errors]:\n"
        + "".join(
            f"({k}) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n" for k in "abcdef"
        )
        + "\n[Clinically Insignificant Errors]:\n"
        + "".join(
            f"({k}) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n" for k in "abcdef"
        )
        + "\n[Matched Findings]:\n<The number of matched findings>. <Finding 1>; <Finding 2>; ...; <Finding n>\n```\n"
    )


# ----------------------------------------------------------------------------------------------------------------------
# Parser


class GreenParseError(ValueError):
    """Judge output without the sections GREEN needs (no ``[Matched Findings]`` count)."""


_SECTION = re.compile(r"\[\s*([A-Za-z][A-Za-z ]*?)\s*\]\s*:?", re.MULTILINE)
_ITEM = re.compile(r"^\s*\(?\s*([a-f1-6])\s*[\).:]\s*(.*)$", re.IGNORECASE)
_INT = re.compile(r"(?<![\w.])(\d+)(?![\w])")


def _sections(text: str) -> dict[str, str]:
    """``{normalised heading: body}`` for every ``[Heading]:`` in ``text`` (body runs to the next heading)."""
    text = (text or "").replace("```", "\n")
    marks = list(_SECTION.finditer(text))
    out: dict[str, str] = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        key = " ".join(m.group(1).lower().split())
        out.setdefault(key, text[m.end() : end].strip())
    return out


def _find(sections: dict[str, str], *needles: str, exclude: str = "") -> str | None:
    for key, body in sections.items():
        if all(n in key for n in needles) and not (exclude and exclude in key):
            return body
    return None


def _count_after_colon(line: str) -> int:
    """Count in ``"<Error Type>: 2. first; second"``: the integer after the colon; 0 for "No"/"None"/missing."""
    rest = line.split(":", 1)[1] if ":" in line else line
    rest = rest.strip()
    if not rest or re.match(r"^(no|none|n/a|nil|zero)\b", rest, re.IGNORECASE):
        return 0
    m = _INT.search(rest[:12])
    return int(m.group(1)) if m else 0


def _error_counts(body: str | None) -> dict[str, int]:
    counts = dict.fromkeys(CATEGORIES, 0)
    if body is None:  # a missing section counts as no errors; "No errors" has no item lines and gives zeros below
        return counts
    for line in body.splitlines():
        m = _ITEM.match(line)
        if not m:
            continue
        key = m.group(1).lower()
        idx = "abcdef".index(key) if key in "abcdef" else int(key) - 1
        counts[CATEGORIES[idx]] = _count_after_colon(m.group(2))
    return counts


def parse_green(text: str) -> GreenCounts:
    """Parse a GREEN judge answer into :class:`GreenCounts`.

    Tolerates code fences, missing colons after headings, ``(1)..(6)`` instead of ``(a)..(f)``, "No errors"
    sections and extra prose. A missing error section counts as no errors; a missing or count-less
    ``[Matched Findings]`` section raises :class:`GreenParseError` (the score would be meaningless).
    """
    secs = _sections(text)
    matched_body = _find(secs, "matched")
    if matched_body is None:
        raise GreenParseError("judge output has no [Matched Findings] section")
    first = matched_body.strip().splitlines()[0].strip() if matched_body.strip() else ""
    if re.match(r"^(no|none|0\b)", first, re.IGNORECASE):
        matched, items = 0, []
    else:
        m = re.match(r"^\s*(\d+)", first)
        if not m:
            raise GreenParseError(f"[Matched Findings] does not start with a count: {first[:60]!r}")
        matched = int(m.group(1))
        items = [s.strip() for s in first[m.end() :].lstrip(". :").split(";") if s.strip()]
    return GreenCounts(
        matched=matched,
        significant=_error_counts(_find(secs, "significant", exclude="insignificant")),
        insignificant=_error_counts(_find(secs, "insignificant")),
        matched_findings=items,
        explanation=(_find(secs, "explanation") or "").strip(),
    )


def format_green(counts: GreenCounts, explanation: str = "") -> str:
    """Render counts in the GREEN output format (used by the offline judge's records and by tests)."""

    def block(d: dict[str, int]) -> str:
        return "".join(f"({k}) {CATEGORY_TEXT[c]}: {d[c]}.\n" for k, c in zip("abcdef", CATEGORIES))

    found = "; ".join(counts.matched_findings)
    return (
        f"[Explanation]:\n{explanation or counts.explanation or '-'}\n\n"
        f"[Clinically Significant Errors]:\n{block(counts.significant)}\n"
        f"[Clinically Insignificant Errors]:\n{block(counts.insignificant)}\n"
        f"[Matched Findings]:\n{counts.matched}. {found}\n"
    )
