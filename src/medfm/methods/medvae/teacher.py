"""Frozen image encoders for stage 2 and the latent-consistency term (spec B2: BiomedCLIP in the original).

Offline no BiomedCLIP weights exist, so three sources are accepted:

- ``random-cnn``: a seeded, frozen random convolutional feature extractor (multi-scale pooled features). It needs
  no download; random conv features are a known cheap perceptual/feature-matching target.
- ``local-dir:/path`` or a path: a medfm model directory whose model has ``encode_image(x)`` (for example the
  CheXficient image tower). It receives ``(B, C, S, S)`` images in [0, 1] (grey replicated to its channels).
- ``hf-hub:org/name``: an open_clip model such as ``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``
  (needs open_clip and the hub or its cache), with its own preprocessing normalisation.

:class:`Teacher` wraps any of them as ``embed_image(x in [-1, 1]) -> (B, D)`` and ``embed_latent(z) -> (B, D)``
(latent divided by ``latent_scale``, averaged over channels, resized bicubically to the teacher's size).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from medfm.core.errors import UsageError

log = logging.getLogger(__name__)


class RandomConvEncoder(nn.Module):
    """Seeded frozen random CNN: 4 stride-2 conv + GELU stages, global-average pooled and concatenated (480-d)."""

    def __init__(self, in_channels: int = 1, seed: int = 1234, widths: tuple[int, ...] = (32, 64, 128, 256)):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        layers = []
        c = in_channels
        for w in widths:
            conv = nn.Conv2d(c, w, 3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2.0 / (c * 9)) ** 0.5)
                conv.bias.zero_()
            layers.append(conv)
            c = w
        self.layers = nn.ModuleList(layers)
        self.requires_grad_(False)
        self.eval()

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S)`` in [0, 1] -> ``(B, sum(widths))`` of per-stage mean activations."""
        h = (x - 0.5) / 0.25
        feats = []
        for conv in self.layers:
            h = F.gelu(conv(h))
            feats.append(h.mean(dim=(2, 3)))
        return torch.cat(feats, dim=1)


class Teacher(nn.Module):
    """A frozen encoder with MedVAE's stage-2 preprocessing.

    Args:
        encoder: module with ``encode_image((B, C, S, S) in [0, 1]) -> (B, D)``.
        image_size: side S the encoder sees.
        channels: channels it expects (grey images are replicated).
        latent_scale: latents are divided by this (original: 4.6).
        mean, std: per-channel normalisation applied after resizing (CLIP statistics for open_clip models).
    """

    def __init__(self, encoder: nn.Module, image_size: int = 64, channels: int = 1, latent_scale: float = 4.6,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None):  # fmt: skip
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.image_size, self.channels, self.latent_scale = image_size, channels, latent_scale
        self.norm = (torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)) if mean else None

    def _prepare(self, x01: torch.Tensor) -> torch.Tensor:
        if x01.shape[1] != self.channels:
            x01 = x01.mean(1, keepdim=True).expand(-1, self.channels, -1, -1)
        if x01.shape[-1] != self.image_size or x01.shape[-2] != self.image_size:
            x01 = F.interpolate(x01, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        if self.norm is not None:
            x01 = (x01 - self.norm[0].to(x01)) / self.norm[1].to(x01)
        return x01

    def embed_image(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in [-1, 1] -> embeddings ``(B, D)``."""
        return self.encoder.encode_image(self._prepare(((x + 1) / 2).clamp(0, 1))).float()

    def embed_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, C_lat, h, w)`` -> embeddings ``(B, D)`` (÷ scale, channel mean, bicubic resize)."""
        return self.encoder.encode_image(self._prepare((z / self.latent_scale).mean(1, keepdim=True))).float()


def build_teacher(spec: str, image_size: int = 64, latent_scale: float = 4.6, device: str = "cpu") -> Teacher:
    """A :class:`Teacher` from ``random-cnn``, a medfm model directory, or ``hf-hub:`` open_clip model."""
    if spec in ("random-cnn", "random"):
        return Teacher(RandomConvEncoder(), image_size, 1, latent_scale).to(device)
    if spec.startswith("hf-hub:"):
        try:
            import open_clip
        except ImportError:
            from medfm.core.errors import MissingDependencyError

            raise MissingDependencyError(
                "open_clip is needed for hf-hub teachers: pip install 'medfm[vision]'"
            ) from None
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(spec)
        except Exception as exc:  # offline, unknown repo
            raise UsageError(f"--teacher.encoder {spec}: could not load it ({type(exc).__name__}); offline use "
                             "random-cnn or local-dir:/path of a medfm model with encode_image") from None  # fmt: skip
        size = model.visual.image_size
        size = size[0] if isinstance(size, tuple | list) else int(size)
        norm = next((t for t in getattr(preprocess, "transforms", []) if hasattr(t, "mean")), None)
        mean, std = (tuple(norm.mean), tuple(norm.std)) if norm is not None else (None, None)
        return Teacher(model, size, 3, latent_scale, mean, std).to(device)
    from medfm.core.hub import from_pretrained

    model = from_pretrained(spec, device=device)
    if not hasattr(model, "encode_image"):
        raise UsageError(f"--teacher.encoder {spec}: {type(model).__name__} has no encode_image(x); "
                         "give an image encoder (e.g. a CheXficient checkpoint) or random-cnn")  # fmt: skip
    channels = int(getattr(model, "in_channels", 3))
    return Teacher(model, image_size, channels, latent_scale).to(device)
