"""Dice aggregation of MASS segmentation results: the protocol behind every Dice the verbs and benchmarks report.

A row is one (volume, structure) pair: ``{"case", "structure", "dice", "hd95"}`` (``hd95`` in mm, None when the
prediction is empty). The headline Dice averages structures within a volume first and then volumes, so a volume
with many structures does not weigh more; its CI is over volumes.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def per_case_dice(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean Dice over structures, per volume: ``{case: dice}``."""
    by_case: dict[str, list[float]] = {}
    for r in rows:
        by_case.setdefault(r["case"], []).append(float(r["dice"]))
    return {k: float(np.mean(v)) for k, v in by_case.items()}


def dice_metrics(res: Any, rows: list[dict[str, Any]], prefix: str = "") -> None:
    """Add ``<prefix>dice`` (mean over volumes of per-volume means, CI over volumes), ``<prefix>hd95_mm`` and Dice
    per structure to a :class:`medfm.core.results.Results`; the rows go into its ``per_volume`` table."""
    from medfm.core.metrics import mean_ci

    res.add(f"{prefix}dice", mean_ci(list(per_case_dice(rows).values())),
            note="mean over structures per volume, CI over volumes")  # fmt: skip
    hd = [r["hd95"] for r in rows if r["hd95"] is not None]
    if hd:
        res.add(
            f"{prefix}hd95_mm",
            mean_ci(hd, higher_is_better=False),
            note=f"over {len(hd)} of {len(rows)} (volume, structure) pairs with a non-empty prediction",
        )
    for name in sorted({r["structure"] for r in rows}):
        res.add("dice", mean_ci([r["dice"] for r in rows if r["structure"] == name]), group=f"structure={name}")
    res.tables["per_volume"] = rows
