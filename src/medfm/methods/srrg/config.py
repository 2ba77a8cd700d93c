"""Torch-free configuration of ``medfm srrg`` verbs (presets in ``configs/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass

from medfm.core.config import CommonOptions, option


@dataclass
class SourcesOptions:
    """Where labelled report text comes from (all offline)."""

    sources: list[str] = option(default_factory=lambda: ["phantom", "radlabels", "iu"],
                                help="Training sources: phantom, radlabels, iu, file (comma-separated).")  # fmt: skip
    labelled_file: str | None = option(
        None, help="JSONL/CSV with columns text and labels ('Edema (Absent); ...').", input="table:text,labels"
    )
    phantom_n: int = option(400, help="Number of CXR phantom reports for training.", ge=1)
    phantom_seed: int = option(1, help="Seed of the training phantoms (evaluation uses eval_phantom_seed).")
    radlabels_train_fraction: float = option(0.5, help="Fraction of radlabels reports used for training; the "
                                             "rest is held out for evaluation.", ge=0, le=1)  # fmt: skip
    iu_limit: int | None = option(None, help="Use at most this many IU reports for silver sentences.")


@dataclass
class PrepareConfig(CommonOptions, SourcesOptions):
    """``medfm srrg prepare``: build the sentence-level training set (sentences.jsonl)."""


@dataclass
class TrainConfig(CommonOptions, SourcesOptions):
    """``medfm srrg train``: fine-tune the finding classifier (SRR-BERT) multi-label."""

    data: str | None = option(
        None, help="sentences.jsonl from 'medfm srrg prepare'; default: build from sources.", input="table:text,labels"
    )
    model: str = option("srr-bert", help="srr-bert (fine-tuned encoder) or tfidf (TF-IDF + logistic regression "
                        "baseline, CPU seconds).", choices=("srr-bert", "tfidf"))  # fmt: skip
    base: str = option("minilm", help="Encoder: minilm (offline MiniLM), a local folder or hf-hub:org/name "
                       "(e.g. hf-hub:microsoft/BiomedVLP-CXR-BERT-general).")  # fmt: skip
    epochs: int = option(10, help="Passes over the training split (the most: early stopping may end sooner).", ge=1)
    max_steps: int | None = option(None, help="Cap on optimizer steps (smoke runs).", ge=1)
    patience: int = option(2, help="Stop after this many epochs without a validation micro-F1 gain; 0: never.", ge=0)
    val_fraction: float = option(0.1, help="Fraction of training reports held out for early stopping and "
                                 "threshold tuning (split by report).", ge=0, lt=1)  # fmt: skip
    tune_thresholds: bool = option(True, help="Tune one threshold per label on the validation split.")
    batch_size: int = option(32, help="Sentences per step (global).", ge=1)
    lr: float = option(1e-4, help="Encoder learning rate (AdamW).", ge=0)
    head_lr: float = option(3e-3, help="Classification-head learning rate.", ge=0)
    schedule: str = option(
        "linear", help="Learning-rate decay after warm-up.", choices=("linear", "cosine", "constant")
    )
    warmup_fraction: float = option(0.06, help="Fraction of all steps spent warming up the learning rate.", ge=0, le=1)
    max_length: int = option(48, help="Tokens per sentence.", ge=1)
    grad_accum: int = option(1, help="Gradient accumulation steps.", ge=1)
    mixed_precision: str = option("no", help="Accelerate mixed precision.", choices=("no", "fp16", "bf16"))
    save_every: int = option(0, help="Extra checkpoint period in steps (<run>/checkpoints/last is also written "
                             "after every epoch).", ge=0)  # fmt: skip
    threshold: float = option(
        0.5, help="Default sigmoid threshold (labels with too few validation positives).", gt=0, lt=1
    )
    eval_phantom_n: int = option(200, help="Held-out phantom reports for the evaluation after training.")
    eval_phantom_seed: int = option(1001, help="Seed of the held-out phantoms.")


@dataclass
class EvaluateConfig(CommonOptions):
    """``medfm srrg evaluate``: classifier F1 on held-out gold labels, against the lexicon baseline."""

    classifier: str = option("lexicon", help="Model folder from 'medfm srrg train' (SRR-BERT or TF-IDF), a Hugging "
                             "Face model id or folder of a released SRR-BERT, or lexicon.")  # fmt: skip
    eval_phantom_n: int = option(200, help="Held-out phantom reports.")
    eval_phantom_seed: int = option(1001, help="Seed of the held-out phantoms.")
    radlabels_train_fraction: float = option(
        0.5, help="radlabels reports after this fraction are evaluated.", ge=0, le=1
    )
    radlabels_limit: int | None = option(None, help="Evaluate at most this many held-out radlabels reports.")
    compare_lexicon: bool = option(True, help="Also score the lexicon baseline on the same data.")


@dataclass
class StructureConfig(CommonOptions):
    """``medfm srrg structure``: free-text reports -> structured reports."""

    input: str = option("iu", help="iu (the IU reports), a .txt report, or a .jsonl/.csv with a 'report' column "
                        "(optional 'id').")  # fmt: skip
    structurer: str = option("offline", help="offline (no LLM) or llm (through --backend).", choices=("offline", "llm"))
    backend: str | None = option(None, help="Chat backend spec for --structurer llm (see medfm.backends).")
    max_repairs: int = option(2, help="Repair requests after an invalid LLM answer.", ge=0)
    classifier: str = option("lexicon", help="Finding classifier (lexicon or a model directory) used for organ "
                             "assignment and content preservation.")  # fmt: skip


@dataclass
class ScoreConfig(CommonOptions):
    """``medfm srrg score``: F1-SRR-BERT (all variants), BLEU and ROUGE-L of candidates vs references."""

    input: str = option(help="JSONL/CSV with columns 'reference' and 'candidate' (one report section per row).",
                        positional=True, input="table:reference,candidate")  # fmt: skip
    section: str = option("impression", help="Section the texts hold.", choices=("impression", "findings"))
    classifier: str = option("lexicon", help="Finding classifier: a model folder from 'medfm srrg train', a Hugging "
                             "Face model id or folder (e.g. StanfordAIMI/SRR-BERT-Leaves-with-Statuses), or lexicon.")  # fmt: skip
    spaces: list[str] = option(default_factory=lambda: ["leaves", "upper", "leaves_with_statuses",
                                                        "upper_with_statuses"], help="Label spaces to report.")  # fmt: skip
    bootstrap: int = option(200, help="Bootstrap resamples for the CIs of the per-report means.", ge=0)
