"""Torch-free configuration of ``medfm headentropy`` verbs (presets in configs/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

from medfm.core.config import CommonOptions, option


@dataclass
class ExtractConfig(CommonOptions):
    """``medfm headentropy extract``: generate answers, label them, cache per-head features of one dataset."""

    data: str = option(
        help="QA source: a .jsonl/.json/.parquet file (TriviaQA rc.nocontext, HotpotQA distractor, MedMCQA or "
        "our JSONL) or builtin:countries | cities | us-counties (GeoNames facts) | iu-mesh | radlabels-yn | radlabels-mc | "
        "arithmetic."
    )
    format: str = option(
        "auto", help="Record format of --data.", choices=("auto", "triviaqa", "hotpotqa", "medmcqa", "jsonl")
    )
    name: str | None = option(None, help="Dataset (domain) name in tables; default: from the format or builtin.")
    backend: str = option("hf:default", help="Model backend with attentions (hf:default = SmolLM2-135M-Instruct).")
    max_new_tokens: int = option(32, help="Greedy generation budget per answer (tokens).", ge=1)
    chunk_size: int = option(32, help="Items per cached feature chunk (an interrupted run resumes per chunk).")
    query_block: int = option(128, help="Query rows per attention block (bounds transient memory to H*block*T).")
    prefill: str = option(
        "Answer:", help="Text the assistant turn starts with (keeps small models in format); '' = the original prompts."
    )
    medmcqa_last_sentence: bool = option(
        True, help="Put only the MedMCQA question's last sentence in the prompt, as the original code does."
    )
    label_mode: str = option(
        "contains",
        help="Correctness label: exact (normalised exact match, the paper's), contains (an alias as a whole-token "
        "run; yes/no by the first yes/no word; naming two options is wrong) or token_f1 (SQuAD F1 >= 0.5).",
        choices=("exact", "contains", "token_f1"),
    )


@dataclass
class FitConfig(CommonOptions):
    """``medfm headentropy fit``: fit the sparse probe on one extracted dataset and save it."""

    features: str = option(help="Run directory of `medfm headentropy extract` (holds features/).")
    scorer: str = option(
        "head_entropy",
        help="Trained scorer: head_entropy, head_entropy_pregen, trace_jacobian, lookback_ratio, hidden_state.",
    )
    C: float | None = option(None, help="Inverse L1 strength; default: the spec's (1 for Head Entropy, 0.1 baselines).")
    test_fraction: float = option(0.2, help="Held-out fraction (stratified) for the reported AUROC.", ge=0, le=1)
    bootstrap: int = option(1000, help="Bootstrap resamples for confidence intervals.", ge=0)


@dataclass
class EvaluateConfig(CommonOptions):
    """``medfm headentropy evaluate``: in-domain and transfer AUROC of Head Entropy and baselines."""

    features: list[str] = option(help="Run directories of `extract`, one per dataset (comma-separated).")
    scorers: list[str] = option(
        default_factory=lambda: [
            "head_entropy", "head_entropy_pregen", "trace_jacobian", "lookback_ratio", "hidden_state",
            "mean_head_entropy", "attn_score", "token_prob", "token_entropy", "certainty", "answer_length", "format",
        ],
        help="Scorers to compare (see medfm.methods.headentropy.probe.SCORERS).",
    )  # fmt: skip
    reference: str = option("lookback_ratio", help="Baseline for paired AUROC differences.")
    crossfit: int = option(
        0,
        help="Score every item in-domain out of fold with this many stratified folds (probes fit on the other "
        "folds; transfer probes on every item) instead of one --test_fraction split; 0 = one split.",
        ge=0,
    )
    inner_cv: bool = option(
        False,
        help="Choose C of every probe alike by stratified 5-fold inner CV on the train split (probe.C_GRID) "
        "instead of the repo's fixed C (1 for Head Entropy, 0.1 for the trained baselines).",
    )
    test_fraction: float = option(
        0.2, help="Held-out fraction per dataset (stratified; the repo's 80/20 fallback).", ge=0, le=1
    )
    bootstrap: int = option(1000, help="Bootstrap resamples for confidence intervals.", ge=0)
