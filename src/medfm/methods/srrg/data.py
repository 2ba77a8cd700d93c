"""Labelled report text for training and evaluating the finding classifier, all offline.

Sources, each mapped onto the 55 leaves (only leaves a source can express are *evaluable* on it):

* radlabels' 1,000 labelled synthetic reports (report-level labels: present / absent / uncertain);
* the CXR phantoms' reports (``medfm.data.phantoms.cxr``), whose labels are known by construction;
* the 3,955 IU reports (MeSH tags give report-level Present labels for a few leaves);
* a user's labelled file (JSONL/CSV: ``text`` + ``labels`` as ``"Edema (Absent); Cardiomegaly"``);
* an LLM labeller through any chat backend, majority vote over several runs or models
  (:func:`llm_label_sentences`, as the paper did with three LLMs).

Sentence-level training labels are *silver*: the lexicon labeller's output per sentence, with the status of
each leaf overridden by the report's gold status where the source has one (weak supervision).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfm.core.errors import DataError
from medfm.data.manifests import read_table
from medfm.methods.srrg.labels import LEAVES, NO_FINDING, STATUSES, Findings, merge_findings, parse_label
from medfm.methods.srrg.lexicon import label_sentence
from medfm.methods.srrg.text import free_text_sections, split_sentences

log = logging.getLogger(__name__)

_STATUS_OF_VALUE = {1: "Present", 0: "Absent", -1: "Uncertain"}

#: radlabels finding -> leaf (ambiguous ones such as generic tubes, 'fracture_generic' or 'consolidation' unmapped).
RADLABELS_TO_LEAF: dict[str, str] = {
    "pleural_effusion": "Simple pleural effusion", "pneumothorax": "Simple pneumothorax",
    "pulmonary_congestion_pulmonary_venous_congestion": "Pulmonary congestion",
    "cardiomegaly": "Cardiomegaly", "pulmonary_edema": "Edema", "atelectasis": "Atelectasis",
    "pneumonia": "Pneumonia", "intercostal_drain": "Pleural tube", "emphysema": "Emphysema",
    "pacemaker_electronic_cardiac_device_or_wires": "Pacemaker", "calcification_of_the_aorta": "Calcification of the Aorta",
    "tortuous_aorta": "Tortuous Aorta", "subcutaneous_emphysema": "Subcutaneous Emphysema",
    "pleural_thickening": "Pleural scarring", "pneumomediastinum": "Pneumomediastinum", "pleural_other": "Pleural Other",
    "acute_rib_fracture": "Acute rib fracture", "lung_lesion": "Lung Lesion", "pulmonary_fibrosis": "Fibrosis",
    "pneumoperitoneum": "Pneumoperitoneum", "hiatus_hernia": "Hernia", "other_hernia": "Hernia",
    "lobar_segmental_collapse": "Lung collapse", "whole_lung_or_majority_collapse": "Lung collapse",
    "tracheal_deviation": "Tracheal deviation", "hilar_lymphadenopathy": "Hilar lymphadenopathy",
    "shoulder_dislocation": "Shoulder dislocation", "pulmonary_artery_enlargement": "Enlarged pulmonary artery",
}  # fmt: skip

#: CXR phantom (CheXpert) finding -> leaf. Consolidation shares the Pneumonia leaf (Consolidation is an
#: intermediate node); Support Devices / Lung Opacity / Lung Lesion (derived) are not evaluable.
PHANTOM_TO_LEAF: dict[str, str] = {
    "Cardiomegaly": "Cardiomegaly", "Edema": "Edema", "Consolidation": "Pneumonia", "Pneumonia": "Pneumonia",
    "Atelectasis": "Atelectasis", "Pneumothorax": "Simple pneumothorax", "Pleural Effusion": "Simple pleural effusion",
    "Pleural Other": "Pleural scarring", "Fracture": "Acute rib fracture", "Nodule": "Nodule/Solitary lung nodule",
    "Mass": "Mass/Solitary lung mass", "Enlarged Cardiomediastinum": "Superior mediastinal mass",
}  # fmt: skip

#: IU MeSH major term (first component) -> leaf, Present when tagged.
IU_MESH_TO_LEAF: dict[str, str] = {
    "Cardiomegaly": "Cardiomegaly", "Pulmonary Atelectasis": "Atelectasis", "Pleural Effusion": "Simple pleural effusion",
    "Pulmonary Congestion": "Pulmonary congestion", "Emphysema": "Emphysema", "Pulmonary Emphysema": "Emphysema",
    "Pulmonary Edema": "Edema", "Pneumonia": "Pneumonia", "Pneumothorax": "Simple pneumothorax",
    "Nodule": "Nodule/Solitary lung nodule", "Mass": "Mass/Solitary lung mass", "Hernia, Hiatal": "Hernia",
    "Pulmonary Fibrosis": "Fibrosis", "Pericardial Effusion": "Pericardial effusion",
    "Subcutaneous Emphysema": "Subcutaneous Emphysema", "Granulomatous Disease": "Lung Lesion",
    "Calcified Granuloma": "Lung Lesion",
}  # fmt: skip


@dataclass
class LabelledText:
    """A report (or sentence) with gold findings on the leaves its source can express.

    Attributes:
        id: source id.
        text: report text (findings + impression).
        gold: ``{leaf: status}`` report-level gold.
        evaluable: the leaves this source can express (scores are restricted to them).
        source: ``radlabels``, ``phantom``, ``iu``, ``file``.
    """

    id: str
    text: str
    gold: Findings
    evaluable: tuple[str, ...]
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sentence:
    """One training sentence with its (silver or gold) findings."""

    text: str
    findings: Findings
    source: str
    report_id: str = ""


def report_body(text: str) -> str:
    """Findings + impression of a free-text report (the whole text when it has neither)."""
    sec = free_text_sections(text)
    body = " ".join(sec[k] for k in ("findings", "impression") if sec.get(k))
    return body or sec.get("body", text)


def radlabels_texts(limit: int | None = None) -> list[LabelledText]:
    from medfm.data.assets import radlabels_reports

    out = []
    ev = tuple(sorted(set(RADLABELS_TO_LEAF.values())))
    for r in radlabels_reports()[:limit]:
        gold: Findings = {}
        for name, value in r.labels.items():
            leaf = RADLABELS_TO_LEAF.get(name)
            if leaf is None:
                continue
            gold = merge_findings([gold, {leaf: _STATUS_OF_VALUE[value]}])
        out.append(LabelledText(r.id, report_body(r.text), gold, ev, "radlabels"))
    return out


def phantom_texts(n: int, seed: int) -> list[LabelledText]:
    """Reports of ``n`` CXR phantoms (tiny 32-px images: only the text is used) with their known labels."""
    from medfm.data.phantoms.cxr import FINDINGS, generate_cxr

    batch = generate_cxr(n, seed=seed, size=32)
    ev = tuple(sorted(set(PHANTOM_TO_LEAF.values())))
    out = []
    for rec, row in zip(batch.records, batch.labels):
        gold: Findings = {}
        for name, v in zip(FINDINGS, row):
            leaf = PHANTOM_TO_LEAF.get(name)
            if leaf is None or math.isnan(float(v)):
                continue
            gold = merge_findings([gold, {leaf: _STATUS_OF_VALUE[int(v)]}])
        out.append(LabelledText(str(rec["id"]), report_body(rec["report"]), gold, ev, "phantom",
                                {"split": rec.get("split"), "report": rec["report"]}))  # fmt: skip
    return out


def iu_texts(limit: int | None = None) -> list[LabelledText]:
    """IU reports with Present-only gold from their MeSH major tags (evaluable: the mapped leaves)."""
    from medfm.data.assets import iu_reports

    ev = tuple(sorted(set(IU_MESH_TO_LEAF.values())))
    out = []
    for r in iu_reports()[:limit]:
        if not (r.findings or r.impression):
            continue
        gold: Findings = {}
        for tag in r.mesh_major:
            leaf = IU_MESH_TO_LEAF.get(tag.split("/")[0].strip())
            if leaf:
                gold[leaf] = "Present"
        out.append(LabelledText(r.uid, " ".join(x for x in (r.findings, r.impression) if x), gold, ev, "iu",
                                {"findings": r.findings, "impression": r.impression}))  # fmt: skip
    return out


def parse_label_field(value: Any, where: str) -> Findings:
    """``"Edema (Absent); Cardiomegaly"`` or a list of such labels -> findings; DataError for unknown labels."""
    items = value if isinstance(value, list) else [x for x in re.split(r"[;|]", str(value or "")) if x.strip()]
    out: Findings = {}
    for item in items:
        try:
            leaf, status = parse_label(str(item))
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
        out = merge_findings([out, {leaf: status}])
    return out


def read_rows(path: str | Path, required: Sequence[str], what: str = "") -> list[dict[str, Any]]:
    """Rows of a .jsonl or .csv file (:func:`medfm.data.manifests.read_table`) that all hold the ``required`` columns.

    Args:
        what: how error messages name the file (e.g. ``"labelled file "``).
    """
    path = Path(path)
    if path.suffix not in (".jsonl", ".csv"):
        raise DataError(f"{what}{path} must be .jsonl or .csv")
    _, rows = read_table(path)
    for i, r in enumerate(rows, 1):
        missing = [c for c in required if c not in r]
        if missing:
            raise DataError(f"{what}{path}: row {i} has no column(s) {', '.join(missing)}")
    return rows


def labelled_file(path: str | Path) -> list[Sentence]:
    """Sentences from a labelled JSONL/CSV file with columns ``text`` and ``labels``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"labelled file {path} does not exist (expected .jsonl or .csv with text and labels)")
    rows = read_rows(path, ("text", "labels"), what="labelled file ")
    return [
        Sentence(str(row["text"]), parse_label_field(row["labels"], f"{path} row {i}"), "file")
        for i, row in enumerate(rows, 1)
    ]


def silver_sentences(texts: Iterable[LabelledText], use_gold_status: bool = True) -> list[Sentence]:
    """Split reports into sentences labelled by the lexicon; where the report's gold has a status for a leaf
    the lexicon found, that status replaces the lexicon's (weak supervision)."""
    out = []
    for t in texts:
        for s in split_sentences(t.text):
            f = label_sentence(s)
            if use_gold_status and f and NO_FINDING not in f:
                f = {leaf: (t.gold.get(leaf, st) if leaf in t.gold else st) for leaf, st in f.items()}
            out.append(Sentence(s, f, t.source, t.id))
    return out


def predict_reports(texts: Sequence[LabelledText], classifier: Any) -> list[Findings]:
    """Report-level findings: OR-merge of the classifier's sentence findings."""
    sents = [split_sentences(t.text) for t in texts]
    flat = list(dict.fromkeys(s for ss in sents for s in ss))
    pred = dict(zip(flat, classifier.predict(flat))) if flat else {}
    return [merge_findings([pred[s] for s in ss]) for ss in sents]


def restrict(findings: Findings, leaves: Sequence[str]) -> Findings:
    keep = set(leaves)
    return {k: v for k, v in findings.items() if k in keep}


# ----------------------------------------------------------------------------------------------------------------------
# LLM labeller (any chat backend), majority vote


LABEL_PROMPT = (
    "You label chest X-ray report sentences. For the sentence below, list every finding it mentions using ONLY "
    "these labels: {labels}. Give each one a status in parentheses: Present, Uncertain or Absent, e.g. "
    "'Edema (Absent)'. A normal statement is 'No Finding'. Answer with JSON: {{\"labels\": [...]}}.\n\n"
    "Sentence: {sentence}"
)


def llm_label_sentences(sentences: Sequence[str], backends: Sequence[Any], runs: int = 1, min_votes: int | None = None,
                        max_tokens: int = 128) -> list[Findings]:  # fmt: skip
    """Label sentences with one or more chat backends, ``runs`` samples each; keep a (leaf, status) label when
    at least ``min_votes`` of the ``len(backends) * runs`` answers give it (default: a strict majority).
    Labels outside the leaf space and unparseable answers count as no vote (logged)."""
    from medfm.backends import GenerationRequest

    voters = len(backends) * runs
    need = min_votes if min_votes is not None else voters // 2 + 1
    prompt_labels = ", ".join(LEAVES)
    votes: list[Counter] = [Counter() for _ in sentences]
    bad = 0
    for backend in backends:
        for run in range(runs):
            reqs = [GenerationRequest.of(LABEL_PROMPT.format(labels=prompt_labels, sentence=s), max_tokens=max_tokens,
                                         temperature=0.0 if runs == 1 else 0.7, seed=run, json_mode=True)
                    for s in sentences]  # fmt: skip
            for i, res in enumerate(backend.generate_json(reqs, required_fields=("labels",))):
                if not res.ok or not isinstance(res.obj.get("labels"), list):
                    bad += 1
                    continue
                seen = set()
                for lab in res.obj["labels"]:
                    try:
                        leaf, status = parse_label(str(lab))
                    except DataError:
                        bad += 1
                        continue
                    if status not in STATUSES:
                        continue
                    seen.add((leaf, status))
                votes[i].update(seen)
    if bad:
        log.warning("LLM labeller: %d unusable answers or labels outside the leaf space were ignored", bad)
    out = []
    for c in votes:
        f = merge_findings([{leaf: st} for (leaf, st), k in c.items() if k >= need])
        out.append(f)
    return out


def validation_split(
    sentences: Sequence[Sentence], fraction: float, seed: int = 0
) -> tuple[list[Sentence], list[Sentence]]:
    """``(train, validation)`` with every report's sentences on one side (split by ``report_id``, seeded), so
    early stopping and threshold tuning never see sentences of a report the model trained on. Sentences
    without a report id are grouped by their own text. ``fraction`` 0 gives an empty validation set."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"validation fraction must be in [0, 1), got {fraction}")
    groups = sorted({s.report_id or s.text for s in sentences})
    k = round(len(groups) * fraction)
    if fraction > 0 and len(groups) >= 2:
        k = min(max(k, 1), len(groups) - 1)
    import numpy as np

    held = {groups[i] for i in np.random.default_rng(seed).permutation(len(groups))[:k]}
    train = [s for s in sentences if (s.report_id or s.text) not in held]
    val = [s for s in sentences if (s.report_id or s.text) in held]
    return train, val


def train_val(sentences: Sequence[Sentence], val_fraction: float, val_sentences: Sequence[Sentence] | None,
              seed: int) -> tuple[list[Sentence], list[Sentence]]:  # fmt: skip
    """The ``(train, validation)`` sentences every trained labeller uses: an explicit validation set, or
    :func:`validation_split` of ``sentences`` (none when ``val_fraction`` is 0). DataError when no training
    sentence is left."""
    if val_sentences is not None:
        train, val = list(sentences), list(val_sentences)
    else:
        train, val = validation_split(sentences, val_fraction, seed) if val_fraction else (list(sentences), [])
    if not train:
        raise DataError("no training sentences left after the validation split")
    return train, val
