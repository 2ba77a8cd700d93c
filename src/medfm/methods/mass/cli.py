"""``medfm mass``: verbs of MASS (torch-free declarations; run functions live in :mod:`.verbs`)."""

from __future__ import annotations

from medfm.core.commands import Command, Group

_P = "medfm.methods.mass"
_C = f"{_P}.config"
_V = "medfm.methods.mass.verbs"

GROUP = Group(
    "mass",
    "MASS: 3D self-supervised in-context segmentation pretraining on automatic masks.",
    (
        Command("prepare", "Cache volumes and class-agnostic automatic mask proposals (+ quality vs labels).",
                f"{_C}:PrepareConfig", f"{_V}:run_prepare", presets=f"{_P}.prep"),
        Command("pretrain", "Pretrain the Iris network on automatic masks (or a SimCLR / MIM baseline).",
                f"{_C}:PretrainConfig", f"{_V}:run_pretrain"),
        Command("segment", "Training-free in-context segmentation from labelled reference volumes (Dice/HD95).",
                f"{_C}:SegmentConfig", f"{_V}:run_segment", presets=f"{_P}.downstream"),
        Command("finetune", "Fine-tune with learnable class prompts on any fraction of labelled volumes.",
                f"{_C}:FinetuneConfig", f"{_V}:run_finetune", presets=f"{_P}.downstream"),
        Command("probe", "Frozen-encoder volume classification (attention pooling + linear head, AUROC).",
                f"{_C}:ProbeConfig", f"{_V}:run_probe", presets=f"{_P}.downstream"),
        Command("report", "Re-render report.html of a finished mass run.", "medfm.core.report:ReportConfig", "medfm.core.report:run_report",
                presets=f"{_P}.downstream.configs"),  # a folder without configs/: no presets
    ),
)  # fmt: skip
