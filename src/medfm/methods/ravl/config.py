"""Configuration of ``medfm ravl`` verbs (torch-free: ``--help`` imports only this module).

Presets: ``configs/tiny.yaml`` (CPU tests and demo: 64 px chest X-ray phantoms, a tiny CheXficient CLIP,
2x2 regions, a few dozen fine-tuning steps) and ``configs/paper.yaml`` (RaVL's settings: 4 prompt templates,
temperature 0.07, K swept over 2C..5C-1, influence >= 0.25, Precision@10; fine-tuning at the scale of the
paper's CLIP-RN50 experiments).
"""

from __future__ import annotations

from dataclasses import dataclass

from medfm.core.config import CommonOptions, option, section


@dataclass
class DataOptions:
    """Where the images come from: a manifest, or chest X-ray / quadrant-digit phantoms with a planted feature."""

    manifest: str | None = option(
        None, help="CSV/JSONL manifest (image path, class label, optional caption and JSON box columns); "
        "default: generate phantoms."
    , input="manifest")  # fmt: skip
    label_column: str = option("label", help="Manifest column with the class (name or index).")
    image_column: str = option("image", help="Manifest column with the image path (relative to the manifest).")
    caption_column: str = option("caption", help="Manifest column with the fine-tuning caption (optional).")
    region_column: str | None = option(None, help="Manifest column with candidate region boxes as a JSON list.")
    spurious_column: str | None = option(None, help="Manifest column with ground-truth spurious boxes (JSON list).")
    classnames: list[str] = option(default_factory=list, help="Class names in prompt order (default: sorted labels).")
    phantom: str = option("cxr", help="Phantom kind when no manifest is given.", choices=("cxr", "digits"))
    phantom_n: int = option(600, help="Phantom images to generate (CXR: before single-label filtering).", ge=1)
    phantom_size: int = option(64, help="Phantom image side in pixels.", ge=1)
    phantom_seed: int = option(1, help="Phantom seed (use different seeds for fine-tuning and evaluation sets).")
    classes: list[str] = option(
        default_factory=lambda: ["No Finding", "Cardiomegaly", "Pleural Effusion"],
        help="CXR phantom classes (CheXpert names; 'No Finding' = none of the others).",
    )
    spurious_label: str | None = option(
        "Pleural Effusion", help="CXR finding (or digit index for digits) the planted marker correlates with."
    )
    cramers_v: float = option(0.0, help="Cramér's V between the marker and the label (0: independent, eval sets).")
    size: int | None = option(None, help="Resize manifest images to size x size pixels.", ge=1)


@dataclass
class RegionOptions:
    """Candidate regions and zero-shot scoring."""

    grid: int = option(2, help="Grid cells per side when the data gives no region boxes (RaVL MNIST: 2).")
    mode: str = option(
        "mask", help="crop: crop and resize each region (RaVL); mask: the region in place on an empty canvas.",
        choices=("crop", "mask"),
    )  # fmt: skip
    templates: list[str] = option(
        default_factory=lambda: ["{}", "the image shows {}", "an image showing {}", "this is {}"],
        help="Prompt templates with {} for the class name; the class embedding is their normalised mean.",
    )
    temperature: float = option(0.07, help="Softmax temperature of zero-shot scores (RaVL: 0.07).", ge=0)
    batch_size: int = option(256, help="Images per forward pass.", ge=1)


@dataclass
class DiscoveryOptions:
    """RaVL discovery (spec §2.2)."""

    min_influence: float = option(0.25, help="Keep clusters whose influence score is at least this (RaVL: 0.25).")
    ks: list[int] = option(default_factory=list, help="Explicit K values to sweep (default: 2C..5C-1).")
    max_fit_regions: int = option(
        8000, help="Cluster at most this many regions directly; the rest join the nearest medoid."
    )
    top_k: int = option(10, help="k of Precision@k and of the example region grid.", ge=1)
    weighted: bool = option(True, help="Weight per-class gaps by group balance (False: unweighted ablation).")


@dataclass
class MitigationOptions:
    """Fine-tuning (spec §2.3) with the region-aware loss or a baseline."""

    method: str = option("ravl", help="Fine-tuning objective.", choices=("standard", "upsample", "gdro", "ravl"))
    steps: int = option(150, help="Optimiser steps.", ge=1)
    batch_size: int = option(64, help="Image-caption pairs per step.", ge=1)
    lr: float = option(1e-3, help="AdamW learning rate.", gt=0)
    weight_decay: float = option(0.01, help="AdamW weight decay.", ge=0)
    lambda_core: float = option(1.0, help="Weight of L_core (caption <-> pooled non-spurious regions).")
    lambda_spur: float = option(1.0, help="Weight of L_spur (spurious regions as extra negatives of each caption).")
    gdro_eta: float = option(0.1, help="GroupDRO step size of the group weights.")
    precision: str = option("no", help="Accelerate mixed precision.", choices=("no", "fp16", "bf16"))
    grad_accum: int = option(1, help="Gradient accumulation steps.", ge=1)
    save_every: int = option(50, help="Checkpoint to checkpoints/last every this many steps.", ge=0)
    log_every: int = option(10, help="Log losses to metrics.jsonl every this many steps.", ge=1)
    init: str = option(
        "model", help="model: continue from --model; scratch: a fresh tiny CLIP (for building audited models).",
        choices=("model", "scratch"),
    )  # fmt: skip


@dataclass
class DiscoverConfig(CommonOptions):
    """``medfm ravl discover``: find region clusters a fine-tuned CLIP uses spuriously."""

    model: str = option(help="Model under audit: a medfm model directory or open_clip:NAME[@weights].")
    data: DataOptions = section(DataOptions, help="Evaluation images.")
    regions: RegionOptions = section(RegionOptions, help="Regions and zero-shot scoring.")
    discovery: DiscoveryOptions = section(DiscoveryOptions, help="Clustering, filters and ranking.")


@dataclass
class MitigateConfig(CommonOptions):
    """``medfm ravl mitigate``: fine-tune with the region-aware loss (or a baseline) using a discovery run."""

    model: str | None = option(
        None, help="Model to fine-tune: a medfm model directory or open_clip:NAME[@weights] (not needed with "
        "--mitigation.init scratch)."
    )  # fmt: skip
    discovery_run: str | None = option(
        None, help="Run directory of `medfm ravl discover` (needed by ravl/upsample/gdro)."
    )
    data: DataOptions = section(DataOptions, help="Fine-tuning images and captions.")
    regions: RegionOptions = section(RegionOptions, help="Regions (same settings as the discovery run).")
    mitigation: MitigationOptions = section(MitigationOptions, help="Fine-tuning objective and optimiser.")


@dataclass
class EvaluateConfig(CommonOptions):
    """``medfm ravl evaluate``: image and region zero-shot accuracy, overall and worst-group, with CIs."""

    model: str = option(help="Model to evaluate: a medfm model directory or open_clip:NAME[@weights].")
    discovery_run: str | None = option(
        None, help="Discovery run whose feature defines groups when no ground truth exists."
    )
    data: DataOptions = section(DataOptions, help="Evaluation images.")
    regions: RegionOptions = section(RegionOptions, help="Regions and zero-shot scoring.")
    bootstrap: int = option(500, help="Bootstrap resamples for CIs.", ge=0)
