"""The SRRG structured report format: parser, validator and renderer (spec part 3.1).

Findings are blocks, each an organ-system header on its own line ending with ``:`` followed by ``- `` bullet
lines, blank line between blocks; only the 8 headers of :data:`ORGAN_HEADERS` are valid. The Impression is a
numbered list ``1. ... 2. ...``, one finding per line, ordered by clinical importance. A whole structured
report may carry the sections ``Exam Type:``, ``History:``, ``Technique:``, ``Comparison:``, ``Findings:`` and
``Impression:`` each on its own line::

    Findings:
    Lungs and Airways:
    - No focal consolidation.

    Pleura:
    - Small left pleural effusion.

    Impression:
    1. Small left pleural effusion.

The parsers follow StructEval's rules (leading non-word characters stripped before header matching; a line
that is neither a valid header nor a ``-`` bullet discards the current section; bullets before any header are
dropped; sections without bullets are removed; a leading ``Findings:`` is stripped; numbering gaps warned)
and return the warnings; :func:`validate_structured` reports every deviation as a :class:`Problem`.
Torch-free.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ORGAN_HEADERS: tuple[str, ...] = (
    "Lungs and Airways",
    "Pleura",
    "Cardiovascular",
    "Hila and Mediastinum",
    "Tubes, Catheters, and Support Devices",
    "Musculoskeletal and Chest Wall",
    "Abdominal",
    "Other",
)
REPORT_SECTIONS: tuple[str, ...] = ("Exam Type", "History", "Technique", "Comparison", "Findings", "Impression")

_NUMBERED = re.compile(r"^\s*(\d+)\s*[.)]\s*(.*)$")
_LEADING_NONWORD = re.compile(r"^[^\w]+")
_SECTION_LINE = re.compile(r"^\s*(exam type|history|technique|comparison|findings|impression)\s*:\s*(.*)$", re.I)


@dataclass
class Problem:
    """One deviation from the structured format.

    Attributes:
        code: machine-readable kind (``unknown_header``, ``stray_line``, ``numbering_gap`` ...).
        message: one human-readable line.
        line: 1-based line number in the checked text (0 when not tied to a line).
        section: ``findings``, ``impression`` or ``report``.
    """

    code: str
    message: str
    line: int = 0
    section: str = "findings"

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{self.section}: {where}{self.message}"


@dataclass
class StructuredReport:
    """A structured report.

    Attributes:
        findings: organ-system header -> bullet texts (without ``- ``), in report order.
        impression: impression items (without numbering), most important first.
        exam_type, history, technique, comparison: free-text header sections ('' when absent).
        warnings: what the parser had to repair or drop.
    """

    findings: dict[str, list[str]] = field(default_factory=dict)
    impression: list[str] = field(default_factory=list)
    exam_type: str = ""
    history: str = ""
    technique: str = ""
    comparison: str = ""
    warnings: list[str] = field(default_factory=list)

    def findings_text(self) -> str:
        return render_findings(self.findings)

    def impression_text(self) -> str:
        return render_impression(self.impression)

    def utterances(self) -> list[str]:
        """Every bullet and impression item (the units SRR-BERT labels)."""
        return [b for bullets in self.findings.values() for b in bullets] + list(self.impression)

    def to_dict(self) -> dict[str, object]:
        return {"findings": {k: list(v) for k, v in self.findings.items()}, "impression": list(self.impression),
                "exam_type": self.exam_type, "history": self.history, "technique": self.technique,
                "comparison": self.comparison}  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# Rendering


def render_findings(findings: dict[str, list[str]]) -> str:
    """Organ blocks ``Header:\\n- bullet`` separated by blank lines, in :data:`ORGAN_HEADERS` order.

    Raises:
        ValueError: a header outside :data:`ORGAN_HEADERS`.
    """
    unknown = [h for h in findings if h not in ORGAN_HEADERS]
    if unknown:
        raise ValueError(f"unknown organ header(s) {unknown}; valid: {', '.join(ORGAN_HEADERS)}")
    blocks = []
    for header in ORGAN_HEADERS:
        bullets = [b.strip() for b in findings.get(header, []) if b.strip()]
        if bullets:
            blocks.append(header + ":\n" + "\n".join(f"- {b}" for b in bullets))
    return "\n\n".join(blocks)


def render_impression(items: list[str]) -> str:
    """``1. item`` lines, numbered from 1."""
    items = [i.strip() for i in items if i.strip()]
    return "\n".join(f"{k}. {item}" for k, item in enumerate(items, 1))


def render(report: StructuredReport, sections: tuple[str, ...] = REPORT_SECTIONS) -> str:
    """The whole structured report: each non-empty section as ``Name:`` then its body, blank line between."""
    parts = []
    for name in sections:
        if name == "Findings":
            body = render_findings(report.findings)
        elif name == "Impression":
            body = render_impression(report.impression)
        else:
            body = getattr(report, name.lower().replace(" ", "_")).strip()
        if body:
            parts.append(f"{name}:\n{body}")
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------------------------------------------------
# Parsing


def _match_header(line: str, lower: bool = False) -> str | None:
    text = _LEADING_NONWORD.sub("", line.strip())
    if not text.endswith(":"):
        return None
    name = text[:-1].strip()
    for h in ORGAN_HEADERS:
        if name == h or (lower and name.lower() == h.lower()):
            return h
    return None


def parse_findings_problems(text: str, do_lower_case: bool = False, line_offset: int = 0
                            ) -> tuple[dict[str, list[str]], list[Problem]]:  # fmt: skip
    """Parse a Findings section; returns ``(header -> bullets, problems)`` (StructEval rules)."""
    problems: list[Problem] = []
    lines = text.splitlines()
    out: dict[str, list[str]] = {}
    current: str | None = None
    discarded: set[str] = set()
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is not None and re.match(r"^\s*findings\s*:\s*$", lines[first], re.I):
        problems.append(Problem("findings_prefix", "leading 'Findings:' line stripped", first + 1 + line_offset))
        lines = [*lines[:first], "", *lines[first + 1 :]]
    for i, raw in enumerate(lines, 1 + line_offset):
        line = raw.strip()
        if not line:
            continue
        header = _match_header(line, lower=True)
        if header is not None:
            if header in out:
                problems.append(Problem("duplicate_header", f"header '{header}' appears more than once", i))
            if _LEADING_NONWORD.sub("", line)[:-1].strip() != header:
                problems.append(Problem("header_case", f"header {line!r} should be written '{header}:'", i))
            current = header
            out.setdefault(header, [])
            continue
        if line.startswith("-"):
            bullet = line[1:].strip()
            if current is None:
                problems.append(Problem("bullet_before_header", f"bullet before any organ header dropped: {line!r}", i))
                continue
            if not raw.lstrip().startswith("- "):
                problems.append(Problem("bullet_format", f"bullet should start with '- ': {line!r}", i))
            if not bullet:
                problems.append(Problem("empty_bullet", "empty bullet line", i))
                continue
            out[current].append(bullet.lower() if do_lower_case else bullet)
            continue
        if line.endswith(":") and len(line) < 60:
            problems.append(Problem("unknown_header", f"{line!r} is not one of the 8 organ headers "
                                    f"({', '.join(ORGAN_HEADERS)})", i))  # fmt: skip
        else:
            problems.append(
                Problem("stray_line", f"line is neither an organ header nor a '- ' bullet: {line[:60]!r}", i)
            )
        if current is not None:
            discarded.add(current)
            problems.append(Problem("section_discarded", f"section '{current}' discarded after the stray line", i))
            out.pop(current, None)
        current = None
    for header in [h for h, b in out.items() if not b]:
        if header not in discarded:
            problems.append(Problem("empty_section", f"section '{header}' has no bullets and was removed"))
        out.pop(header)
    return out, problems


def parse_findings(text: str, do_lower_case: bool = False) -> tuple[dict[str, list[str]], list[str]]:
    """Parse a Findings section: ``(header -> bullets, warnings)``."""
    out, problems = parse_findings_problems(text, do_lower_case)
    return out, [str(p) for p in problems]


def parse_impression_problems(text: str, do_lower_case: bool = False, line_offset: int = 0
                              ) -> tuple[list[str], list[Problem]]:  # fmt: skip
    """Parse a numbered Impression list; returns ``(items without numbering, problems)``."""
    problems: list[Problem] = []
    items: list[str] = []
    expected = 1
    lines = text.splitlines()
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is not None and re.match(r"^\s*impression\s*:\s*$", lines[first], re.I):
        problems.append(Problem("impression_prefix", "leading 'Impression:' line stripped", first + 1 + line_offset,
                                "impression"))  # fmt: skip
        lines = [*lines[:first], "", *lines[first + 1 :]]
    for i, raw in enumerate(lines, 1 + line_offset):
        line = raw.strip()
        if not line:
            continue
        m = _NUMBERED.match(line)
        if m is None:
            problems.append(Problem("not_numbered", f"impression line is not numbered ('1. ...'): {line[:60]!r}", i,
                                    "impression"))  # fmt: skip
            item = line.lstrip("-* ").strip()
        else:
            number, item = int(m.group(1)), m.group(2).strip()
            if number != expected:
                problems.append(Problem("numbering_gap", f"item numbered {number}, expected {expected}", i,
                                        "impression"))  # fmt: skip
            expected = number + 1
        if not item:
            problems.append(Problem("empty_item", "empty impression item", i, "impression"))
            continue
        items.append(item.lower() if do_lower_case else item)
    return items, problems


def parse_impression(text: str, do_lower_case: bool = False) -> list[str]:
    """Impression items without numbering (StructEval ``remove_numbering(parse_impression(...))``)."""
    return parse_impression_problems(text, do_lower_case)[0]


def remove_numbering(items: list[str]) -> list[str]:
    return [_NUMBERED.sub(r"\2", x).strip() for x in items]


def split_report_sections(text: str) -> tuple[dict[str, str], dict[str, int]]:
    """Split a structured report at ``Name:`` section lines; returns ``(name -> body, name -> first line no.)``."""
    sections: dict[str, list[str]] = {}
    starts: dict[str, int] = {}
    current: str | None = None
    for i, raw in enumerate(text.splitlines(), 1):
        m = _SECTION_LINE.match(raw)
        if m and ((m.group(1).lower() in {"findings", "impression"} and not m.group(2).strip()) or
                  m.group(1).lower() not in {"findings", "impression"}):  # fmt: skip
            name = next(s for s in REPORT_SECTIONS if s.lower() == m.group(1).lower())
            current = name
            sections.setdefault(name, [])
            starts.setdefault(name, i)
            if m.group(2).strip():
                sections[name].append(m.group(2).strip())
            continue
        if current is None:
            current = "_preamble"
            sections.setdefault(current, [])
            starts.setdefault(current, i)
        sections[current].append(raw)
    return {k: "\n".join(v).strip("\n") for k, v in sections.items()}, starts


def _looks_numbered(text: str) -> bool:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return bool(lines) and all(_NUMBERED.match(ln) for ln in lines)


def parse_structured_problems(text: str, do_lower_case: bool = False) -> tuple[StructuredReport, list[Problem]]:
    """Parse a whole structured report (or a bare Findings / Impression section) with every problem."""
    sections, starts = split_report_sections(text)
    report = StructuredReport()
    problems: list[Problem] = []
    pre = sections.pop("_preamble", "")
    if pre.strip():
        if "Findings" in sections or "Impression" in sections:
            problems.append(Problem("stray_line", "text before the first section header", starts["_preamble"],
                                    "report"))  # fmt: skip
        elif _looks_numbered(pre):
            sections["Impression"], starts["Impression"] = pre, starts["_preamble"] - 1
        else:
            sections["Findings"], starts["Findings"] = pre, starts["_preamble"] - 1
    if "Findings" in sections:
        report.findings, probs = parse_findings_problems(sections["Findings"], do_lower_case, starts["Findings"])
        problems += probs
    if "Impression" in sections:
        report.impression, probs = parse_impression_problems(sections["Impression"], do_lower_case,
                                                             starts["Impression"])  # fmt: skip
        problems += probs
    for name in ("Exam Type", "History", "Technique", "Comparison"):
        setattr(report, name.lower().replace(" ", "_"), sections.get(name, "").strip())
    if not report.findings and not report.impression:
        problems.append(Problem("empty_report", "no Findings bullets and no Impression items", 0, "report"))
    report.warnings = [str(p) for p in problems]
    return report, problems


def parse_structured(text: str, do_lower_case: bool = False) -> StructuredReport:
    """Parse a structured report; what had to be repaired is in ``.warnings`` (see :func:`validate_structured`)."""
    return parse_structured_problems(text, do_lower_case)[0]


def validate_structured(text: str, require: tuple[str, ...] = ()) -> list[Problem]:
    """Every deviation of ``text`` from the structured format (empty list when valid).

    Args:
        text: a whole structured report, or a bare Findings or Impression section.
        require: sections that must be present and non-empty (``"findings"``, ``"impression"``).
    """
    if not text or not text.strip():
        return [Problem("empty_report", "the report is empty", 0, "report")]
    report, problems = parse_structured_problems(text)
    # A lone "Findings:" or "Impression:" line inside a whole report is a section header, not a problem.
    if "Findings" in split_report_sections(text)[0]:
        problems = [p for p in problems if p.code != "findings_prefix"]
    problems = [p for p in problems if p.code != "impression_prefix"]
    if "findings" in require and not report.findings:
        problems.append(Problem("missing_findings", "no Findings section with organ headers and bullets"))
    if "impression" in require and not report.impression:
        problems.append(Problem("missing_impression", "no numbered Impression items", 0, "impression"))
    return problems
