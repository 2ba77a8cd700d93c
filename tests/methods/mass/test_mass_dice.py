"""MASS Dice protocol: structures averaged within a volume first, then volumes (CI over volumes)."""

from __future__ import annotations

import pytest

from medfm.core.results import Results
from medfm.methods.mass.dice import dice_metrics, per_case_dice

ROWS = [
    {"case": "a", "structure": "liver", "dice": 0.9, "hd95": 3.0},
    {"case": "a", "structure": "spleen", "dice": 0.5, "hd95": None},
    {"case": "a", "structure": "kidney", "dice": 0.7, "hd95": 5.0},
    {"case": "b", "structure": "liver", "dice": 0.1, "hd95": 9.0},
]


def test_volumes_weigh_equally_whatever_their_structure_count():
    assert per_case_dice(ROWS) == pytest.approx({"a": 0.7, "b": 0.1})
    res = Results(method="mass", verb="segment")
    dice_metrics(res, ROWS, prefix="ic_")
    assert res.metrics["ic_dice"].value == pytest.approx(0.4)  # (0.7 + 0.1) / 2, not the row mean 0.55
    assert res.metrics["ic_dice"].n == 2
    assert res.metrics["ic_hd95_mm"].value == pytest.approx(17 / 3) and res.metrics["ic_hd95_mm"].n == 3
    assert res.groups["structure=liver"]["dice"].value == pytest.approx(0.5)
    assert res.tables["per_volume"] == ROWS
