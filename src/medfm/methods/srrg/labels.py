"""SRR-BERT label spaces: 55 leaves, 25 upper labels, their hierarchy and the Present/Uncertain/Absent statuses.

Everything here follows StructEval's ``*_mapping.json`` files and ``preprocess.py`` (spec part 3.3):

* ``leaves`` (55) and ``upper`` (25) in the original index order;
* ``leaves_with_statuses`` (163): the 54 non-"No Finding" leaves as ``"<leaf> (Present)"`` (0-53),
  ``(Uncertain)`` (54-107), ``(Absent)`` (108-161), then ``"No Finding"`` (162);
* ``upper_with_statuses`` (73): the same layout over the 24 non-"No Finding" upper labels.

A sentence's (or report's) findings are held as :data:`Findings`: ``{leaf: status}``. Converting findings to
a label space applies the original rules: any "No Finding" collapses the labels to ``["No Finding"]``; the
plain spaces drop the status; the upper spaces map each leaf one level up. Where two leaves of the same
parent disagree in status, the original *training* preprocessing drops the row; at scoring time a row cannot
be dropped, so the most positive status wins (Present > Uncertain > Absent) — a recorded decision.

Torch-free; numpy only inside :func:`encode`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from medfm.core.errors import DataError

NO_FINDING = "No Finding"
STATUSES: tuple[str, ...] = ("Present", "Uncertain", "Absent")
#: Order used to merge statuses of the same label: the most positive wins.
STATUS_RANK = {"Present": 2, "Uncertain": 1, "Absent": 0}

LEAVES: tuple[str, ...] = (
    "No Finding", "Lung Lesion", "Edema", "Pneumonia", "Atelectasis", "Aspiration", "Lung collapse",
    "Perihilar airspace opacity", "Air space opacity\u2013multifocal", "Mass/Solitary lung mass",
    "Nodule/Solitary lung nodule", "Cavitating mass with content", "Cavitating masses", "Emphysema", "Fibrosis",
    "Pulmonary congestion", "Hilar lymphadenopathy", "Bronchiectasis", "Simple pneumothorax",
    "Loculated pneumothorax", "Tension pneumothorax", "Simple pleural effusion", "Loculated pleural effusion",
    "Pleural scarring", "Hydropneumothorax", "Pleural Other", "Cardiomegaly", "Pericardial effusion",
    "Inferior mediastinal mass", "Superior mediastinal mass", "Tortuous Aorta", "Calcification of the Aorta",
    "Enlarged pulmonary artery", "Hernia", "Pneumomediastinum", "Tracheal deviation", "Acute humerus fracture",
    "Acute rib fracture", "Acute clavicle fracture", "Acute scapula fracture", "Compression fracture",
    "Shoulder dislocation", "Subcutaneous Emphysema", "Suboptimal central line", "Suboptimal endotracheal tube",
    "Suboptimal nasogastric tube", "Suboptimal pulmonary arterial catheter", "Pleural tube", "PICC line",
    "Port catheter", "Pacemaker", "Implantable defibrillator", "LVAD", "Intraaortic balloon pump",
    "Pneumoperitoneum",
)  # fmt: skip

UPPER: tuple[str, ...] = (
    "Pleural Effusion", "Upper abdominal finding", "Widened cardiac silhouette", "Lung Finding", "No Finding",
    "Widened aortic contour", "Pleural Thickening", "Vascular finding", "Consolidation", "Pneumothorax",
    "Subdiaphragmatic gas", "Masslike opacity", "Chest wall finding", "Focal air space opacity",
    "Segmental collapse", "Fracture", "Mediastinal mass", "Solitary masslike opacity", "Support Devices",
    "Mediastinal finding", "Pleural finding", "Air space opacity", "Diffuse air space opacity",
    "Multiple masslike opacities", "Musculoskeletal finding",
)  # fmt: skip

#: child -> parent over the whole tree (leaves and intermediate nodes; roots are absent), StructEval preprocess.py.
PARENT: dict[str, str] = {
    "No Finding": "No Finding",
    # lung
    "Lung Lesion": "Lung Finding", "Fibrosis": "Lung Finding", "Emphysema": "Lung Finding",
    "Pulmonary congestion": "Lung Finding", "Bronchiectasis": "Lung Finding", "Hilar lymphadenopathy": "Lung Finding",
    "Diffuse air space opacity": "Air space opacity", "Air space opacity\u2013multifocal": "Air space opacity",
    "Edema": "Diffuse air space opacity", "Consolidation": "Focal air space opacity",
    "Perihilar airspace opacity": "Focal air space opacity", "Segmental collapse": "Focal air space opacity",
    "Pneumonia": "Consolidation", "Atelectasis": "Consolidation", "Aspiration": "Consolidation",
    "Lung collapse": "Segmental collapse",
    "Solitary masslike opacity": "Masslike opacity", "Multiple masslike opacities": "Masslike opacity",
    "Mass/Solitary lung mass": "Solitary masslike opacity", "Nodule/Solitary lung nodule": "Solitary masslike opacity",
    "Cavitating mass with content": "Solitary masslike opacity", "Cavitating masses": "Multiple masslike opacities",
    # pleura
    "Pneumothorax": "Pleural finding", "Hydropneumothorax": "Pleural finding", "Pleural Other": "Pleural finding",
    "Simple pneumothorax": "Pneumothorax", "Loculated pneumothorax": "Pneumothorax",
    "Tension pneumothorax": "Pneumothorax", "Pleural Effusion": "Pleural Thickening",
    "Pleural scarring": "Pleural Thickening", "Simple pleural effusion": "Pleural Effusion",
    "Loculated pleural effusion": "Pleural Effusion",
    # cardiac / vascular / mediastinum
    "Cardiomegaly": "Widened cardiac silhouette", "Pericardial effusion": "Widened cardiac silhouette",
    "Hernia": "Mediastinal finding", "Mediastinal mass": "Mediastinal finding",
    "Pneumomediastinum": "Mediastinal finding", "Tracheal deviation": "Mediastinal finding",
    "Inferior mediastinal mass": "Mediastinal mass", "Superior mediastinal mass": "Mediastinal mass",
    "Widened aortic contour": "Vascular finding", "Calcification of the Aorta": "Vascular finding",
    "Enlarged pulmonary artery": "Vascular finding", "Tortuous Aorta": "Widened aortic contour",
    # musculoskeletal
    "Fracture": "Musculoskeletal finding", "Shoulder dislocation": "Musculoskeletal finding",
    "Chest wall finding": "Musculoskeletal finding", "Acute humerus fracture": "Fracture",
    "Acute rib fracture": "Fracture", "Acute clavicle fracture": "Fracture", "Acute scapula fracture": "Fracture",
    "Compression fracture": "Fracture", "Subcutaneous Emphysema": "Chest wall finding",
    # devices
    **{d: "Support Devices" for d in (
        "Suboptimal central line", "Suboptimal endotracheal tube", "Suboptimal nasogastric tube",
        "Suboptimal pulmonary arterial catheter", "Pleural tube", "PICC line", "Port catheter", "Pacemaker",
        "Implantable defibrillator", "LVAD", "Intraaortic balloon pump")},
    # abdomen
    "Subdiaphragmatic gas": "Upper abdominal finding", "Pneumoperitoneum": "Subdiaphragmatic gas",
}  # fmt: skip


def _with_statuses(labels: Sequence[str]) -> tuple[str, ...]:
    core = [x for x in labels if x != NO_FINDING]
    return (*tuple(f"{x} ({s})" for s in STATUSES for x in core), NO_FINDING)


LEAVES_WITH_STATUSES: tuple[str, ...] = _with_statuses(LEAVES)
UPPER_WITH_STATUSES: tuple[str, ...] = _with_statuses(UPPER)

LABEL_SPACES: dict[str, tuple[str, ...]] = {
    "leaves": LEAVES,
    "upper": UPPER,
    "leaves_with_statuses": LEAVES_WITH_STATUSES,
    "upper_with_statuses": UPPER_WITH_STATUSES,
}
SPACE_NAMES: tuple[str, ...] = tuple(LABEL_SPACES)

#: The organ-system header (structured format) each leaf's statements belong under.
LEAF_ORGAN: dict[str, str] = {}
for _leaf in LEAVES[1:18]:
    LEAF_ORGAN[_leaf] = "Lungs and Airways"
for _leaf in LEAVES[18:26]:
    LEAF_ORGAN[_leaf] = "Pleura"
for _leaf in ("Cardiomegaly", "Pericardial effusion", "Tortuous Aorta", "Calcification of the Aorta",
              "Enlarged pulmonary artery"):  # fmt: skip
    LEAF_ORGAN[_leaf] = "Cardiovascular"
for _leaf in ("Hilar lymphadenopathy", "Inferior mediastinal mass", "Superior mediastinal mass", "Hernia",
              "Pneumomediastinum", "Tracheal deviation"):  # fmt: skip
    LEAF_ORGAN[_leaf] = "Hila and Mediastinum"
for _leaf in LEAVES[36:43]:
    LEAF_ORGAN[_leaf] = "Musculoskeletal and Chest Wall"
for _leaf in LEAVES[43:54]:
    LEAF_ORGAN[_leaf] = "Tubes, Catheters, and Support Devices"
LEAF_ORGAN["Pneumoperitoneum"] = "Abdominal"

Findings = dict[str, str]
"""``{leaf: status}`` for one sentence or report; ``{"No Finding": "Present"}`` for a normal statement."""


def space(name: str) -> tuple[str, ...]:
    """Labels of a label space by name; UsageError-free DataError naming the known spaces otherwise."""
    try:
        return LABEL_SPACES[name]
    except KeyError:
        raise DataError(f"unknown label space {name!r}; use one of {', '.join(SPACE_NAMES)}") from None


def upper_of(leaf: str) -> str:
    """The upper label one level above ``leaf`` (the "upper" training label of the original)."""
    if leaf not in PARENT:
        raise DataError(f"{leaf!r} is not one of the 55 SRR-BERT leaves")
    return PARENT[leaf]


def ancestors(node: str) -> list[str]:
    """Every node above ``node`` in the hierarchy, nearest first (roots have none)."""
    out: list[str] = []
    while node in PARENT and PARENT[node] != node:
        node = PARENT[node]
        out.append(node)
    return out


def parse_label(label: str) -> tuple[str, str]:
    """``"Edema (Absent)"`` -> ``("Edema", "Absent")``; a bare leaf is Present; unknown labels raise DataError."""
    text = label.strip()
    status = "Present"
    if text.endswith(")") and " (" in text:
        head, tail = text.rsplit(" (", 1)
        if tail[:-1] in STATUSES:
            text, status = head, tail[:-1]
    if text.lower() == NO_FINDING.lower():
        return NO_FINDING, "Present"
    if text not in PARENT or text not in LEAVES:
        raise DataError(f"label {label!r} is outside the SRR-BERT leaf space (55 leaves, e.g. 'Edema (Absent)')")
    return text, status


def merge_findings(items: Iterable[Mapping[str, str]]) -> Findings:
    """OR-merge several sentences' findings: each leaf keeps its most positive status.

    "No Finding" survives only when no other finding is mentioned anywhere."""
    items = list(items)
    out: Findings = {}
    for f in items:
        for leaf, status in f.items():
            if leaf == NO_FINDING:
                continue
            if leaf not in out or STATUS_RANK[status] > STATUS_RANK[out[leaf]]:
                out[leaf] = status
    if not out and any(NO_FINDING in f for f in items):
        return {NO_FINDING: "Present"}
    return out


def to_labels(findings: Mapping[str, str], space_name: str) -> list[str]:
    """Labels of ``findings`` in a label space (StructEval preprocess rules; see module docstring).

    Raises:
        DataError: a leaf outside the 55 leaves or a status outside Present/Uncertain/Absent.
    """
    labels = space(space_name)  # validates the name
    del labels
    for leaf, status in findings.items():
        if leaf not in PARENT or leaf not in LEAVES:
            raise DataError(f"finding {leaf!r} is outside the SRR-BERT leaf space (55 leaves)")
        if status not in STATUSES:
            raise DataError(f"status {status!r} of {leaf!r} is not one of {', '.join(STATUSES)}")
    if NO_FINDING in findings:
        return [NO_FINDING]
    if space_name == "leaves":
        return [x for x in LEAVES if x in findings]
    if space_name == "leaves_with_statuses":
        return [f"{x} ({findings[x]})" for x in LEAVES if x in findings]
    merged: dict[str, str] = {}
    for leaf, status in findings.items():
        up = PARENT[leaf]
        if up not in merged or STATUS_RANK[status] > STATUS_RANK[merged[up]]:
            merged[up] = status
    if space_name == "upper":
        return [x for x in UPPER if x in merged]
    return [f"{x} ({merged[x]})" for x in UPPER if x in merged]


def encode(label_lists: Sequence[Sequence[str]], space_name: str) -> Any:
    """Multi-hot matrix ``(N, K)`` (int8) of label lists in a space; unknown labels raise DataError."""
    import numpy as np

    labels = space(space_name)
    index = {x: i for i, x in enumerate(labels)}
    out = np.zeros((len(label_lists), len(labels)), dtype=np.int8)
    for i, ls in enumerate(label_lists):
        for lab in ls:
            j = index.get(lab)
            if j is None:
                raise DataError(f"label {lab!r} is outside the {space_name} label space ({len(labels)} labels)")
            out[i, j] = 1
    return out


def findings_matrix(findings: Sequence[Mapping[str, str]], space_name: str) -> Any:
    """``encode([to_labels(f, space) for f in findings], space)``: ``(N, K)`` int8 multi-hot."""
    return encode([to_labels(f, space_name) for f in findings], space_name)
