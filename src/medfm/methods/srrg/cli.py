"""``medfm srrg``: structured reports, the SRR-BERT finding classifier and the F1-SRR-BERT metric (torch-free)."""

from __future__ import annotations

from medfm.core.commands import Command, Group

_C = "medfm.methods.srrg.config"
_R = "medfm.methods.srrg.run"

GROUP = Group(
    "srrg",
    "Structure free-text reports, train the SRR-BERT finding classifier and score with F1-SRR-BERT.",
    (
        Command("prepare", "Build sentence-level training labels from offline sources.", f"{_C}:PrepareConfig",
                f"{_R}:run_prepare"),
        Command("train", "Fine-tune the finding classifier (MiniLM offline) multi-label.", f"{_C}:TrainConfig",
                f"{_R}:run_train"),
        Command("evaluate", "Classifier micro/macro/weighted F1 on held-out gold, vs the lexicon baseline.",
                f"{_C}:EvaluateConfig", f"{_R}:run_evaluate"),
        Command("structure", "Structure free-text reports (offline rules or any chat backend).",
                f"{_C}:StructureConfig", f"{_R}:run_structure"),
        Command("score", "F1-SRR-BERT (StructEval / RadEval variants), BLEU, ROUGE-L.", f"{_C}:ScoreConfig",
                f"{_R}:run_score"),
        Command("report", "Re-render report.html of a finished srrg run.", "medfm.core.report:ReportConfig", "medfm.core.report:run_report"),
    ),
)  # fmt: skip
