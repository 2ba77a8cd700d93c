"""Structuring free-text reports into the SRRG format (spec part 3.1).

* :class:`OfflineStructurer` needs no LLM: sentence splitting, sentence-to-organ-system assignment from the
  finding classifier's labels (keyword fallback), and negation-aware rewriting: a negated list that spans
  several organ systems ("No focal consolidation, pleural effusion or pneumothorax.") is rewritten into one
  negated bullet per organ system ("No focal consolidation." under Lungs and Airways, "No pleural effusion
  or pneumothorax." under Pleura). Every other sentence is kept verbatim, so no statement is lost.
  Impression sentences become a numbered list ordered by clinical importance (Present, then Uncertain, then
  negative/normal statements; stable otherwise).
* :class:`LLMStructurer` sends the format instructions and the report to any chat backend, validates the
  answer with :func:`~medfm.methods.srrg.structured.validate_structured` and asks for a repair with the list
  of problems, at most ``max_repairs`` times; an answer that stays invalid falls back to the offline
  structurer (or is returned with its problems when ``fallback=False``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from medfm.methods.srrg.labels import LEAF_ORGAN, NO_FINDING, STATUS_RANK, Findings
from medfm.methods.srrg.structured import (
    ORGAN_HEADERS,
    Problem,
    StructuredReport,
    parse_structured_problems,
    render,
    validate_structured,
)
from medfm.methods.srrg.text import free_text_sections, looks_english, split_sentences

log = logging.getLogger(__name__)

_KEYWORDS: tuple[tuple[str, str], ...] = (
    (
        "Tubes, Catheters, and Support Devices",
        r"\b(?:tube|catheter|line|picc|port|pacemaker|pacer|lead|leads|"
        r"wires?|device|drain|clips?|stent|hardware|valve|prosthe\w*|sternotomy|icd|defibrillator)\b",
    ),
    ("Pleura", r"\b(?:pleura\w*|effusions?|pneumothora\w*|costophrenic)\b"),
    ("Cardiovascular", r"\b(?:heart|cardiac|cardio\w*|aort\w*|vascular|vasculature|pericardi\w*)\b"),
    ("Hila and Mediastinum", r"\b(?:hil\w+|mediastin\w*|trachea\w*|thyroid)\b"),
    (
        "Musculoskeletal and Chest Wall",
        r"\b(?:bon\w+|osseous|rib|ribs|spine|spinal|vertebra\w*|fractur\w*|"
        r"clavic\w*|scapul\w*|shoulder|humer\w*|degenerative|scoliosis|kyphosis|osteo\w*|soft tissues?|chest wall|"
        r"breast|mastectomy|subcutaneous|sternum)\b",
    ),
    (
        "Abdominal",
        r"\b(?:abdom\w*|bowel|subdiaphragmatic|pneumoperitone\w*|stomach|liver|spleen|gallbladder|"
        r"cholecystectomy|upper quadrant|hiatal)\b",
    ),
    (
        "Lungs and Airways",
        r"\b(?:lungs?|pulmonary|airspace|air space|lobes?|lobar|basilar|bibasilar|apex|apical|"
        r"consolidat\w*|opacit\w*|atelecta\w*|pneumonia|edema|nodul\w*|granuloma\w*|emphysema|interstitial|"
        r"airways?|bronch\w*|infiltrat\w*|scarring|hyperinfla\w*|diaphragm\w*|hemidiaphragm\w*)\b",
    ),
)
_COMPILED_KW = tuple((h, re.compile(p)) for h, p in _KEYWORDS)
_NEG_LIST = re.compile(r"^(?P<lead>(?:there is |there are )?(?:no|without)(?: evidence of| signs? of)? )(?P<items>.+?)"
                       r"(?P<tail>\s+(?:is|are|was|were) (?:seen|identified|present|noted|demonstrated))?[.;]?$",
                       re.I)  # fmt: skip
_ORGAN_OF_TERM_FALLBACK = "Other"


def organ_of(sentence: str, findings: Findings) -> str:
    """Organ-system header of a sentence: the organ of its first labelled leaf, else keyword rules, else Other."""
    for leaf in findings:
        if leaf != NO_FINDING and leaf in LEAF_ORGAN:
            return LEAF_ORGAN[leaf]
    low = sentence.lower()
    best: tuple[int, str] | None = None
    for header, pat in _COMPILED_KW:
        m = pat.search(low)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), header)
    if best:
        return best[1]
    return "Lungs and Airways" if NO_FINDING in findings else _ORGAN_OF_TERM_FALLBACK


def split_negated_list(sentence: str, classifier: Any) -> list[tuple[str, str]] | None:
    """Rewrite "No A, B or C." spanning several organ systems into ``[(organ, "No A."), (organ2, "No B or C.")]``.

    Returns None when the sentence is not a negated list, or all its items belong to one organ system."""
    m = _NEG_LIST.match(sentence.strip())
    if not m:
        return None
    items = [x.strip() for x in re.split(r",\s*(?:or\s+|and\s+|nor\s+)?|\s+(?:or|and|nor)\s+", m.group("items"))
             if x.strip()]  # fmt: skip
    if len(items) < 2:
        return None
    labels = classifier.predict(items)
    organs = [organ_of(it, f) for it, f in zip(items, labels)]
    if len(set(organs)) < 2:
        return None
    lead = m.group("lead")
    lead = lead[0].upper() + lead[1:]
    tail = m.group("tail") or ""
    groups: dict[str, list[str]] = {}
    for it, org in zip(items, organs):
        groups.setdefault(org, []).append(it)
    out = []
    for org, its in groups.items():
        joined = its[0] if len(its) == 1 else ", ".join(its[:-1]) + " or " + its[-1]
        out.append((org, f"{lead}{joined}{tail}."))
    return out


def _importance(f: Findings) -> int:
    """0 = a present finding (most important), 1 = uncertain, 2 = negative / normal / unlabelled."""
    ranks = [STATUS_RANK[s] for leaf, s in f.items() if leaf != NO_FINDING]
    if not ranks or max(ranks) == 0:
        return 2
    return 0 if max(ranks) == 2 else 1


@dataclass
class StructureResult:
    """Output of a structurer.

    Attributes:
        report: the structured report.
        text: the rendered structured text.
        problems: validation problems left in ``text`` (empty when valid).
        attempts: backend calls made (0 for the offline structurer).
        source: ``offline``, ``llm`` or ``llm+fallback``.
        warnings: input problems (empty input, non-English text).
    """

    report: StructuredReport
    text: str
    problems: list[Problem] = field(default_factory=list)
    attempts: int = 0
    source: str = "offline"
    warnings: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems


def input_warnings(text: str) -> list[str]:
    out = []
    if not text or not text.strip():
        out.append("empty report")
    elif not looks_english(text):
        out.append("report does not look like English; structuring and labels may be unreliable")
    return out


class OfflineStructurer:
    """Rule-based structurer driven by a finding classifier (default: the lexicon labeller)."""

    def __init__(self, classifier: Any = None):
        if classifier is None:
            from medfm.methods.srrg.lexicon import LexiconLabeller

            classifier = LexiconLabeller()
        self.classifier = classifier

    def structure(self, text: str, findings: str | None = None, impression: str | None = None) -> StructureResult:
        """Structure one report given as free text (``FINDINGS: ... IMPRESSION: ...``) or as its two sections."""
        if findings is None and impression is None:
            sec = free_text_sections(text or "")
            findings = sec.get("findings", "")
            impression = sec.get("impression", "")
            if not findings and not impression:
                findings = sec.get("body", "")
        return self.structure_many([(findings or "", impression or "")], [text])[0]

    def structure_many(self, sections: Sequence[tuple[str, str]], raw: Sequence[str] | None = None
                       ) -> list[StructureResult]:  # fmt: skip
        """Structure many ``(findings, impression)`` pairs; the classifier labels all sentences in one batch."""
        f_sents = [split_sentences(f) for f, _ in sections]
        i_sents = [split_sentences(i) for _, i in sections]
        uniq = list(dict.fromkeys(s for ss in f_sents + i_sents for s in ss))
        labels = dict(zip(uniq, self.classifier.predict(uniq))) if uniq else {}
        out = []
        for k, (fs, imps) in enumerate(zip(f_sents, i_sents)):
            rep = StructuredReport()
            for s in fs:
                f = labels[s]
                split = split_negated_list(s, self.classifier) if len({organ_of(s, f)}) else None
                pieces = split if split else [(organ_of(s, f), s)]
                for organ, piece in pieces:
                    rep.findings.setdefault(organ, []).append(piece)
            rep.findings = {h: rep.findings[h] for h in ORGAN_HEADERS if h in rep.findings}
            order = sorted(range(len(imps)), key=lambda j: (_importance(labels[imps[j]]), j))
            rep.impression = [imps[j] for j in order]
            text = render(rep)
            src = raw[k] if raw else " ".join(sections[k])
            out.append(StructureResult(rep, text, validate_structured(text) if text else [], 0, "offline",
                                       input_warnings(src)))  # fmt: skip
        return out


FORMAT_INSTRUCTIONS = (
    "Rewrite the chest X-ray report below as a structured report. Use exactly this format and nothing else:\n"
    "Findings:\n<Organ header>:\n- <one finding per bullet>\n\n(blank line between organ blocks)\n\n"
    "Impression:\n1. <most important finding>\n2. <next finding>\n\n"
    "Valid organ headers (exact spelling): " + "; ".join(ORGAN_HEADERS) + ". Use only headers that have "
    "findings. Keep every clinical statement of the original, including negative ones ('No pneumothorax.'). "
    "Do not compare with prior studies and do not include names, dates or identifiers."
)


class LLMStructurer:
    """Structuring through a chat backend with validation and a bounded repair loop.

    Args:
        backend: a :class:`medfm.backends.Backend` (``make_backend("openai:...")``, ``hf:default``, scripted).
        max_repairs: repair requests after the first answer (total calls <= 1 + max_repairs).
        fallback: structure with :class:`OfflineStructurer` when the answer stays invalid.
        max_tokens: generation budget per call.
        require: sections the answer must contain (default: those the input has).
    """

    def __init__(self, backend: Any, max_repairs: int = 2, fallback: bool = True, max_tokens: int = 512,
                 classifier: Any = None):  # fmt: skip
        self.backend = backend
        self.max_repairs = int(max_repairs)
        self.fallback = fallback
        self.max_tokens = max_tokens
        self.offline = OfflineStructurer(classifier)

    def structure(self, text: str) -> StructureResult:
        from medfm.backends import ChatMessage, GenerationRequest

        warnings = input_warnings(text)
        sec = free_text_sections(text or "")
        require = tuple(k for k in ("findings", "impression") if sec.get(k))
        messages = [ChatMessage("system", FORMAT_INSTRUCTIONS), ChatMessage("user", f"Report:\n{text}")]
        answer, problems, attempts = "", [Problem("no_answer", "the backend gave no answer", 0, "report")], 0
        for attempt in range(1 + self.max_repairs):
            attempts += 1
            resp = self.backend.generate([GenerationRequest(messages, max_tokens=self.max_tokens)])[0]
            if not resp.ok:
                problems = [Problem("backend_error", f"backend error: {resp.error}", 0, "report")]
                break
            answer = resp.text.strip()
            problems = validate_structured(answer, require=require)
            if not problems:
                break
            if attempt < self.max_repairs:
                listing = "\n".join(f"- {p}" for p in problems[:20])
                messages = [*messages, ChatMessage("assistant", answer),
                            ChatMessage("user", "Your answer does not follow the format. Problems:\n" + listing +
                                        "\nReturn the corrected structured report only.")]  # fmt: skip
        if problems and self.fallback:
            log.warning("LLM structuring stayed invalid after %d call(s) (%s); using the offline structurer",
                        attempts, problems[0])  # fmt: skip
            res = self.offline.structure(text)
            res.attempts, res.source, res.warnings = attempts, "llm+fallback", warnings
            return res
        report, _ = parse_structured_problems(answer)
        return StructureResult(report, answer, problems, attempts, "llm", warnings)


def make_structurer(kind: str, classifier: Any = None, backend: str | None = None, max_repairs: int = 2) -> Any:
    """``offline`` or ``llm`` (needs ``backend``, a spec for :func:`medfm.backends.make_backend`)."""
    from medfm.core.errors import UsageError

    if kind == "offline":
        return OfflineStructurer(classifier)
    if kind == "llm":
        if not backend:
            raise UsageError(
                "--structurer llm needs --backend (e.g. openai:http://127.0.0.1:8000/v1#model or hf:default)"
            )
        from medfm.backends import make_backend

        return LLMStructurer(make_backend(backend), max_repairs=max_repairs, classifier=classifier)
    raise UsageError(f"unknown structurer {kind!r}; use offline or llm")
