"""Configuration of ``medfm chexficient`` verbs (torch-free: ``--help`` imports only this module).

Presets: ``configs/tiny.yaml`` (CPU tests and demo: 48 px phantoms, bag-of-sentences text tower, seconds),
``configs/paper.yaml`` (the paper's configuration: DINOv2 ViT-B/14 @378 px via timm, Bio_ClinicalBERT with eos
pooling, global batch 480, 20 epochs with 1 curation epoch, lr 5e-5 cosine to 5e-6, fp16),
``configs/minilm.yaml`` (the offline default text encoder all-MiniLM-L6-v2 with a small ViT).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medfm.core.config import CommonOptions, option, section

#: Default towers (CPU scale), shared with :class:`medfm.methods.chexficient.model.CheXficientModel`.
DEFAULT_IMAGE_TOWER: dict[str, Any] = {
    "kind": "vit", "image_size": 64, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32,
}  # fmt: skip
DEFAULT_TEXT_TOWER: dict[str, Any] = {
    "kind": "hf", "path": "asset:all-minilm-l6-v2", "pooling": "mean", "max_length": 256, "load_weights": True,
}  # fmt: skip


def _default_image_tower() -> dict[str, Any]:
    return dict(DEFAULT_IMAGE_TOWER)


def _default_text_tower() -> dict[str, Any]:
    return dict(DEFAULT_TEXT_TOWER)


@dataclass
class ModelOptions:
    """The dual encoder (see medfm.methods.chexficient.model for the tower kinds)."""

    embed_dim: int = option(64, help="Shared embedding size D (paper: 512).")
    image_tower: dict = option(
        default_factory=_default_image_tower,
        help="Image tower: kind vit|resnet|timm plus open_clip CLIPVisionCfg fields (vit: image_size, patch_size, "
        "width, layers, head_width; resnet: layers [4 ints], width; timm: name, pretrained, image_size).",
    )
    text_tower: dict = option(
        default_factory=_default_text_tower,
        help="Text tower: kind hf (path: asset:NAME, hub id or folder; pooling mean|cls|eos; max_length), "
        "open_clip (CLIPTextCfg fields) or bag (width).",
    )
    init_temperature: float = option(0.01, help="Initial temperature; logit scale = ln(1/T) (paper: 0.01).")
    init_from: str | None = option(None, help="Start from this CheXficient model directory instead of scratch.")


@dataclass
class CuratorOptions:
    """The prototype curator (spec §1.4); paper values are the defaults."""

    num_prototypes: int = option(6, help="K, number of prototypes.")
    q_outlier: float = option(0.95, help="Distance percentile (0-1) above which pairs are outliers (dropped).")
    q_support: float = option(0.85, help="Percentile (0-1) above which, up to q_outlier, pairs are all kept.")
    max_per_cluster: int = option(10, help="M, central pairs kept per prototype after thinning.")
    thinning: str = option("fps", help="Thinning of the central mass.", choices=("fps", "density", "random"))
    ema_decay: float = option(0.9, help="Prototype EMA decay.", ge=0, le=1)
    sinkhorn_eps: float = option(0.5, help="Sinkhorn-Knopp temperature of the balanced assignment.")
    sinkhorn_iters: int = option(3, help="Sinkhorn-Knopp iterations.", ge=1)
    warmup_batches: int = option(10, help="Batches embedded (no grad) for the k-means prototype initialisation.", ge=0)
    kmeans_iters: int = option(20, help="FAISS k-means iterations.")
    kmeans_seed: int = option(42, help="FAISS k-means seed.")
    curation_epochs: int = option(1, help="Epochs with online selection; later epochs use the fixed kept subset.", ge=1)
    score_pass: str = option(
        "auto",
        help="with_grad: forward the whole global batch with gradients, loss on kept pairs (paper). no_grad: "
        "embed the batch without gradients in micro-batches, then forward only kept pairs (cheaper, any batch "
        "on any memory). auto: with_grad when the batch fits in one micro-batch.",
        choices=("auto", "with_grad", "no_grad"),
    )


@dataclass
class DataOptions:
    """Image–report pairs: a CSV/JSONL manifest, or CXR phantoms generated in memory."""

    manifest: str | None = option(
        None, help="Image–report manifest (.csv/.jsonl); none = CXR phantoms.", input="manifest"
    )
    image_column: str = option("image", help="Manifest column with image paths.")
    report_column: str = option("report", help="Manifest column with report text.")
    id_column: str = option("id", help="Manifest column with unique pair ids.")
    skip_missing_images: bool = option(False, help="Drop rows whose image file is missing instead of failing.")
    drop_empty_reports: bool = option(True, help="Drop rows with empty reports (as the paper's filtering) "
                                      "instead of failing.")  # fmt: skip
    phantom_n: int = option(2000, help="Phantom pool size (pairs); split 80/10/10 by patient.", ge=1)
    phantom_size: int = option(64, help="Phantom image size in pixels (>= 32).", ge=1)
    phantom_seed: int = option(0, help="Phantom dataset seed.")
    phantom_duplicate_rate: float = option(0.1, help="Probability a phantom patient has a near-duplicate study.")
    test_n: int = option(
        0, help="Extra held-out phantom test set with uniform prevalence (0: use the test split).", ge=0
    )
    test_prevalence: float = option(0.15, help="Prevalence of every finding in the extra phantom test set.", ge=0, le=1)


@dataclass
class TrainOptions:
    """Optimisation (paper: AdamW lr 5e-5 -> 5e-6 cosine, wd 1e-4, batch 480, 20 epochs, fp16)."""

    arm: str = option(
        "curated",
        help="curated (CheXficient), full (all data), random_online (random keep mask with the curator's count "
        "per batch), random_static (uniform random subset, same optimiser steps as curated).",
        choices=("curated", "full", "random_online", "random_static"),
    )
    epochs: int = option(20, help="Total epochs (the first curator.curation_epochs curate online).", ge=1)
    batch_size: int = option(480, help="Global batch size (selection runs over the whole global batch).", ge=1)
    micro_batch_size: int = option(480, help="Per-forward batch on each process (embeddings gathered before "
                                   "selection).", ge=1)  # fmt: skip
    lr: float = option(5e-5, help="Peak learning rate.", gt=0)
    min_lr: float = option(5e-6, help="Final learning rate of the cosine schedule.", ge=0)
    weight_decay: float = option(1e-4, help="AdamW weight decay (0 for 1-D parameters).", ge=0)
    warmup_steps: int = option(0, help="Linear warm-up steps.", ge=0)
    mixed_precision: str = option("no", help="Accelerate mixed precision.", choices=("no", "fp16", "bf16"))
    random_static_fraction: float | None = option(None, help="Subset fraction of random_static (default: the "
                                                  "expected curated keep fraction).")  # fmt: skip
    max_steps: int | None = option(None, help="Stop after this many optimiser steps in total (budget cap).", ge=1)
    stop_after_steps: int | None = option(
        None, help="Checkpoint and exit after this many steps (rerun to resume).", ge=1
    )
    val_every: int = option(0, help="Score zero-shot macro AUROC on split --train.val_split every N epochs (logged "
                            "as val_macro_auroc; the best epoch's weights are kept); 0: never.", ge=0)  # fmt: skip
    val_split: str = option("val", help="Split the validation scores are computed on (never the test split).")
    patience: int = option(0, help="Stop after this many validations without a gain of 0.002 in validation macro "
                           "AUROC and keep the best epoch's weights (needs --train.val_every); 0: never stop early.",
                           ge=0)  # fmt: skip
    save_every: int = option(50, help="Checkpoint <run>/checkpoints/last every N steps.", ge=0)
    log_every: int = option(10, help="Log metrics every N steps.", ge=1)
    num_threads: int | None = option(None, help="torch CPU threads (default: torch's).")


@dataclass
class EvalOptions:
    """Zero-shot, retrieval and linear-probe evaluation (spec §1.6)."""

    findings: list[str] = option(default_factory=list, help="Findings to evaluate (default: every label column "
                                 "with both classes on the test split, except derived ones).")  # fmt: skip
    positive_template: str = option("{}", help="Prompt for 'finding present'.")
    negative_template: str = option("no {}", help="Prompt for 'finding absent'.")
    prompt_terms: dict = option(default_factory=dict, help="Finding -> phrase used in its prompts (defaults for "
                                "CheXpert names, e.g. Fracture -> rib fracture).")  # fmt: skip
    bootstrap: int = option(300, help="Bootstrap resamples for CIs.", ge=0)
    linear_probe: bool = option(True, help="Also fit a logistic-regression linear probe on train-split features.")
    probe_max_train: int = option(4000, help="Train pairs used by the linear probe.")
    split: str = option("test", help="Split evaluated.")


@dataclass
class TrainConfig(CommonOptions):
    """``medfm chexficient train``: CLIP pretraining with online prototype curation (or a baseline arm)."""

    model: ModelOptions = section(ModelOptions, help="Dual encoder.")
    curator: CuratorOptions = section(CuratorOptions, help="Prototype curator.")
    data: DataOptions = section(DataOptions, help="Training data.")
    train: TrainOptions = section(TrainOptions, help="Optimisation.")
    eval: EvalOptions = section(EvalOptions, help="Evaluation after training.")
    evaluate_after: bool = option(True, help="Evaluate on the test split after training.")


@dataclass
class CurateConfig(CommonOptions):
    """``medfm chexficient curate``: score a manifest with a (trained or fresh) model and write the kept subset."""

    model_dir: str | None = option(None, help="CheXficient model directory to embed with (default: a fresh model "
                                   "built from --model.*).")  # fmt: skip
    model: ModelOptions = section(ModelOptions, help="Dual encoder when no --model_dir is given.")
    curator: CuratorOptions = section(CuratorOptions, help="Prototype curator.")
    data: DataOptions = section(DataOptions, help="Pairs to curate.")
    batch_size: int = option(480, help="Global batch size of the selection.", ge=1)
    embed_batch_size: int = option(256, help="Batch size of the streaming embedding pass.", ge=1)
    split: str | None = option("train", help="Only curate this split (none = every row).")


@dataclass
class EvaluateConfig(CommonOptions):
    """``medfm chexficient evaluate``: zero-shot AUROC, retrieval Recall@K and linear probe with CIs."""

    model_dir: str = option(help="CheXficient model directory (a train run's checkpoints/final).")
    data: DataOptions = section(DataOptions, help="Evaluation data.")
    eval: EvalOptions = section(EvalOptions, help="Evaluation.")


@dataclass
class EmbedConfig(CommonOptions):
    """``medfm chexficient embed``: image and report embeddings of a manifest (or phantoms) to .npz."""

    model_dir: str = option(help="CheXficient model directory.")
    data: DataOptions = section(DataOptions, help="Pairs to embed.")
    split: str | None = option(None, help="Only embed this split (none = every row).")
    batch_size: int = option(256, help="Embedding batch size.", ge=1)
