"""``medfm smmile``: the SMMILE multimodal in-context learning benchmark harness (torch-free declaration)."""

from __future__ import annotations

from medfm.core.commands import Command, Group

_C = "medfm.methods.smmile.config"
_R = "medfm.methods.smmile.verbs"

GROUP = Group(
    "smmile",
    "Benchmark multimodal in-context learning: SMMILE problems, conditions (0-shot, ICL, permutations, noise, "
    "ordering), EM / LLM-judge / MCQA with bootstrap, baselines, re-scoring of published result CSVs.",
    (
        Command("prepare", "Generate the offline CXR-phantom problem set (JSONL + HF parquet + truth).",
                f"{_C}:PrepareConfig", f"{_R}:run_prepare"),
        Command("run", "Run a backend on problems under conditions and tasks; resumable, cached.",
                f"{_C}:RunConfig", f"{_R}:run_run"),
        Command("score", "Re-score result CSVs in the original layout (EM, MCQA, optional judge).",
                f"{_C}:ScoreConfig", f"{_R}:run_score"),
        Command("report", "Paper-style tables and plots over one or more smmile runs.",
                f"{_C}:ReportConfig", f"{_R}:run_report"),
    ),
)  # fmt: skip
