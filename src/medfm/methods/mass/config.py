"""Configuration of ``medfm mass`` verbs (torch-free; ``medfm mass --help`` imports only this module).

Presets live in ``configs/*.yaml`` (pretrain), ``prep/configs`` (prepare) and ``downstream/configs`` (segment,
finetune, probe): ``tiny`` (CPU tests, demo and benchmark, 32^3 crops) and ``paper`` (the released MASS
configuration: 120 M parameters, 128^3 crops, K=13).
"""

from __future__ import annotations

from dataclasses import dataclass

from medfm.core.config import CommonOptions, option, section


@dataclass
class DataOptions:
    """Which volumes a verb reads: a Decathlon-style datalist, or generated CT phantoms when none is given."""

    datalist: str | None = option(None, help="Decathlon-style dataset.json (NIfTI files or DICOM series folders, "
                                  "optional labels).", input="datalist")  # fmt: skip
    split: str = option("train", help="Datalist split to read.", choices=("train", "val", "test", "all"))
    phantom_n: int = option(6, help="Without a datalist: number of CT phantoms to generate.", ge=1)
    phantom_first: int = option(0, help="Without a datalist: index of the first phantom (disjoint sets per role).")
    phantom_shape: list[int] = option(default_factory=lambda: [40, 40, 40], help="Phantom shape (voxels).")
    phantom_spacing: list[float] = option(default_factory=lambda: [7.0, 7.0, 7.0], help="Phantom voxel size, mm.")
    phantom_seed: int = option(0, help="Seed of the phantom cohort (same seed + index = same patient).")
    spacing: list[float] | None = option(
        None, help="Resample every volume to this voxel size (mm; one value = isotropic). None keeps the grid."
    )
    modality: str = option("CT", help="CT (clip to ct_window, z-score) or MR (2-98 %% clip, z-score).",
                           choices=("CT", "MR"))  # fmt: skip
    ct_window: list[float] = option(default_factory=lambda: [-991.0, 500.0], help="CT clip range before z-score, HU.")
    min_size: int = option(32, help="Pad every axis to at least this many voxels (crops must fit).")


@dataclass
class ProposalOptions:
    """Class-agnostic mask proposals (spec A3, C2): SLIC supervoxels, intensity windows, hierarchical merges."""

    generators: list[str] = option(
        default_factory=lambda: ["slic", "threshold", "merge"],
        help="Mask generators: slic, threshold, merge, or 'module:factory' for your own (e.g. SAM2 propagation).",
    )
    slic_segments: int = option(150, help="SLIC: approximate number of supervoxels per volume.")
    slic_compactness: float = option(0.2, help="SLIC: compactness in z-scored intensity units.")
    merge_thresholds: list[float] = option(
        default_factory=lambda: [0.05, 0.1, 0.2],
        help="Hierarchical merges: merge adjacent supervoxels whose mean intensities differ by less than each "
        "threshold (z-score units), one level per threshold.",
    )
    ct_windows: list[str] = option(
        default_factory=lambda: ["-1000:-400", "-200:-30", "-30:80", "80:160", "160:300", "300:3000"],
        help="Threshold generator: HU bands 'lo:hi' (CT); MR uses intensity terciles.",
    )
    body_threshold: float = option(-500.0, help="Body mask: HU above this, largest component, holes filled (CT).")
    min_voxels: int = option(20, help="Drop masks smaller than this many voxels.")
    max_fraction: float = option(0.3, help="Drop masks larger than this fraction of the body.")
    iou_threshold: float = option(0.95, help="3D-IoU NMS: drop a mask overlapping a larger kept one above this.")
    max_masks: int = option(300, help="Keep at most this many masks per volume (largest first after NMS).")


@dataclass
class ModelOptions:
    """Iris network (spec A2). Paper: channels 32..512, 2 blocks, 3 prior stages, 10 queries, pos 128."""

    channels: list[int] = option(default_factory=lambda: [8, 16, 32, 64], help="Encoder widths per level.")
    blocks: int = option(1, help="Residual blocks per stage.")
    num_prior_stage: int = option(2, help="Deepest levels with task encoding and decoder fusion.")
    num_queries: int = option(10, help="Learned task queries per stage (tokens per task = this + 1).")
    head_dim: int = option(32, help="Attention head width (heads = channels / head_dim, at least 1).")
    pos_size: int = option(32, help="Side of the learned positional embedding: the largest crop side.")
    query_blocks: int = option(2, help="Task-query attention blocks per stage.")
    fusion_blocks: int = option(2, help="Prior-fusion blocks per decoder scale.")


@dataclass
class TrainOptions:
    """Optimisation (spec A4): LAMB/AdamW, one-cycle schedule, clip, EMA, Accelerate."""

    steps: int = option(60, help="Optimizer steps.", ge=1)
    batch_size: int = option(2, help="Samples per step (per device).", ge=1)
    grad_accum: int = option(1, help="Gradient accumulation steps (Accelerate).", ge=1)
    optimizer: str = option("adamw", help="lamb (paper, needs timm) or adamw.", choices=("lamb", "adamw"))
    lr: float = option(2e-3, help="Peak learning rate.", gt=0)
    weight_decay: float = option(1e-5, help="Weight decay.", ge=0)
    pct_start: float = option(0.05, help="One-cycle warm-up fraction.")
    grad_clip: float = option(1.0, help="Gradient-norm clip.")
    ema_decay: float = option(0.99, help="EMA decay of weights (EMA weights are saved and evaluated).", ge=0, le=1)
    mixed_precision: str = option("no", help="no, bf16 or fp16 (Accelerate).", choices=("no", "bf16", "fp16"))
    checkpoint_every: int = option(50, help="Save checkpoints/last every this many steps (resumable).", ge=0)
    log_every: int = option(10, help="Log the loss every this many steps.", ge=1)


@dataclass
class PretrainTask:
    """Pretext task (spec A4): K masks, two overlapping crops, weak/strong augmentation, all-ones task."""

    objective: str = option(
        "mass",
        help="mass (in-context segmentation of automatic masks), simclr (contrastive baseline), mim (masked-image "
        "modelling baseline).",
        choices=("mass", "simclr", "mim"),
    )
    crop: int = option(32, help="Crop side (voxels) fed to the network; divisible by 2^(levels-1).", ge=1)
    crop_margin: int = option(8, help="Views are cut at crop + margin, then affine-augmented and centre-cropped.")
    num_masks: int = option(6, help="K masks per sample (spec: 13); fewer if a volume has fewer.")
    min_overlap: float = option(0.67, help="Minimum per-axis overlap of the two views.")
    all_ones_task: bool = option(True, help="Replace one of the K masks by an all-ones mask (global context task).")
    augment: bool = option(True, help="Weak augmentation of the reference view, strong of the target view.")
    mim_patch: int = option(4, help="mim: side of the masked cubes (voxels).")
    mim_ratio: float = option(0.6, help="mim: fraction of cubes masked.")
    temperature: float = option(0.1, help="simclr: NT-Xent temperature.", ge=0)


@dataclass
class EvalOptions:
    """In-context / fine-tuned evaluation (spec A6)."""

    structures: list[str] = option(
        default_factory=lambda: ["liver", "spleen", "kidney_right", "kidney_left", "heart_myocardium"],
        help="Structures to segment (names from the datalist's labels, or label values).",
    )
    shots: int = option(1, help="Labelled reference volumes (tokens averaged over them).", ge=1)
    overlap: float = option(0.5, help="Sliding-window overlap (uniform averaging).", ge=0, le=1)
    threshold: float = option(0.5, help="Probability threshold.")
    hd95: bool = option(True, help="Also compute HD95 (mm) with MONAI.")


@dataclass
class PrepareConfig(CommonOptions):
    """``medfm mass prepare``: cache preprocessed volumes and their automatic mask proposals."""

    data: DataOptions = section(DataOptions, help="Input volumes.")
    proposals: ProposalOptions = section(ProposalOptions, help="Mask proposal generators.")


@dataclass
class PretrainConfig(CommonOptions):
    """``medfm mass pretrain``: self-supervised pretraining on automatic masks (or an SSL baseline)."""

    masks: str = option(help="Output directory of `medfm mass prepare` (volumes + masks + index.json).")
    model: ModelOptions = section(ModelOptions, help="Network.")
    task: PretrainTask = section(PretrainTask, help="Pretext task.")
    train: TrainOptions = section(TrainOptions, help="Optimisation.")


@dataclass
class SegmentConfig(CommonOptions):
    """``medfm mass segment``: training-free in-context segmentation from labelled reference volumes."""

    checkpoint: str | None = option(None, help="Pretrained model directory (checkpoints/final); none = random init.")
    reference: DataOptions = section(DataOptions, help="Labelled reference volumes (the first `shots` are used).")
    data: DataOptions = section(DataOptions, help="Labelled target volumes to segment and score.")
    model: ModelOptions = section(ModelOptions, help="Network (used only without --checkpoint).")
    eval: EvalOptions = section(EvalOptions, help="Evaluation.")
    crop: int = option(32, help="Window side (reference crop and sliding window).", ge=1)


@dataclass
class FinetuneConfig(CommonOptions):
    """``medfm mass finetune``: learnable class prompts initialised from references; any fraction of labels."""

    checkpoint: str | None = option(None, help="Pretrained model directory; none = train from scratch.")
    data: DataOptions = section(DataOptions, help="Labelled training volumes.")
    test: DataOptions = section(DataOptions, help="Labelled test volumes.")
    model: ModelOptions = section(ModelOptions, help="Network (used only without --checkpoint).")
    eval: EvalOptions = section(EvalOptions, help="Evaluation (shots = labelled training volumes used).")
    label_fraction: float | None = option(None, help="Use this fraction of the training volumes (overrides shots).")
    mode: str = option("full", help="full (all weights + prompts) or probing (prompts only).",
                       choices=("full", "probing"))  # fmt: skip
    steps: int = option(60, help="Fine-tuning steps.", ge=1)
    batch_size: int = option(2, help="Crops per step (global: split over the processes of a multi-process run).", ge=1)
    checkpoint_every: int = option(50, help="Checkpoint <run>/checkpoints/last every N steps (and at the end).", ge=0)
    lr: float = option(5e-4, help="AdamW learning rate (model and prompts).", gt=0)
    weight_decay: float = option(1e-3, help="AdamW weight decay.", ge=0)
    crop: int = option(32, help="Crop side.", ge=1)
    foreground_prob: float = option(0.67, help="Probability that a training crop is centred on a structure.")


@dataclass
class ProbeConfig(CommonOptions):
    """``medfm mass probe``: frozen encoder + attention pooling + linear head, volume-level classification."""

    checkpoint: str | None = option(None, help="Pretrained model directory; none = random frozen encoder.")
    data: DataOptions = section(DataOptions, help="Training volumes.")
    test: DataOptions = section(DataOptions, help="Test volumes.")
    model: ModelOptions = section(ModelOptions, help="Network (used only without --checkpoint).")
    target: str = option(
        "liver_tumour",
        help="Binary target: a structure name/value (positive if present in the label map) or 'metadata:KEY'.",
    )
    crop: int = option(32, help="Pad volumes to at least this side before encoding the whole volume.", ge=1)
    steps: int = option(100, help="Head training steps.", ge=1)
    lr: float = option(1e-3, help="AdamW learning rate of the head.", gt=0)
    weight_decay: float = option(1e-4, help="AdamW weight decay.", ge=0)
