from __future__ import annotations

import pytest

from medfm.core.errors import DataError
from medfm.methods.srrg import labels as L


def test_label_space_sizes_and_order():
    assert (len(L.LEAVES), len(L.UPPER), len(L.LEAVES_WITH_STATUSES), len(L.UPPER_WITH_STATUSES)) == (55, 25, 163, 73)
    assert L.LEAVES[0] == "No Finding" and L.LEAVES[8] == "Air space opacity\u2013multifocal"
    assert L.LEAVES[54] == "Pneumoperitoneum"
    assert L.LEAVES_WITH_STATUSES[0] == "Lung Lesion (Present)"
    assert L.LEAVES_WITH_STATUSES[54] == "Lung Lesion (Uncertain)"
    assert L.LEAVES_WITH_STATUSES[142] == "Tracheal deviation (Absent)"
    assert L.LEAVES_WITH_STATUSES[162] == "No Finding"
    assert L.UPPER_WITH_STATUSES[0] == "Pleural Effusion (Present)" and L.UPPER_WITH_STATUSES[-1] == "No Finding"
    # every leaf's parent is an upper label
    assert {L.PARENT[x] for x in L.LEAVES} <= set(L.UPPER)


def test_hierarchy():
    assert L.upper_of("Lung collapse") == "Segmental collapse"
    assert L.ancestors("Lung collapse") == ["Segmental collapse", "Focal air space opacity"]
    assert L.ancestors("Pneumonia") == ["Consolidation", "Focal air space opacity"]
    assert L.upper_of("Pneumoperitoneum") == "Subdiaphragmatic gas"


def test_to_labels_rules():
    f = {"Atelectasis": "Absent", "Pneumonia": "Present", "Edema": "Uncertain"}
    assert L.to_labels(f, "leaves") == ["Edema", "Pneumonia", "Atelectasis"]
    assert L.to_labels(f, "leaves_with_statuses") == [
        "Edema (Uncertain)",
        "Pneumonia (Present)",
        "Atelectasis (Absent)",
    ]
    assert L.to_labels(f, "upper") == ["Consolidation", "Diffuse air space opacity"]
    # Atelectasis (Absent) and Pneumonia (Present) share the parent: the most positive status wins
    assert L.to_labels(f, "upper_with_statuses") == ["Consolidation (Present)", "Diffuse air space opacity (Uncertain)"]
    assert L.to_labels({"No Finding": "Present", "Edema": "Absent"}, "leaves_with_statuses") == ["No Finding"]


def test_encode_and_bad_labels():
    m = L.encode([["Edema (Absent)"], []], "leaves_with_statuses")
    assert m.shape == (2, 163) and m[0, 108 + 1] == 1 and m.sum() == 1
    with pytest.raises(DataError, match="outside"):
        L.encode([["Broken arm"]], "leaves")
    with pytest.raises(DataError, match="outside"):
        L.parse_label("Broken arm (Present)")
    with pytest.raises(DataError, match="status"):
        L.to_labels({"Edema": "Maybe"}, "leaves")
    with pytest.raises(DataError, match="label space"):
        L.space("organs")
    assert L.parse_label("Edema (Absent)") == ("Edema", "Absent")
    assert L.parse_label("no finding") == ("No Finding", "Present")
