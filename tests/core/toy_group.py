"""A toy CLI group used by the dispatcher tests (registered by monkeypatching capabilities)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from medfm.core.commands import Command, Group
from medfm.core.config import CommonOptions, option, section
from medfm.core.errors import DataError


@dataclass
class TrainSection:
    lr: float = option(1e-3, help="Learning rate.")
    steps: int = option(10, help="Optimiser steps.")
    layers: list[int] = option(default_factory=lambda: [1, 2], help="Layer sizes.")
    amp: bool = option(False, help="Mixed precision.")


@dataclass
class ToyConfig(CommonOptions):
    manifest: str = option(help="Input manifest.", positional=True)
    mode: str = option("fast", help="Mode.")
    train: TrainSection = section(TrainSection, help="Training.")


def run_toy(cfg: ToyConfig) -> int:
    if cfg.manifest == "bad.csv":
        raise DataError("bad.csv: column 'report' is missing (found: id, image)")
    print(
        json.dumps(
            {
                "manifest": cfg.manifest,
                "lr": cfg.train.lr,
                "steps": cfg.train.steps,
                "layers": cfg.train.layers,
                "amp": cfg.train.amp,
                "dry_run": cfg.dry_run,
                "mode": cfg.mode,
            }
        )
    )
    return 0


GROUP = Group(
    "toy",
    "A toy method.",
    (
        Command(
            "train", "Train the toy.", "core.toy_group:ToyConfig", "core.toy_group:run_toy", presets="core.toy_presets"
        ),
    ),
)
