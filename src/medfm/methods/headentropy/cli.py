"""``medfm headentropy``: predict LLM answer correctness from per-head attention entropy (torch-free)."""

from __future__ import annotations

from medfm.core.commands import Command, Group

_CFG = "medfm.methods.headentropy.config"
_RUN = "medfm.methods.headentropy.runner"

GROUP = Group(
    "headentropy",
    "Head Entropy: per-head 2-Rényi attention entropy predicts whether an LLM's answer is correct.",
    (
        Command(
            "extract",
            "Generate answers, label them (EM) and cache per-head features of one QA dataset.",
            f"{_CFG}:ExtractConfig",
            f"{_RUN}:run_extract",
        ),
        Command(
            "fit",
            "Fit the sparse (L1) logistic-regression probe on extracted features and save it.",
            f"{_CFG}:FitConfig",
            f"{_RUN}:run_fit",
        ),
        Command(
            "evaluate",
            "In-domain and transfer AUROC (CIs) of Head Entropy vs baselines; ROC and head maps.",
            f"{_CFG}:EvaluateConfig",
            f"{_RUN}:run_evaluate",
        ),
    ),
)
