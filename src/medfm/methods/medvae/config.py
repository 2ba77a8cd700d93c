"""Torch-free configuration of ``medfm medvae`` verbs (``--help`` imports only this module).

Image conventions used throughout the method: model inputs are float tensors in [-1, 1] (background -1), 2D
``(B, C, H, W)`` and 3D ``(B, C, X, Y, Z)`` in NIfTI voxel order; latents are ``(B, C_lat, H/f, W/f)`` or
``(B, C_lat, X/f, Y/f, Z/f)`` with ``f`` the per-axis downsizing factor of the preset (4 or 8).
"""

from __future__ import annotations

from dataclasses import dataclass

from medfm.core.config import CommonOptions, option, section


@dataclass
class ModelOptions:
    """Which autoencoder to build or load."""

    preset: str = option(
        "tiny_4_1_2d",
        help="Architecture preset: medvae_4_1_2d, medvae_4_3_2d, medvae_8_1_2d, medvae_8_4_2d, medvae_4_1_3d, "
        "medvae_8_1_3d (published shapes) or tiny_4_1_2d, tiny_8_1_2d, tiny_4_1_3d, tiny_8_1_3d (CPU).",
    )
    init: str | None = option(
        None,
        help="Start from these weights: a medfm model directory (local-dir:/path or hf-hub:org/name) or an "
        "original medvae .ckpt. 2D weights given to a 3D preset are inflated into the centre kernel slice.",
    )
    gradient_checkpointing: bool = option(False, help="Recompute encoder/decoder activations (saves memory).")


@dataclass
class DataOptions:
    """Training / evaluation images."""

    source: str = option(
        "phantom:cxr",
        help="phantom:cxr (2D chest X-ray phantoms), phantom:ct (3D CT phantoms), a folder of PNG/DICOM/NIfTI "
        "files, a CSV/JSONL manifest with an image column, or a Decathlon datalist JSON.",
        input="manifest",
    )
    n: int = option(64, help="Number of phantoms to generate for phantom:* sources.", ge=1)
    size: int = option(
        64, help="2D: image side in pixels (phantoms are rendered at it; files are padded/cropped).", ge=1
    )
    patch: int = option(32, help="3D: training patch side in voxels (volumes are padded with -1 when smaller).")
    phantom_shape: list[int] = option(
        default_factory=lambda: [48, 48, 48], help="3D phantoms: volume shape (X, Y, Z) in voxels."
    )
    modality: str = option(
        "auto",
        help="Intensity normalisation: auto (from the data), xray, ct, mri.",
        choices=("auto", "xray", "ct", "mri"),
    )
    ct_window: list[float] = option(
        default_factory=lambda: [-1000.0, 1000.0], help="CT: HU range mapped to [-1, 1] (original MedVAE)."
    )
    val_fraction: float = option(0.2, help="Fraction of items held out for validation/evaluation.")
    label: str | None = option(
        None,
        help="Binary label for classify: a CXR finding (e.g. Cardiomegaly), a CT pathology (tumour, cyst, "
        "nodule, effusion) or a manifest column.",
    )


@dataclass
class LossOptions:
    """Stage-1 objective: L1 + perceptual + KL + patch adversarial (+ latent consistency)."""

    l1_weight: float = option(1.0, help="Weight of the pixel L1 term.")
    perceptual: str = option(
        "ms-ssim",
        help="Perceptual term that needs no download: ms-ssim, teacher (frozen encoder features), none.",
        choices=("ms-ssim", "teacher", "none"),
    )
    perceptual_weight: float = option(1.0, help="Weight of the perceptual term.")
    kl_weight: float = option(1e-6, help="KL(q(z|x) || N(0, I)) weight (paper: 1e-6).")
    adversarial_weight: float = option(0.5, help="Scale of the adaptive adversarial weight (LDM: 0.5).")
    disc_start: int = option(3125, help="Step at which the patch discriminator and its loss switch on.")
    disc_channels: int = option(64, help="Width of MONAI's PatchDiscriminator.")
    disc_layers: int = option(3, help="Number of strided layers of the PatchDiscriminator.")
    consistency_weight: float = option(
        0.0, help="Weight of the latent-consistency term ||E(x) - E(x_hat)||^2 with the frozen teacher (0 = off)."
    )
    slices_per_axis: int = option(
        4, help="3D: 2D slices per axis used by the slice-wise perceptual/adversarial loss.", ge=1
    )


@dataclass
class TeacherOptions:
    """Frozen image encoder for stage 2 (and the optional stage-1 consistency term)."""

    encoder: str = option(
        "random-cnn",
        help="random-cnn (seeded frozen CNN, no download), local-dir:/path of a medfm model with encode_image "
        "(e.g. the CheXficient image tower), or hf-hub:org/name of an open_clip model (e.g. BiomedCLIP).",
    )
    image_size: int = option(64, help="Side the teacher sees (images and latents are resized to it).", ge=1)
    latent_scale: float = option(4.6, help="Latents are divided by this before the teacher (original: 4.6).")


@dataclass
class OptimOptions:
    """Optimisation (Adam betas (0.5, 0.9) as in the original)."""

    steps: int = option(200, help="Optimizer steps.", ge=1)
    batch_size: int = option(8, help="Batch size per step.", ge=1)
    lr: float = option(2e-4, help="Learning rate (original: 4.5e-6 x batch x accumulation for stage 1).", gt=0)
    grad_accum: int = option(1, help="Gradient accumulation steps.", ge=1)
    mixed_precision: str = option("no", help="Accelerate mixed precision.", choices=("no", "fp16", "bf16"))
    checkpoint_every: int = option(100, help="Save a resumable checkpoint every N steps.", ge=0)
    log_every: int = option(10, help="Log metrics every N steps.", ge=1)
    num_workers: int = option(0, help="DataLoader worker processes.")


@dataclass
class TrainConfig(CommonOptions):
    """``medfm medvae train``: stage 1 (autoencoder) or stage 2 (projection head / 3D volumetric fine-tuning)."""

    stage: int = option(
        1, help="1: train the autoencoder; 2: 2D projection head (3D: volumetric fine-tuning).", choices=(1, 2)
    )
    model: ModelOptions = section(ModelOptions, help="Architecture and initial weights.")
    data: DataOptions = section(DataOptions, help="Training images.")
    loss: LossOptions = section(LossOptions, help="Stage-1 loss.")
    teacher: TeacherOptions = section(TeacherOptions, help="Frozen encoder for stage 2 / consistency.")
    optim: OptimOptions = section(OptimOptions, help="Optimisation.")


@dataclass
class EncodeConfig(CommonOptions):
    """``medfm medvae encode``: images (folder or manifest of DICOM/NIfTI/PNG) -> latent files."""

    model: str = option(help="Trained model directory (checkpoints/final of a train run) or local-dir:/hf-hub: source.")
    input: str = option(help="Folder of images, a manifest (CSV/JSONL/datalist JSON), or phantom:cxr / phantom:ct.",
                        input="manifest")  # fmt: skip
    data: DataOptions = section(DataOptions, help="Phantom size and intensity normalisation.")
    projected: bool = option(False, help="Also store the stage-2 projected latent (used for downstream tasks).")
    sample: bool = option(False, help="Sample the posterior instead of its mean (default: deterministic mean).")
    batch_size: int = option(8, help="Images per forward pass (2D).", ge=1)
    tile: int = option(0, help="3D: encode in overlapping tiles of this side (0 = whole volume).", ge=0)
    overlap: float = option(0.5, help="3D tiles: overlap fraction, blended with Gaussian weights.", ge=0, le=1)


@dataclass
class DecodeConfig(CommonOptions):
    """``medfm medvae decode``: latent files -> images (padding removed, original size restored)."""

    model: str = option(help="Model directory the latents were made with.")
    input: str = option(help="Folder of .latent.npz files or the latents.csv an encode run wrote.")
    format: str = option(
        "auto", help="Output: png (2D), nifti (3D), npy, or auto.", choices=("auto", "png", "nifti", "npy")
    )


@dataclass
class EvaluateConfig(CommonOptions):
    """``medfm medvae evaluate``: PSNR/SSIM/MS-SSIM of reconstructions vs bicubic/trilinear at the latent size."""

    model: str = option(help="Model directory.")
    data: DataOptions = section(DataOptions, help="Evaluation images (the held-out split is used).")
    batch_size: int = option(8, help="Images per forward pass.", ge=1)


@dataclass
class ClassifierOptions:
    """Downstream CNN trained on latents, on full-resolution images and on bicubic images of the latent size."""

    steps: int = option(300, help="Optimizer steps per classifier.", ge=1)
    batch_size: int = option(32, help="Batch size.", ge=1)
    lr: float = option(1e-3, help="AdamW learning rate.", gt=0)
    width: int = option(32, help="Channels of the first conv layer.", ge=1)
    latent_scale: float = option(4.6, help="Latents are divided by this (original classifier: 4.6).")


@dataclass
class ClassifyConfig(CommonOptions):
    """``medfm medvae classify``: downstream AUROC and training throughput on latents vs images."""

    model: str | None = option(None, help="Model directory; without it only images and bicubic are compared.")
    data: DataOptions = section(DataOptions, help="Images with a binary label (set --data.label).")
    classifier: ClassifierOptions = section(ClassifierOptions, help="Downstream classifier.")
    inputs: list[str] = option(
        default_factory=lambda: ["latent", "projected", "image", "bicubic"],
        help="Which inputs to train on: latent, projected, image, bicubic.",
    )


@dataclass
class ExportConfig(CommonOptions):
    """``medfm medvae export``: an original medvae checkpoint (or a medfm model) -> a medfm model directory."""

    source: str = option(help="Original medvae .ckpt/.pt/.safetensors, or a medfm model directory.")
    preset: str = option(help="Preset whose shape the checkpoint has (e.g. medvae_4_1_2d).")
