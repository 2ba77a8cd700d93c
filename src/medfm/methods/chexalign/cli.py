"""``medfm chexalign``: judge-scored preference pairs and direct alignment of a report generator (torch-free)."""

from __future__ import annotations

from medfm.core.commands import Command, Group

_C = "medfm.methods.chexalign.config"
_V = "medfm.methods.chexalign.verbs"

GROUP = Group(
    "chexalign",
    "CheXalign: sample candidate reports, judge them (GREEN / LC-GREEN / BERTScore), build preference pairs and "
    "align the VLM with DPO, IPO, KTO, ORPO, R-DPO or SimPO (TRL).",
    (
        Command(
            "sample",
            "N candidate reports per study from the SFT policy (resumable).",
            f"{_C}:SampleConfig",
            f"{_V}:run_sample",
        ),
        Command(
            "judge",
            "Score candidates against references (GREEN offline/LLM, LC-GREEN, BERTScore).",
            f"{_C}:JudgeConfig",
            f"{_V}:run_judge",
        ),
        Command(
            "pairs", "Chosen = best, rejected = worst, ties dropped; KTO rows.", f"{_C}:PairsConfig", f"{_V}:run_pairs"
        ),
        Command(
            "train",
            "Direct alignment through TRL (beta sweep from one config).",
            f"{_C}:TrainConfig",
            f"{_V}:run_train",
        ),
        Command(
            "evaluate",
            "Aligned vs SFT: six metrics, length ratio, alignment tax, with CIs.",
            f"{_C}:EvaluateConfig",
            f"{_V}:run_evaluate",
        ),
    ),
)
