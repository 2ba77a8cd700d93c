"""RaVL evaluation: which regions show the core feature, and region accuracy over them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from medfm.methods.ravl.evaluation import core_regions, evaluate_embedded

F = (0, 0, 4, 4)  # image 0's core box (area 16)
BOXES = np.array([
    (2, 0, 10, 8),   # holds exactly half of F; F fills 1/8 of it -> core (first rule, at its boundary)
    (3, 0, 7, 2),    # holds 1/8 of F; F fills exactly a quarter of it -> core (second rule, at its boundary)
    (8, 8, 12, 12),  # disjoint -> not core
    (0, 0, 4, 4),    # F itself but spurious -> not core
    (0, 0, 2, 2),    # image 1 has no core boxes: any non-spurious region counts
])  # fmt: skip
OWNER = np.array([0, 0, 0, 0, 1])
SPURIOUS = np.array([False, False, False, True, False])


def _data(core_boxes, spurious_boxes=None):
    return SimpleNamespace(labels=np.array([1, 0]), has_spurious=np.array([True, False]), classnames=["no", "yes"],
                           core_boxes=core_boxes, spurious_boxes=spurious_boxes)  # fmt: skip


def test_core_regions_by_box_overlap():
    emb = SimpleNamespace(boxes=BOXES, region_image=OWNER)
    assert core_regions(_data([[F], []]), emb, SPURIOUS).tolist() == [True, True, False, False, True]
    assert core_regions(_data(None), emb, SPURIOUS).tolist() == (~SPURIOUS).tolist()  # no boxes: not spurious


def test_region_accuracy_over_core_regions_and_spurious_boxes():
    emb = SimpleNamespace(boxes=BOXES, region_image=OWNER, image_pred=np.array([1, 1]),
                          region_pred=np.array([1, 0, 1, 1, 0]))  # fmt: skip
    # spurious feature boxes: image 0's F -> region 3 (and region 0, which holds half of it) are spurious
    out = evaluate_embedded(_data([[F], []], spurious_boxes=[[F], []]), emb, n_resamples=50)
    m = out["metrics"]
    assert m["image_accuracy"].value == pytest.approx(0.5)
    # core regions: 1 (image 0, label 1, predicted 0: wrong) and 4 (image 1, label 0, predicted 0: right)
    assert m["region_accuracy"].value == pytest.approx(0.5) and m["region_accuracy"].n == 2
    without = evaluate_embedded(_data([[F], []]), emb, n_resamples=50)["metrics"]
    # no spurious boxes known: regions 0, 1, 3 and 4 are core (0 right, 1 wrong, 3 right, 4 right)
    assert without["region_accuracy"].value == pytest.approx(3 / 4)
    assert out["feature_source"] == "ground truth" and out["worst_group"] == "no|feature=0"
