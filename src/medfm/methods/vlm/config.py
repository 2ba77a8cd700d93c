"""Configuration of ``medfm vlm`` verbs (torch-free; ``medfm vlm --help`` imports only this module).

Presets in ``configs/*.yaml``: ``tiny`` (CPU tests and demo: random 1-layer LM with SmolLM2's tokenizer, 32 px
images), ``small`` (SmolLM2-135M-Instruct with LoRA, 64 px images; slow on CPU) and ``paper`` (the LLaVA-1.5 recipe
shape at scale: pretrained frozen SigLIP tower, full LM fine-tuning, bf16).
"""

from __future__ import annotations

from dataclasses import dataclass

from medfm.core.config import CommonOptions, option, section

DEFAULT_REPORT_PROMPT = "Write the findings and impression for this chest X-ray."
DEFAULT_SYSTEM = "You are a helpful radiology assistant."


@dataclass
class VisionSpec:
    """The image tower (a transformers vision model inside ``LlavaForConditionalGeneration``)."""

    kind: str = option(
        "siglip",
        help="siglip: a SigLIP ViT built from the fields below, trained from scratch; hf: a pretrained "
        "transformers vision model (CLIP/SigLIP vision tower or dual encoder) from --model.vision.path; "
        "chexficient: the ViT image tower of a saved CheXficient model (`medfm chexficient train` output), "
        "converted to a CLIP vision tower with the same weights.",
        choices=("siglip", "hf", "chexficient"),
    )
    path: str = option("", help="kind hf: a folder or hf-hub:org/name; kind chexficient: a CheXficient model folder.")
    image_size: int = option(64, help="Input side in pixels (images are resized to a square of this size).", ge=1)
    patch_size: int = option(8, help="ViT patch side in pixels; the LM sees (image_size/patch_size)^2 image tokens.")
    hidden_size: int = option(128, help="ViT width.")
    intermediate_size: int = option(256, help="ViT MLP width.")
    num_layers: int = option(2, help="ViT depth.", ge=1)
    num_heads: int = option(4, help="ViT attention heads.")
    feature_select: str = option(
        "auto",
        help="Which tower tokens the LM sees (LLaVA's vision_feature_select_strategy): full (all, CLS included) or "
        "default (drop CLS). auto: full for siglip and chexficient towers (a CLIP-trained tower's summary lives in "
        "its CLS token, which shallow towers need), default for hf towers with CLS (the LLaVA convention).",
        choices=("auto", "full", "default"),
    )
    feature_layer: int = option(-1, help="Tower hidden state fed to the projector (-1 last, -2 penultimate, ...).")


@dataclass
class LMSpec:
    """The causal language model."""

    source: str = option(
        "default",
        help="default (SmolLM2-135M-Instruct from the offline GGUF asset), a model folder, a .gguf file, "
        "hf-hub:org/name, or tiny (random 2-layer Llama with the SmolLM2 tokenizer, for tests).",
    )
    num_layers: int = option(
        0, help="Keep only the first N decoder layers of a pretrained LM (0 = all; CPU experiments on a budget).", ge=0
    )
    tiny_hidden: int = option(64, help="Width of the tiny LM.")
    tiny_layers: int = option(2, help="Depth of the tiny LM.")


@dataclass
class VLMSpec:
    """How to build a fresh VLM (kept in the saved model's config as ``medfm_vlm``)."""

    init: str = option("", help="Start from this saved VLM folder (or hf-hub:org/name) instead of building one.")
    vision: VisionSpec = section(VisionSpec, help="Image tower.")
    lm: LMSpec = section(LMSpec, help="Language model.")
    system_prompt: str = option(DEFAULT_SYSTEM, help="System message of every conversation ('' for none).")
    max_length: int = option(512, help="Longest prompt + answer in tokens; longer inputs are a clear error.", ge=1)
    max_images: int = option(1, help="Most images one conversation may hold.")


@dataclass
class DataOptions:
    """Training / evaluation data: an image–report manifest and/or an image–question–answer manifest."""

    reports: str | None = option(
        None,
        help="Image–report manifest (CSV/JSONL: id, image, report, split, optional finding label columns).",
        input="manifest",
    )
    vqa: str | None = option(
        None,
        help="VQA manifest (CSV/JSONL: image, question, answer, optional split).",
        input="table:image,question,answer",
    )
    split: str = option("train", help="Rows of this split are used (train, val, test or all).")
    report_prompt: str = option(DEFAULT_REPORT_PROMPT, help="User instruction shown with each image for reports.")
    report_section: str = option(
        "full",
        help="Target text: the full report, or only its IMPRESSION section (shorter; falls back to full).",
        choices=("full", "impression"),
    )


@dataclass
class EvalDataOptions(DataOptions):
    """Held-out data: as :class:`DataOptions`, split ``test`` by default."""

    split: str = option("test", help="Rows of this split are used (train, val, test or all).")


@dataclass
class TrainOptions:
    """Supervised fine-tuning (next-token loss on the assistant answer only), Accelerate."""

    steps: int = option(200, help="Optimizer steps.", ge=1)
    batch_size: int = option(8, help="Conversations per step (per device).", ge=1)
    grad_accum: int = option(1, help="Gradient accumulation steps (Accelerate).", ge=1)
    lr: float = option(1e-3, help="Learning rate of the projector and (trainable) tower.", gt=0)
    lm_lr: float = option(2e-4, help="Learning rate of the LM parameters (LoRA adapters or full weights).")
    weight_decay: float = option(0.0, help="AdamW weight decay.", ge=0)
    warmup_steps: int = option(10, help="Linear warm-up steps, then cosine decay.", ge=0)
    freeze_tower: bool = option(False, help="Keep the image tower frozen (use with a pretrained tower).")
    lm_mode: str = option(
        "lora",
        help="lora (peft adapters on the LM attention/MLP), full (all LM weights) or frozen.",
        choices=("lora", "full", "frozen"),
    )
    lora_r: int = option(16, help="LoRA rank.")
    lora_alpha: int = option(32, help="LoRA alpha.")
    lora_dropout: float = option(0.0, help="LoRA dropout.")
    mixed_precision: str = option("no", help="Accelerate mixed precision: no, fp16 or bf16.",
                                  choices=("no", "fp16", "bf16"))  # fmt: skip
    checkpoint_every: int = option(100, help="Save <run>/checkpoints/last every this many steps (resumable).", ge=0)
    log_every: int = option(10, help="Write metrics.jsonl every this many steps.", ge=1)
    blind_images: bool = option(
        False, help="Replace every image by a constant grey one (text-only baseline under the same recipe)."
    )
    merge_lora: bool = option(True, help="Merge LoRA adapters into the LM before saving the final model.")


@dataclass
class GenerationOptions:
    """Decoding."""

    max_new_tokens: int = option(96, help="Most generated tokens per answer.", ge=1)
    batch_size: int = option(8, help="Conversations decoded together.", ge=1)
    use_cache: bool = option(True, help="Use the KV cache during decoding.")
    temperature: float = option(0.0, help="0 = greedy; > 0 samples.", ge=0)


@dataclass
class PrepareConfig(CommonOptions):
    """Write a VQA manifest (yes/no questions per finding) from an image–report manifest with finding labels."""

    reports: str = option(
        help="Image–report manifest with finding label columns (e.g. `medfm phantom cxr` output).", input="manifest"
    )
    findings: list[str] | None = option(None, help="Findings to ask about (default: those with a question template).")
    per_image: int = option(2, help="Questions per image (balanced: one 'yes' when the image has a finding).")


@dataclass
class TrainConfig(CommonOptions):
    """SFT of the VLM on image–report and/or image–question–answer manifests."""

    model: VLMSpec = section(VLMSpec, help="Model to build or start from.")
    data: DataOptions = section(DataOptions, help="Training manifests.")
    train: TrainOptions = section(TrainOptions, help="Optimisation.")


@dataclass
class GenerateConfig(CommonOptions):
    """Generate reports (or VQA answers) for the images of a manifest."""

    model: str = option(help="Saved VLM folder (e.g. <run>/checkpoints/final) or hf-hub:org/name.")
    data: DataOptions = section(DataOptions, help="Manifest to read (reports: generate reports; vqa: answer).")
    generation: GenerationOptions = section(GenerationOptions, help="Decoding.")


@dataclass
class EvaluateConfig(CommonOptions):
    """Finding-level F1 of generated reports against labels, SRR-BERT report F1, VQA exact-match accuracy."""

    model: str = option(help="Saved VLM folder (e.g. <run>/checkpoints/final) or hf-hub:org/name.")
    data: EvalDataOptions = section(EvalDataOptions, help="Held-out manifests (split test by default).")
    generation: GenerationOptions = section(GenerationOptions, help="Decoding.")
    bootstrap: int = option(1000, help="Bootstrap resamples for CIs (over images / questions).", ge=0)
