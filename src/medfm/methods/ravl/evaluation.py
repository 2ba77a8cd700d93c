"""Image and region zero-shot accuracy, overall and worst-group, with bootstrap CIs (spec §2.4).

Groups are class x feature present/absent (the ground-truth spurious feature when the set knows it, else the
discovered one). Region accuracy is the zero-shot accuracy of core-feature regions: regions overlapping the
image's core boxes when known, else every region not containing the spurious feature.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medfm.core.metrics import mean_ci
from medfm.core.results import Metric
from medfm.methods.ravl.data import AuditSet
from medfm.methods.ravl.regions import box_cover, region_has_feature
from medfm.methods.ravl.zeroshot import Embedded


def group_accuracies(
    correct: np.ndarray, labels: np.ndarray, feature: np.ndarray, classnames: list[str], seed: int = 0,
    n_resamples: int = 500,
) -> dict[str, Metric]:  # fmt: skip
    """Accuracy with CI per non-empty group ``<class>|feature=<0/1>``."""
    out: dict[str, Metric] = {}
    for c, name in enumerate(classnames):
        for f in (False, True):
            sel = (labels == c) & (feature == f)
            if sel.any():
                out[f"{name}|feature={int(f)}"] = mean_ci(
                    correct[sel].astype(float), seed=seed, n_resamples=n_resamples
                )
    return out


def worst_group(groups: dict[str, Metric]) -> tuple[str | None, Metric]:
    """The group with the lowest accuracy and its metric (value None when there are no groups)."""
    if not groups:
        return None, Metric(value=None, note="no groups")
    name = min(groups, key=lambda g: groups[g].value if groups[g].value is not None else np.inf)
    m = groups[name]
    return name, Metric(m.value, m.ci, m.n, note=f"worst group: {name}")


def core_regions(data: AuditSet, emb: Embedded, region_spurious: np.ndarray) -> np.ndarray:
    """(R,) bool: regions showing the core feature (see module docstring)."""
    core = ~region_spurious
    if data.core_boxes is None:
        return core
    out = np.zeros(len(emb.boxes), bool)
    for r, (b, i) in enumerate(zip(emb.boxes.tolist(), emb.region_image.tolist())):
        boxes = data.core_boxes[i]
        if not boxes:
            out[r] = core[r]
            continue
        # the region holds half the core box, or the core box fills a quarter of the region
        out[r] = any(box_cover(b, f) >= 0.5 or box_cover(f, b) >= 0.25 for f in boxes)
    return out & core


def evaluate_embedded(
    data: AuditSet, emb: Embedded, feature: np.ndarray | None = None, seed: int = 0, n_resamples: int = 500
) -> dict[str, Any]:
    """Image/region overall and worst-group accuracy (Metrics with CIs) and per-group metrics.

    Args:
        data: the evaluation set (labels, optional ground-truth boxes).
        emb: its embeddings and zero-shot scores.
        feature: (N,) bool feature per image for the groups (default: the set's ground truth, else all False).

    Returns:
        ``{"metrics": {name: Metric}, "groups": {group: {name: Metric}}, "feature_source": str}``.
    """
    labels = data.labels
    source = "ground truth"
    if feature is None:
        feature = data.has_spurious
        if feature is None:
            feature, source = np.zeros(len(data), bool), "none"
    else:
        source = "given"
    correct = emb.image_pred == labels
    metrics: dict[str, Metric] = {"image_accuracy": mean_ci(correct.astype(float), seed=seed, n_resamples=n_resamples)}
    groups = group_accuracies(correct, labels, feature, data.classnames, seed, n_resamples)
    name, wg = worst_group(groups)
    metrics["image_worst_group_accuracy"] = wg
    out_groups: dict[str, dict[str, Metric]] = {g: {"image_accuracy": m} for g, m in groups.items()}
    if data.spurious_boxes is not None:
        reg_spur = region_has_feature(emb.boxes, emb.region_image, data.spurious_boxes)
    else:
        reg_spur = np.zeros(len(emb.boxes), bool)
    core = core_regions(data, emb, reg_spur)
    if core.any():
        owner = emb.region_image[core]
        rc = emb.region_pred[core] == labels[owner]
        metrics["region_accuracy"] = mean_ci(rc.astype(float), seed=seed, n_resamples=n_resamples)
        rgroups = group_accuracies(rc, labels[owner], feature[owner], data.classnames, seed, n_resamples)
        _, rwg = worst_group(rgroups)
        metrics["region_worst_group_accuracy"] = rwg
        for g, m in rgroups.items():
            out_groups.setdefault(g, {})["region_accuracy"] = m
    return {"metrics": metrics, "groups": out_groups, "feature_source": source, "worst_group": name}
