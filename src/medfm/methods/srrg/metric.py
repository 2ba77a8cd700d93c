"""F1-SRR-BERT (both published variants), BLEU and ROUGE-L per section (spec part 3.5).

``classifier`` is anything with ``predict(texts) -> list[Findings]`` (a trained
:class:`~medfm.methods.srrg.classifier.FindingClassifier`, the :class:`~medfm.methods.srrg.lexicon.LexiconLabeller`
or an LLM labeller). Every utterance is labelled once per call (deduplicated, batched), which is what makes
scoring fast.

Variants (pin all three when quoting a number):

* ``average="samples"`` (StructEval): per-utterance/per-report set P/R/F1 averaged over samples.
  ``aligned=True``: per report, candidate utterances truncated to the reference's length and padded with
  "No findings", sklearn "samples avg" over the utterance pairs, averaged over reports.
  ``aligned=False``: per report, the utterances' label vectors are OR-merged; "samples avg" over reports
  (``zero_division=0``).
* ``average="weighted"`` (RadEval "srrbert"): OR-merged per report, the label-support-weighted average of the
  per-label P/R/F1 over all reports (``zero_division=0``).

``section="findings"``: per report and organ header in the union of both reports' headers, the header's
bullets are scored as above when both have it and 0 otherwise; results are per-organ averages, the overall
average over all (report, header) entries, and section-presence P/R/F1 ("samples avg" of header indicators).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from medfm.core.errors import DataError
from medfm.methods.srrg.labels import Findings, findings_matrix, space
from medfm.methods.srrg.structured import _NUMBERED, parse_findings, parse_impression
from medfm.methods.srrg.text import looks_english, split_sentences

log = logging.getLogger(__name__)
PAD = "No findings"


class Classifier(Protocol):
    def predict(self, texts: Sequence[str]) -> list[Findings]: ...


# ----------------------------------------------------------------------------------------------------------------------
# Set-based P/R/F1 (sklearn, the reference implementation's own calls)


def samples_prf(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, float]:
    """sklearn "samples avg" precision, recall, F1 of two ``(N, K)`` multi-hot matrices (zero_division=0)."""
    from sklearn.metrics import precision_recall_fscore_support

    if len(y_true) == 0:
        return 0.0, 0.0, 0.0
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="samples", zero_division=0)
    return float(p), float(r), float(f)


def weighted_prf(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, float]:
    """sklearn "weighted avg" precision, recall, F1 (weights = label support in ``y_true``; zero_division=0)."""
    from sklearn.metrics import precision_recall_fscore_support

    if len(y_true) == 0 or y_true.sum() == 0:
        return 0.0, 0.0, 0.0
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="weighted", zero_division=0)
    return float(p), float(r), float(f)


def per_sample_f1(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Set F1 of each row (0 when both rows are empty, like sklearn's samples average): ``(N,)`` float."""
    tp = np.logical_and(y_true, y_pred).sum(1)
    denom = y_true.sum(1) + y_pred.sum(1)
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0).astype(float)


# ----------------------------------------------------------------------------------------------------------------------
# Utterances


def impression_utterances(text: str) -> list[str]:
    """Impression items: the numbered list when the text is one, else its sentences (RadEval's splitting)."""
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    if lines and all(_NUMBERED.match(ln) for ln in lines):
        return parse_impression(text)
    return split_sentences(text or "")


def findings_utterances(text: str) -> dict[str, list[str]]:
    """Organ header -> bullets of a structured Findings section (StructEval's parser)."""
    return parse_findings(text or "")[0]


class LabelCache:
    """Labels every distinct utterance once with ``classifier`` and serves multi-hot rows per label space."""

    def __init__(self, classifier: Classifier, space_name: str):
        self.classifier = classifier
        self.space = space_name
        self.k = len(space(space_name))
        self._rows: dict[str, np.ndarray] = {}

    def add(self, texts: Sequence[str]) -> None:
        todo = list(dict.fromkeys(t for t in texts if t not in self._rows))
        if not todo:
            return
        preds = self.classifier.predict(todo)
        mat = findings_matrix(preds, self.space)
        for t, row in zip(todo, mat):
            self._rows[t] = row

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        self.add(texts)
        if not texts:
            return np.zeros((0, self.k), dtype=np.int8)
        return np.stack([self._rows[t] for t in texts])

    def merged(self, texts: Sequence[str]) -> np.ndarray:
        """OR-merge of the rows of ``texts``: ``(K,)`` int8 (all zeros for no texts)."""
        m = self.matrix(texts)
        return m.any(0).astype(np.int8) if len(m) else np.zeros(self.k, dtype=np.int8)


# ----------------------------------------------------------------------------------------------------------------------
# Scores


@dataclass
class SRRBertScore:
    """F1-SRR-BERT of a corpus.

    Attributes:
        precision, recall, f1: the aggregate (variant given by ``variant``).
        per_sample_f1: one value per report (``aligned``: the report's samples-avg F1; ``unaligned`` and
            ``weighted``: the set F1 of the OR-merged label vectors); for ``samples`` variants their mean is
            ``f1``. Use these as per-report rewards.
        n: number of reports.
        variant: ``{"section", "space", "aligned", "average"}``.
        organ: per organ header (findings only): ``{"precision", "recall", "f1", "n"}``.
        section_presence: findings only: samples-avg P/R/F1 of organ-header presence.
        warnings: bad input that was scored anyway (empty sections, non-English text).
    """

    precision: float
    recall: float
    f1: float
    per_sample_f1: list[float]
    n: int
    variant: dict[str, Any]
    organ: dict[str, dict[str, float]] = field(default_factory=dict)
    section_presence: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "n": self.n,
                "variant": self.variant, "organ": self.organ, "section_presence": self.section_presence,
                "warnings": self.warnings}  # fmt: skip


def _check_inputs(candidates: Sequence[str], references: Sequence[str]) -> None:
    if isinstance(candidates, str) or isinstance(references, str):
        raise DataError("candidates and references must be lists of report texts, not one string")
    if len(candidates) != len(references):
        raise DataError(f"{len(candidates)} candidates but {len(references)} references; give one candidate per "
                        "reference")  # fmt: skip


def _score_utterance_lists(refs: list[list[str]], hyps: list[list[str]], cache: LabelCache, aligned: bool,
                           average: str) -> tuple[float, float, float, np.ndarray]:  # fmt: skip
    if aligned:
        per = []
        for ref, hyp in zip(refs, hyps):
            hyp = list(hyp[: len(ref)]) + [PAD] * max(0, len(ref) - len(hyp))
            if not ref:
                per.append((0.0, 0.0, 0.0))
                continue
            per.append(samples_prf(cache.matrix(ref), cache.matrix(hyp)))
        arr = np.array(per, dtype=float).reshape(-1, 3)
        if average == "weighted":
            raise DataError("the weighted average (RadEval) is defined for unaligned scoring only; use aligned=False")
        p, r, f = (arr.mean(0) if len(arr) else np.zeros(3)).tolist()
        return p, r, f, arr[:, 2]
    y_true = np.stack([cache.merged(r) for r in refs]) if refs else np.zeros((0, cache.k), np.int8)
    y_pred = np.stack([cache.merged(h) for h in hyps]) if hyps else np.zeros((0, cache.k), np.int8)
    prf = weighted_prf(y_true, y_pred) if average == "weighted" else samples_prf(y_true, y_pred)
    return (*prf, per_sample_f1(y_true, y_pred))


def f1_srr_bert(
    candidates: Sequence[str],
    references: Sequence[str],
    classifier: Classifier,
    *,
    section: str = "impression",
    space: str = "leaves",
    aligned: bool = False,
    average: str = "samples",
) -> SRRBertScore:
    """F1-SRR-BERT of candidate reports against references (see module docstring for the variants).

    Args:
        candidates: generated sections, one per reference (impression: numbered list or free text;
            findings: the structured organ-header format).
        references: reference sections.
        classifier: ``predict(texts) -> list[Findings]``.
        section: ``impression`` or ``findings``.
        space: ``leaves``, ``upper``, ``leaves_with_statuses`` or ``upper_with_statuses``.
        aligned: utterance-by-utterance (StructEval aligned) instead of OR-merged per report.
        average: ``samples`` (StructEval) or ``weighted`` (RadEval; unaligned only).

    Raises:
        DataError: mismatched lengths, unknown section/space/average, or a classifier label outside the space.
    """
    _check_inputs(candidates, references)
    if section not in ("impression", "findings"):
        raise DataError(f"section must be 'impression' or 'findings', got {section!r}")
    if average not in ("samples", "weighted"):
        raise DataError(f"average must be 'samples' (StructEval) or 'weighted' (RadEval), got {average!r}")
    cache = LabelCache(classifier, space)
    variant = {"section": section, "space": space, "aligned": aligned, "average": average}
    warnings = _input_warnings(candidates, references)
    if section == "impression":
        refs = [impression_utterances(t) for t in references]
        hyps = [impression_utterances(t) for t in candidates]
        cache.add([u for us in refs + hyps for u in us] + ([PAD] if aligned else []))
        p, r, f, per = _score_utterance_lists(refs, hyps, cache, aligned, average)
        return SRRBertScore(p, r, f, per.tolist(), len(refs), variant, warnings=warnings)

    ref_secs = [findings_utterances(t) for t in references]
    hyp_secs = [findings_utterances(t) for t in candidates]
    cache.add([u for secs in ref_secs + hyp_secs for us in secs.values() for u in us] + ([PAD] if aligned else []))
    organ_scores: dict[str, list[tuple[float, float, float]]] = {}
    per_report: list[float] = []
    for ref, hyp in zip(ref_secs, hyp_secs):
        entries = []
        for header in sorted(set(ref) | set(hyp)):
            if header in ref and header in hyp:
                p, r, f, _ = _score_utterance_lists([ref[header]], [hyp[header]], cache, aligned, "samples")
            else:
                p = r = f = 0.0
            organ_scores.setdefault(header, []).append((p, r, f))
            entries.append(f)
        per_report.append(float(np.mean(entries)) if entries else 0.0)
    all_entries = np.array([x for v in organ_scores.values() for x in v], dtype=float).reshape(-1, 3)
    p, r, f = (all_entries.mean(0) if len(all_entries) else np.zeros(3)).tolist()
    organ = {h: dict(zip(("precision", "recall", "f1"), np.mean(v, 0).tolist()), n=len(v))
             for h, v in organ_scores.items()}  # fmt: skip
    headers = sorted({h for s in ref_secs + hyp_secs for h in s})
    if headers:
        yt = np.array([[int(h in s) for h in headers] for s in ref_secs])
        yp = np.array([[int(h in s) for h in headers] for s in hyp_secs])
        sp, sr, sf = samples_prf(yt, yp)
    else:
        sp = sr = sf = 0.0
    if average == "weighted":
        warnings.append("findings scoring uses the samples average per organ section (StructEval)")
    return SRRBertScore(p, r, f, per_report, len(ref_secs), variant, organ,
                        {"precision": sp, "recall": sr, "f1": sf}, warnings)  # fmt: skip


def _input_warnings(candidates: Sequence[str], references: Sequence[str]) -> list[str]:
    out = []
    empty_ref = sum(1 for t in references if not (t or "").strip())
    empty_hyp = sum(1 for t in candidates if not (t or "").strip())
    if empty_ref:
        out.append(f"{empty_ref} empty reference section(s) scored as 0")
    if empty_hyp:
        out.append(f"{empty_hyp} empty candidate section(s)")
    foreign = sum(1 for t in list(candidates) + list(references) if t and not looks_english(t))
    if foreign:
        out.append(f"{foreign} text(s) do not look like English; the classifier was trained on English reports")
    for w in out:
        log.warning("f1_srr_bert: %s", w)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# BLEU and ROUGE-L


def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens."""
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]", (text or "").lower())


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(candidates: Sequence[str], references: Sequence[str], max_n: int = 4) -> float:
    """Corpus BLEU-``max_n`` (Papineni et al.: clipped n-gram precisions pooled over the corpus, geometric mean
    with uniform weights, brevity penalty from total lengths). 0 when any n-gram order has no match."""
    _check_inputs(candidates, references)
    match = [0] * max_n
    total = [0] * max_n
    c_len = r_len = 0
    for c, r in zip(candidates, references):
        ct, rt = tokenize(c), tokenize(r)
        c_len += len(ct)
        r_len += len(rt)
        for n in range(1, max_n + 1):
            cn, rn = _ngrams(ct, n), _ngrams(rt, n)
            match[n - 1] += sum(min(v, rn[g]) for g, v in cn.items())
            total[n - 1] += max(0, len(ct) - n + 1)
    if c_len == 0 or any(m == 0 for m in match):
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(match, total)) / max_n
    bp = 1.0 if c_len > r_len else math.exp(1 - r_len / c_len)
    return float(bp * math.exp(log_p))


def _lcs(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 of one pair (LCS of tokens; 0 when either side is empty)."""
    ct, rt = tokenize(candidate), tokenize(reference)
    lcs = _lcs(ct, rt)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(ct), lcs / len(rt)
    return 2 * p * r / (p + r)


def rouge_l_mean(candidates: Sequence[str], references: Sequence[str]) -> float:
    _check_inputs(candidates, references)
    return float(np.mean([rouge_l(c, r) for c, r in zip(candidates, references)])) if candidates else 0.0


def section_text_scores(candidates: Sequence[str], references: Sequence[str], section: str = "impression"
                        ) -> dict[str, Any]:  # fmt: skip
    """BLEU-4 and ROUGE-L of a section: impression over the utterances joined by newlines; findings overall
    and per organ header (reports missing a header on either side contribute 0 ROUGE-L for it)."""
    _check_inputs(candidates, references)
    if section == "impression":
        c = ["\n".join(impression_utterances(t)) for t in candidates]
        r = ["\n".join(impression_utterances(t)) for t in references]
        return {"bleu": bleu(c, r), "rougeL": rouge_l_mean(c, r)}
    out: dict[str, Any] = {"organ": {}}
    ref_secs = [findings_utterances(t) for t in references]
    hyp_secs = [findings_utterances(t) for t in candidates]
    pairs: dict[str, list[tuple[str, str]]] = {}
    for ref, hyp in zip(ref_secs, hyp_secs):
        for h in set(ref) | set(hyp):
            pairs.setdefault(h, []).append(("\n".join(hyp.get(h, [])), "\n".join(ref.get(h, []))))
    allpairs = [p for v in pairs.values() for p in v]
    for h, v in sorted(pairs.items()):
        out["organ"][h] = {"bleu": bleu([a for a, _ in v], [b for _, b in v]),
                           "rougeL": rouge_l_mean([a for a, _ in v], [b for _, b in v])}  # fmt: skip
    out["bleu"] = bleu([a for a, _ in allpairs], [b for _, b in allpairs]) if allpairs else 0.0
    out["rougeL"] = rouge_l_mean([a for a, _ in allpairs], [b for _, b in allpairs]) if allpairs else 0.0
    return out


def findings_label_f1(pred: Sequence[Mapping[str, str]], gold: Sequence[Mapping[str, str]], space_name: str
                      ) -> dict[str, float]:  # fmt: skip
    """Micro / macro / weighted / samples F1 of predicted vs gold findings in a label space (classifier quality).

    Macro averages over the labels that occur in the gold set or the predictions."""
    from sklearn.metrics import f1_score

    yt, yp = findings_matrix(gold, space_name), findings_matrix(pred, space_name)
    used = np.flatnonzero(yt.any(0) | yp.any(0))
    if len(used) == 0:
        return {"micro": 0.0, "macro": 0.0, "weighted": 0.0, "samples": 0.0}
    yt, yp = yt[:, used], yp[:, used]
    return {avg: float(f1_score(yt, yp, average=avg, zero_division=0))
            for avg in ("micro", "macro", "weighted", "samples")}  # fmt: skip


Scorer = Callable[[Sequence[str], Sequence[str]], SRRBertScore]
