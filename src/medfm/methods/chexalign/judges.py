"""Judges: a scalar reward per (reference, candidate) report pair.

* :class:`OfflineGreenJudge` — a rule-based GREEN surrogate. Findings are read per sentence with SRRG's finding
  classifier (the :class:`~medfm.methods.srrg.lexicon.LexiconLabeller` by default, or a trained
  :class:`~medfm.methods.srrg.classifier.FindingClassifier`): each SRR-BERT leaf gets a status (Present, Uncertain,
  Absent) plus the laterality and severity words of the sentence that mentions it. Then, per leaf:

  - positive (Present/Uncertain) in both, same side and severity (where both state one): a **matched finding**;
    both Absent (an agreed negative) or both "No Finding": also matched;
  - positive in both with a different side: error (c) wrong location; different severity: error (d);
  - positive in the candidate only: error (a) false finding; positive in the reference only: error (b) missed
    finding (whether the candidate negates it or is silent);
  - a comparison with a prior study ("compared", "prior", "interval", "unchanged", "new", ...) stated by the
    candidate only: error (e); by the reference only: error (f).

  The score is GREEN = M / (M + E), 0 when M = 0 (:func:`.green.green_score`).
* :class:`LLMGreenJudge` — any :mod:`medfm.backends` model prompted with the GREEN prompt
  (:func:`.green.make_prompt`, greedy) and parsed by :func:`.green.parse_green`; unparseable answers get
  ``score=None`` and an ``error`` (never a guessed number).
* :class:`BertScoreJudge` — BERTScore-style F1: greedy cosine matching of MiniLM (all-MiniLM-L6-v2, offline asset)
  contextual token embeddings, special tokens excluded, no idf weighting, no baseline rescaling.
* ``length_control=True`` on any judge gives its LC variant: ``score / max(words(cand)/words(ref), 1)``.

All judges clean both texts as CheXalign does (:func:`.green.clean_report`) before scoring.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from medfm.core.errors import UsageError
from medfm.methods.chexalign.green import (
    CATEGORIES,
    GreenCounts,
    GreenParseError,
    clean_report,
    format_green,
    length_controlled,
    make_prompt,
    parse_green,
)

log = logging.getLogger(__name__)

JUDGE_KINDS = ("offline", "llm", "bertscore")


@dataclass
class JudgeResult:
    """One judged pair.

    Attributes:
        score: the reward (GREEN, LC-GREEN, BERTScore F1 ...), None when the judge's output did not parse.
        raw_score: the score before length control (equals ``score`` without it).
        counts: GREEN counts (GREEN judges only).
        error: why ``score`` is None.
        text: the judge's raw output (LLM judge) or a GREEN-format rendering (offline judge).
    """

    score: float | None
    raw_score: float | None = None
    counts: GreenCounts | None = None
    error: str | None = None
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "raw_score": self.raw_score,
            "error": self.error,
            "counts": self.counts.to_dict() if self.counts else None,
        }


class Judge:
    """Base: ``judge(references, candidates) -> list[JudgeResult]``; subclasses implement :meth:`_raw`."""

    name = "judge"

    def __init__(self, length_control: bool = False):
        self.length_control = length_control

    def _raw(self, references: list[str], candidates: list[str]) -> list[JudgeResult]:
        raise NotImplementedError

    def judge(self, references: Sequence[str], candidates: Sequence[str]) -> list[JudgeResult]:
        """Score each candidate against its reference (equal-length lists of report texts)."""
        if len(references) != len(candidates):
            raise ValueError(f"{len(references)} references but {len(candidates)} candidates")
        refs = [clean_report(r) for r in references]
        cands = [clean_report(c) for c in candidates]
        out = self._raw(refs, cands)
        for r, ref, cand in zip(out, refs, cands):
            r.raw_score = r.score
            if self.length_control and r.score is not None:
                r.score = length_controlled(r.score, cand, ref)
        return out

    def scores(self, references: Sequence[str], candidates: Sequence[str]) -> list[float | None]:
        return [r.score for r in self.judge(references, candidates)]

    @property
    def label(self) -> str:
        return ("lc-" if self.length_control else "") + self.name


# ----------------------------------------------------------------------------------------------------------------------
# Offline GREEN surrogate

_SIDE = (
    ("bilateral", re.compile(r"\b(?:bilateral(?:ly)?|both)\b")),
    ("right", re.compile(r"\bright\b")),
    ("left", re.compile(r"\bleft\b")),
)
_SEVERITY = (
    ("mild", re.compile(r"\b(?:small|tiny|trace|mild|minimal|minor|subtle)\b")),
    ("moderate", re.compile(r"\bmoderate\b")),
    ("severe", re.compile(r"\b(?:large|severe|massive|extensive|marked)\b")),
)
_COMPARISON = re.compile(
    r"\b(?:compared (?:to|with)|comparison|prior (?:study|exam|examination|radiograph|film)|previous(?:ly)?|"
    r"interval(?:ly)?|unchanged|stable|new(?:ly)?|improv\w+|worsen\w*|increas\w+|decreas\w+|resolv\w+)\b"
)
_SENT = re.compile(r"(?<=[.!?;])\s+|\n+|\s(?=\d+\.\s)")


def _first(patterns: tuple[tuple[str, Any], ...], text: str) -> str | None:
    for name, pat in patterns:
        if pat.search(text):
            return name
    return None


@dataclass
class FindingMention:
    """A leaf as stated in a report: status plus the side/severity words of the sentence stating it."""

    status: str
    side: str | None = None
    severity: str | None = None


@dataclass
class ReportFindings:
    """Findings of one report: ``{leaf: FindingMention}``, whether it states "no finding", comparison mention."""

    leaves: dict[str, FindingMention] = field(default_factory=dict)
    normal: bool = False
    comparison: bool = False

    def positive(self) -> dict[str, FindingMention]:
        return {k: v for k, v in self.leaves.items() if v.status in ("Present", "Uncertain")}


def split_sentences(text: str) -> list[str]:
    """Sentences (and numbered impression items) of a report; section headers stripped."""
    text = re.sub(r"\b(?:findings|impression)\s*:\s*", " ", text or "", flags=re.IGNORECASE)
    return [s.strip(" .") for s in _SENT.split(text) if s and s.strip(" .")]


_RANK = {"Absent": 0, "Uncertain": 1, "Present": 2}


def read_findings(texts: Sequence[str], classifier: Any = None) -> list[ReportFindings]:
    """:class:`ReportFindings` of each report (classifier: anything with SRRG's ``predict(sentences)``)."""
    from medfm.methods.srrg.labels import NO_FINDING

    if classifier is None:
        from medfm.methods.srrg.lexicon import LexiconLabeller

        classifier = LexiconLabeller()
    sents = [split_sentences(t) for t in texts]
    flat = [s for ss in sents for s in ss]
    preds = classifier.predict(flat) if flat else []
    out, k = [], 0
    for ss in sents:
        rf = ReportFindings()
        for s in ss:
            labels, k = preds[k], k + 1
            low = s.lower()
            rf.comparison = rf.comparison or bool(_COMPARISON.search(low))
            for leaf, status in labels.items():
                if leaf == NO_FINDING:
                    rf.normal = True
                    continue
                mention = FindingMention(status, _first(_SIDE, low), _first(_SEVERITY, low))
                old = rf.leaves.get(leaf)
                if old is None or _RANK[status] > _RANK[old.status]:
                    rf.leaves[leaf] = mention
        if rf.positive():
            rf.normal = False
        out.append(rf)
    return out


def compare_findings(reference: ReportFindings, candidate: ReportFindings) -> GreenCounts:
    """GREEN counts of a candidate's findings against the reference's (rules in the module docstring)."""
    sig = dict.fromkeys(CATEGORIES, 0)
    matched: list[str] = []
    ref_pos, cand_pos = reference.positive(), candidate.positive()
    for leaf, r in ref_pos.items():
        c = cand_pos.get(leaf)
        if c is None:
            sig["missed_finding"] += 1
            continue
        if r.side and c.side and r.side != c.side:
            sig["wrong_location"] += 1
        elif r.severity and c.severity and r.severity != c.severity:
            sig["wrong_severity"] += 1
        else:
            matched.append(leaf)
    sig["false_finding"] += sum(1 for leaf in cand_pos if leaf not in ref_pos)
    for leaf, r in reference.leaves.items():
        c = candidate.leaves.get(leaf)
        if r.status == "Absent" and c is not None and c.status == "Absent":
            matched.append(f"no {leaf}")
    if reference.normal and candidate.normal:
        matched.append("no acute findings")
    if candidate.comparison and not reference.comparison:
        sig["false_comparison"] += 1
    if reference.comparison and not candidate.comparison:
        sig["missed_comparison"] += 1
    return GreenCounts(matched=len(matched), significant=sig, matched_findings=matched)


class OfflineGreenJudge(Judge):
    """Rule-based GREEN from the SRRG finding classifier (see module docstring).

    Args:
        classifier: SRRG classifier (``predict(sentences) -> [{leaf: status}]``) or a source for
            :func:`medfm.methods.srrg.classifier.load_classifier` (``"lexicon"`` or a trained model folder).
        length_control: return LC-GREEN instead of GREEN.
    """

    name = "green-offline"

    def __init__(self, classifier: Any = "lexicon", length_control: bool = False):
        super().__init__(length_control)
        if isinstance(classifier, str):
            if classifier == "lexicon":
                from medfm.methods.srrg.lexicon import LexiconLabeller

                classifier = LexiconLabeller()
            else:
                from medfm.methods.srrg.classifier import load_classifier

                classifier = load_classifier(classifier)
        self.classifier = classifier

    def _raw(self, references: list[str], candidates: list[str]) -> list[JudgeResult]:
        uniq = list(dict.fromkeys(references + candidates))
        found = dict(zip(uniq, read_findings(uniq, self.classifier)))
        out = []
        for ref, cand in zip(references, candidates):
            counts = compare_findings(found[ref], found[cand])
            out.append(JudgeResult(counts.score, counts=counts, text=format_green(counts)))
        return out


# ----------------------------------------------------------------------------------------------------------------------
# LLM judge


class LLMGreenJudge(Judge):
    """GREEN with an LLM judge through any backend (greedy; the answer is parsed by :func:`parse_green`).

    Args:
        backend: a :class:`medfm.backends.Backend` or a spec string for :func:`medfm.backends.make_backend`.
        max_tokens: most tokens of the judge's answer.
        cache: sqlite response cache path (spec strings only), so re-judging is free.
    """

    name = "green-llm"

    def __init__(self, backend: Any, length_control: bool = False, max_tokens: int = 512, cache: str | None = None):
        super().__init__(length_control)
        if isinstance(backend, str):
            from medfm.backends import make_backend

            backend = make_backend(backend, cache=cache)
        self.backend = backend
        self.max_tokens = max_tokens

    def _raw(self, references: list[str], candidates: list[str]) -> list[JudgeResult]:
        from medfm.backends import GenerationRequest

        reqs = [
            GenerationRequest.of(make_prompt(r, c), max_tokens=self.max_tokens, temperature=0.0)
            for r, c in zip(references, candidates)
        ]
        out = []
        for resp in self.backend.generate(reqs):
            if not resp.ok:
                out.append(JudgeResult(None, error=f"backend error: {resp.error}", text=resp.text))
                continue
            try:
                counts = parse_green(resp.text)
            except GreenParseError as exc:
                out.append(JudgeResult(None, error=f"unparseable judge output: {exc}", text=resp.text))
                continue
            out.append(JudgeResult(counts.score, counts=counts, text=resp.text))
        return out


# ----------------------------------------------------------------------------------------------------------------------
# BERTScore-style judge


class BertScoreJudge(Judge):
    """BERTScore F1 with MiniLM token embeddings (greedy max-cosine matching; see module docstring).

    Args:
        model: a folder of a BERT-like encoder (default: the offline all-MiniLM-L6-v2 asset).
        device: torch device.
        batch_size: texts per forward pass.
    """

    name = "bertscore-minilm"

    def __init__(
        self, model: str | None = None, length_control: bool = False, device: str = "cpu", batch_size: int = 32
    ):
        super().__init__(length_control)
        self.model_path = model
        self.device = device
        self.batch_size = batch_size
        self._enc: tuple[Any, Any] | None = None

    def _encoder(self) -> tuple[Any, Any]:
        if self._enc is None:
            from transformers import AutoModel, AutoTokenizer

            path = self.model_path
            if path is None:
                from medfm.data.assets import minilm_path

                path = str(minilm_path())
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModel.from_pretrained(path).to(self.device).eval()
            self._enc = (tok, model)
        return self._enc

    def embed(self, texts: Sequence[str]) -> list[Any]:
        """Per text: ``(T_i, D)`` L2-normalised token embeddings (special tokens removed; empty text -> (0, D))."""
        import torch

        tok, model = self._encoder()
        out: list[Any] = []
        for j in range(0, len(texts), self.batch_size):
            chunk = [t if t.strip() else "" for t in texts[j : j + self.batch_size]]
            enc = tok(
                chunk,
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
                return_special_tokens_mask=True,
            ).to(self.device)
            special = enc.pop("special_tokens_mask").bool()
            with torch.inference_mode():
                hidden = model(**enc).last_hidden_state
            hidden = torch.nn.functional.normalize(hidden.float(), dim=-1)
            keep = enc["attention_mask"].bool() & ~special
            out += [hidden[i][keep[i]].cpu() for i in range(len(chunk))]
        return out

    def _raw(self, references: list[str], candidates: list[str]) -> list[JudgeResult]:
        uniq = list(dict.fromkeys(references + candidates))
        emb = dict(zip(uniq, self.embed(uniq)))
        out = []
        for ref, cand in zip(references, candidates):
            out.append(JudgeResult(bertscore_f1(emb[ref], emb[cand])))
        return out


def bertscore_f1(ref: Any, cand: Any) -> float:
    """BERTScore F1 of two ``(T, D)`` L2-normalised token embedding matrices (0 when either is empty).

    ``R = mean_i max_j <r_i, c_j>``, ``P = mean_j max_i <r_i, c_j>``, ``F = 2PR / (P + R)``.
    """
    if len(ref) == 0 or len(cand) == 0:
        return 0.0
    sim = ref @ cand.T
    r = float(sim.max(1).values.mean())
    p = float(sim.max(0).values.mean())
    return 0.0 if p + r <= 0 else 2 * p * r / (p + r)


def make_judge(
    kind: str,
    *,
    length_control: bool = False,
    classifier: str = "lexicon",
    backend: str = "",
    cache: str | None = None,
    device: str = "cpu",
) -> Judge:
    """A judge by name: ``offline`` (GREEN surrogate), ``llm`` (needs ``backend``) or ``bertscore``."""
    if kind == "offline":
        return OfflineGreenJudge(classifier, length_control=length_control)
    if kind == "llm":
        if not backend:
            raise UsageError("--judge.kind llm needs --judge.backend (e.g. hf:default or openai:http://host/v1#model)")
        return LLMGreenJudge(backend, length_control=length_control, cache=cache)
    if kind == "bertscore":
        return BertScoreJudge(length_control=length_control, device=device)
    raise UsageError(f"unknown judge {kind!r}; use one of {', '.join(JUDGE_KINDS)}")
