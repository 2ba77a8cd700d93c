"""Configuration of ``medfm chexalign`` verbs (torch-free; ``medfm chexalign --help`` imports only this module).

Pipeline: ``sample`` (N candidate reports per study from the SFT policy) -> ``judge`` (a reward per candidate) ->
``pairs`` (chosen = best, rejected = worst; KTO rows) -> ``train`` (DPO / IPO / KTO / ORPO / R-DPO / SimPO through
TRL) -> ``evaluate`` (before vs after alignment, with CIs). Presets in ``configs/*.yaml`` are for ``train``:
``tiny`` (CPU tests and demo) and ``paper`` (CheXalign's recipe: lr 1e-6, cosine, warm-up 0.1, one epoch,
batch 4 x 8, beta sweep 0.1/0.05/0.01, bf16, image tower frozen).
"""

from __future__ import annotations

from dataclasses import dataclass

from medfm.core.config import CommonOptions, option, section

DEFAULT_PROMPT = "Write the findings and impression for this chest X-ray."


@dataclass
class StudyData:
    """Studies: an image–report manifest (``medfm phantom cxr`` output or any CSV/JSONL with id, image, report)."""

    reports: str = option(
        help="Image–report manifest (CSV/JSONL: id, image, report, split, optional finding labels).", input="manifest"
    )
    split: str = option("train", help="Rows of this split are used (train, val, test or all).")
    prompt: str = option(DEFAULT_PROMPT, help="User instruction shown with each study's image.")
    section: str = option(
        "impression",
        help="Reference text: the full report or its IMPRESSION section (must match what the SFT policy learned).",
        choices=("full", "impression"),
    )


@dataclass
class HeldOutData(StudyData):
    """Held-out studies (split ``test`` by default)."""

    split: str = option("test", help="Rows of this split are used (train, val, test or all).")


@dataclass
class SampleConfig(CommonOptions):
    """Sample N candidate reports per study from the SFT policy (resumable: rerun into the same --output_dir)."""

    policy: str = option("", help="SFT policy: a saved VLM folder (`medfm vlm train` -> checkpoints/final).")
    backend: str = option(
        "",
        help="Or sample through a backend instead (hf:/path/to/vlm, openai:http://host/v1#model, scripted:file.jsonl); "
        "responses are cached in <run>/backend_cache.sqlite.",
    )
    data: StudyData = section(StudyData, help="Studies to sample for.")
    n: int = option(4, help="Candidates per study (CheXalign: 4).", ge=1)
    temperature: float = option(1.0, help="Sampling temperature (CheXalign: 1.0, top-p 1).", ge=0)
    max_new_tokens: int = option(96, help="Most tokens per candidate (CheXalign: 512).", ge=1)
    batch_size: int = option(4, help="Studies decoded together (each with its N candidates).", ge=1)


@dataclass
class JudgeOptions:
    """Which judge scores the candidates."""

    kind: str = option(
        "offline",
        help="offline: GREEN from SRRG finding labels; llm: GREEN prompt to a backend; bertscore: MiniLM BERTScore.",
        choices=("offline", "llm", "bertscore"),
    )
    length_control: bool = option(False, help="Divide the score by max(words(candidate)/words(reference), 1) (LC-).")
    classifier: str = option(
        "lexicon", help="offline judge: SRRG finding classifier, 'lexicon' or a trained `medfm srrg train` folder."
    )
    backend: str = option("", help="llm judge: backend spec (hf:default, openai:http://host/v1#model, scripted:...).")
    max_tokens: int = option(512, help="llm judge: most tokens of the judge's answer.", ge=1)


@dataclass
class JudgeConfig(CommonOptions):
    """Score every candidate against its study's reference (GREEN, LC-GREEN or BERTScore)."""

    candidates: str = option(
        help="candidates.jsonl written by `medfm chexalign sample` (or its run directory).", input="table:candidates"
    )
    judge: JudgeOptions = section(JudgeOptions, help="The judge.")


@dataclass
class PairsConfig(CommonOptions):
    """Build preference pairs (chosen = best, rejected = worst, ties dropped) and KTO rows."""

    judged: str = option(help="judged.jsonl written by `medfm chexalign judge` (or its run directory).")
    tie_threshold: float = option(1e-8, help="Drop a study when max - min of its rewards is at most this.")


@dataclass
class AlignOptions:
    """Optimisation of the direct alignment algorithm (TRL trainer arguments)."""

    steps: int = option(0, help="Optimizer steps (0 = run --train.epochs epochs).", ge=0)
    epochs: float = option(1.0, help="Epochs over the pairs when --train.steps is 0 (CheXalign: 1).")
    batch_size: int = option(4, help="Pairs (KTO: rows) per device per step.", ge=1)
    grad_accum: int = option(8, help="Gradient accumulation steps.", ge=1)
    lr: float = option(1e-6, help="Learning rate (CheXalign: 1e-6).", gt=0)
    scheduler: str = option("cosine", help="LR schedule (transformers name).")
    warmup_ratio: float = option(0.1, help="Warm-up fraction of the steps.", ge=0, le=1)
    weight_decay: float = option(0.0, help="AdamW weight decay.", ge=0)
    max_length: int = option(1024, help="Longest prompt + response in tokens (image tokens included).", ge=1)
    checkpoint_every: int = option(50, help="Save a resumable trainer checkpoint every this many steps.", ge=0)
    mixed_precision: str = option("no", help="no, bf16 or fp16.", choices=("no", "bf16", "fp16"))
    gradient_checkpointing: bool = option(False, help="Trade compute for memory.")
    deepspeed: str = option("", help="DeepSpeed config JSON (e.g. ZeRO-3) for `accelerate launch` runs.")
    freeze_vision_tower: bool = option(True, help="Keep the image tower frozen (CheXalign does).")
    rdpo_alpha: float = option(0.05, help="R-DPO length coefficient alpha (CheXalign: 0.05).")
    simpo_gamma: float = option(0.5, help="SimPO target reward margin gamma.")
    kto_desirable_weight: float = option(1.0, help="KTO lambda_D.")
    kto_undesirable_weight: float = option(1.0, help="KTO lambda_U.")


@dataclass
class TrainConfig(CommonOptions):
    """Align the SFT policy on preference pairs with one algorithm, for each beta of a sweep."""

    policy: str = option(help="SFT policy folder (also the frozen reference model).")
    pairs: str = option(
        help="pairs.jsonl written by `medfm chexalign pairs` (or its run directory).", input="table:chosen|completion"
    )
    algorithm: str = option(
        "dpo",
        help="dpo, ipo, kto, orpo, rdpo (DPO + alpha (|y_w|-|y_l|)) or simpo.",
        choices=("dpo", "ipo", "kto", "orpo", "rdpo", "simpo"),
    )
    betas: list[float] = option(
        default_factory=lambda: [0.1],
        help="Beta sweep: one aligned model per value (ORPO: the weight lambda of its odds-ratio term, as in TRL).",
    )
    train: AlignOptions = section(AlignOptions, help="Optimisation.")


@dataclass
class EvaluateConfig(CommonOptions):
    """Reports of the aligned policy vs the SFT policy on held-out studies: six metrics, length, alignment tax."""

    model: str = option(help="Aligned policy folder (`medfm chexalign train` -> checkpoints/final).")
    baseline: str = option("", help="SFT policy folder to compare with ('' = evaluate --model only).")
    data: HeldOutData = section(HeldOutData, help="Held-out studies.")
    judge: JudgeOptions = section(JudgeOptions, help="The judge whose score is reported as GREEN.")
    max_new_tokens: int = option(96, help="Most generated tokens per report (greedy decoding).", ge=1)
    batch_size: int = option(8, help="Reports decoded together.", ge=1)
    tax: bool = option(True, help="Also run the alignment-tax suite (VQA accuracy, finding classification).")
    bertscore: bool = option(True, help="Compute the MiniLM BERTScore metric.")
    bootstrap: int = option(1000, help="Bootstrap resamples for CIs (over studies).", ge=0)
