"""``medfm ravl <verb>`` declarations (torch-free; run functions live in :mod:`.verbs`)."""

from __future__ import annotations

from medfm.core.commands import Command, Group

_C = "medfm.methods.ravl.config"
_V = "medfm.methods.ravl.verbs"

GROUP = Group(
    "ravl",
    "Discover and mitigate spurious correlations of a fine-tuned CLIP from region clusters (RaVL).",
    (
        Command("discover", "Cluster region embeddings, score clusters by performance gap and influence, rank "
                "spurious regions (Precision@k with ground truth).", f"{_C}:DiscoverConfig", f"{_V}:run_discover"),
        Command("mitigate", "Fine-tune with the region-aware loss or a baseline (standard, upsample, gdro); "
                "writes checkpoints/final with a model card.", f"{_C}:MitigateConfig", f"{_V}:run_mitigate"),
        Command("evaluate", "Image and region zero-shot accuracy, overall and worst-group (class x feature), with "
                "CIs.", f"{_C}:EvaluateConfig", f"{_V}:run_evaluate"),
        Command("report", "Re-render report.html of a finished run directory.", "medfm.core.report:ReportConfig", "medfm.core.report:run_report"),
    ),
)  # fmt: skip
