"""``medfm vlm``: the small radiology VLM (torch-free declaration; run functions live in :mod:`.verbs`)."""

from __future__ import annotations

from medfm.core.commands import Command, Group

_CFG = "medfm.methods.vlm.config"
_RUN = "medfm.methods.vlm.verbs"

GROUP = Group(
    "vlm",
    "Small LLaVA-style radiology VLM: SFT on image–report / VQA manifests, report generation, evaluation.",
    (
        Command("prepare", "Write a yes/no VQA manifest from an image–report manifest's finding labels.",
                f"{_CFG}:PrepareConfig", f"{_RUN}:run_prepare"),
        Command("train", "Supervised fine-tuning (LoRA or full LM, frozen or trainable tower), resumable.",
                f"{_CFG}:TrainConfig", f"{_RUN}:run_train"),
        Command("generate", "Generate reports (or VQA answers) for the images of a manifest.",
                f"{_CFG}:GenerateConfig", f"{_RUN}:run_generate"),
        Command("evaluate", "Finding F1 of generated reports vs labels, F1-SRR-BERT, VQA exact-match accuracy.",
                f"{_CFG}:EvaluateConfig", f"{_RUN}:run_evaluate"),
    ),
)  # fmt: skip
