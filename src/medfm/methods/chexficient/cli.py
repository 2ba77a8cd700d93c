"""``medfm chexficient <verb>`` declarations (torch-free; run functions live in :mod:`.verbs`)."""

from __future__ import annotations

from medfm.core.commands import Command, Group

_C = "medfm.methods.chexficient.config"
_V = "medfm.methods.chexficient.verbs"

GROUP = Group(
    "chexficient",
    "CLIP-style image–report pretraining with online prototype curation (CheXficient).",
    (
        Command("train", "Train the dual encoder: curated (default), full, random_online or random_static arm.",
                f"{_C}:TrainConfig", f"{_V}:run_train"),
        Command("curate", "Score image–report pairs with the prototype curator and write the kept subset.",
                f"{_C}:CurateConfig", f"{_V}:run_curate"),
        Command("evaluate", "Zero-shot per-finding AUROC, retrieval Recall@1/5/10 and linear probe, with CIs.",
                f"{_C}:EvaluateConfig", f"{_V}:run_evaluate"),
        Command("embed", "Write image and report embeddings (.npz) of a manifest or phantoms.",
                f"{_C}:EmbedConfig", f"{_V}:run_embed"),
        Command("report", "Re-render report.html of a finished run directory.", "medfm.core.report:ReportConfig", "medfm.core.report:run_report"),
    ),
)  # fmt: skip
