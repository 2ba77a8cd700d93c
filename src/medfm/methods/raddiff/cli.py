"""``medfm raddiff``: describe differences between two image sets (torch-free declarations)."""

from __future__ import annotations

from medfm.core.commands import Command, Group

_C = "medfm.methods.raddiff.config"
_R = "medfm.methods.raddiff.verbs"

GROUP = Group(
    "raddiff",
    "Describe clinically meaningful differences between two sets of radiographs (proposer-ranker agent).",
    (
        Command("prepare", "Build the offline phantom set-pair benchmark and the offline concept ranker.",
                f"{_C}:PrepareConfig", f"{_R}:run_prepare"),
        Command("describe", "Two image sets in, ranked differences (AUROC, Welch p) and an HTML report out.",
                f"{_C}:DescribeConfig", f"{_R}:run_describe"),
        Command("evaluate", "Acc@1/Acc@5 over a RadDiffBench-format benchmark with ground truth.",
                f"{_C}:EvaluateConfig", f"{_R}:run_evaluate"),
        Command("report", "Re-render report.html of a finished raddiff run.", "medfm.core.report:ReportConfig", "medfm.core.report:run_report"),
    ),
)  # fmt: skip
