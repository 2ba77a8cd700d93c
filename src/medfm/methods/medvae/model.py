"""The MedVAE autoencoder: MONAI's AutoencoderKL encoder/decoder in the original (CompVis/LDM) layout.

MedVAE (Varma et al., MIDL 2025) uses the LDM "KL-VAE": GroupNorm(32, eps 1e-6) + swish ResNet blocks, two per
level in the encoder and three per level in the decoder, stride-2 convs with (0, 1) asymmetric padding,
nearest-neighbour upsampling + conv, one self-attention block in each middle block, a doubled latent (mean and
log-variance) followed by ``quant_conv``/``post_quant_conv`` 1x1 convs, and a stage-2 projection head
(``channel_ds`` + ``channel_proj``) whose output is the latent used downstream.

We build the encoder and decoder from MONAI's ``monai.networks.nets.autoencoderkl`` blocks (spatial_dims 2 or 3)
and add what MONAI's defaults lack to match the original exactly: the swish between the final GroupNorm and
the output conv, the doubled encoder output with one 2C -> 2C ``quant_conv``, and the decoder's extra block per
level. So original checkpoints map tensor by tensor (:mod:`.convert`) and parameter counts equal the published
models (55.3 M for ``medvae_4_1_2d``).

Layouts: 2D input ``(B, C_in, H, W)``, latent ``(B, C, H/f, W/f)``; 3D input ``(B, C_in, X, Y, Z)``, latent
``(B, C, X/f, Y/f, Z/f)``, with ``f = 2 ** (len(channels) - 1)`` the per-axis downsizing factor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medfm.core.errors import DataError
from medfm.core.hub import PretrainedMixin

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preset:
    """One architecture. ``params_m`` is the published/measured parameter count in millions (None for tiny)."""

    name: str
    spatial_dims: int
    channels: tuple[int, ...]
    latent_channels: int
    in_channels: int = 1
    num_res_blocks: int = 2
    norm_num_groups: int = 32
    params_m: float | None = None
    description: str = ""

    @property
    def factor(self) -> int:
        """Per-axis downsizing factor."""
        return 2 ** (len(self.channels) - 1)

    def kwargs(self) -> dict[str, Any]:
        return {
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "out_channels": self.in_channels,
            "latent_channels": self.latent_channels,
            "channels": list(self.channels),
            "num_res_blocks": self.num_res_blocks,
            "norm_num_groups": self.norm_num_groups,
        }


#: The six published MedVAE models (spec B1) and tiny CPU presets of the same shapes.
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("medvae_4_1_2d", 2, (128, 256, 512), 1, 1, params_m=55.3, description="2D f=16, C=1"),
        Preset("medvae_4_3_2d", 2, (128, 256, 512), 3, 3, params_m=55.3, description="2D f=16, C=3 (RGB input)"),
        Preset("medvae_8_1_2d", 2, (128, 256, 512, 512), 1, 1, params_m=83.6, description="2D f=64, C=1"),
        Preset("medvae_8_4_2d", 2, (128, 256, 512, 512), 4, 3, params_m=83.7, description="2D f=64, C=4 (RGB input)"),
        Preset("medvae_4_1_3d", 3, (128, 256, 512), 1, 1, params_m=161.0, description="3D f=64, C=1"),
        Preset("medvae_8_1_3d", 3, (128, 256, 512, 512), 1, 1, params_m=246.0, description="3D f=512, C=1"),
        Preset("tiny_4_1_2d", 2, (16, 32, 32), 1, 1, 1, 8, description="CPU test shape of 4_1_2d"),
        Preset("tiny_8_1_2d", 2, (16, 32, 32, 32), 1, 1, 1, 8, description="CPU test shape of 8_1_2d"),
        Preset("tiny_4_1_3d", 3, (16, 32, 32), 1, 1, 1, 8, description="CPU test shape of 4_1_3d"),
        Preset("tiny_8_1_3d", 3, (16, 32, 32, 32), 1, 1, 1, 8, description="CPU test shape of 8_1_3d"),
        Preset("small_4_1_2d", 2, (32, 64, 64), 1, 1, 1, 16, description="CPU benchmark shape of 4_1_2d"),
        Preset("small_8_1_2d", 2, (32, 64, 64, 64), 1, 1, 1, 16, description="CPU benchmark shape of 8_1_2d"),
        Preset("small_4_1_3d", 3, (16, 32, 32), 1, 1, 1, 8, description="CPU benchmark shape of 4_1_3d"),
    )
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        from medfm.core.errors import UsageError

        raise UsageError(f"unknown MedVAE preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def _conv(spatial_dims: int) -> type[nn.Module]:
    return nn.Conv2d if spatial_dims == 2 else nn.Conv3d


def _with_output_swish(blocks: nn.ModuleList) -> None:
    """Insert the swish the LDM applies between the final GroupNorm and the output conv (MONAI omits it)."""
    assert isinstance(blocks[-2], nn.GroupNorm)
    blocks.insert(len(blocks) - 1, nn.SiLU())


class MedVAE(nn.Module, PretrainedMixin):
    """KL autoencoder with a stage-2 latent projection head.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels (1, or 3 for the RGB-input presets).
        out_channels: reconstruction channels.
        latent_channels: C, channels of the latent.
        channels: width per level; ``len(channels) - 1`` stride-2 downsamplings.
        num_res_blocks: ResNet blocks per encoder level (the decoder has one more, as in the LDM).
        norm_num_groups: GroupNorm groups (32 in the original; 8 for the tiny presets).
        norm_eps: GroupNorm epsilon.
        attention: self-attention in the middle blocks.
        projection: build the stage-2 projection head (``channel_ds`` + ``channel_proj``).
        projection_width: hidden width of the projection head (64 in the original).
        preset: name of the preset this was built from (informational, saved in config.json).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        latent_channels: int = 1,
        channels: list[int] | tuple[int, ...] = (128, 256, 512),
        num_res_blocks: int = 2,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-6,
        attention: bool = True,
        projection: bool = True,
        projection_width: int = 64,
        preset: str = "",
    ):
        super().__init__()
        from monai.networks.nets.autoencoderkl import Decoder, Encoder

        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        channels = tuple(int(c) for c in channels)
        self.init_kwargs = {
            "spatial_dims": spatial_dims,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "latent_channels": latent_channels,
            "channels": list(channels),
            "num_res_blocks": num_res_blocks,
            "norm_num_groups": norm_num_groups,
            "norm_eps": norm_eps,
            "attention": attention,
            "projection": projection,
            "projection_width": projection_width,
            "preset": preset,
        }
        self.spatial_dims = spatial_dims
        self.latent_channels = latent_channels
        self.factor = 2 ** (len(channels) - 1)
        levels = len(channels)
        no_attn = [False] * levels
        self.encoder = Encoder(
            spatial_dims,
            in_channels,
            channels,
            2 * latent_channels,
            [num_res_blocks] * levels,
            norm_num_groups,
            norm_eps,
            no_attn,
            with_nonlocal_attn=attention,
        )
        self.decoder = Decoder(
            spatial_dims,
            channels,
            latent_channels,
            out_channels,
            [num_res_blocks + 1] * levels,
            norm_num_groups,
            norm_eps,
            no_attn,
            with_nonlocal_attn=attention,
        )
        _with_output_swish(self.encoder.blocks)
        _with_output_swish(self.decoder.blocks)
        conv = _conv(spatial_dims)
        self.quant_conv = conv(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = conv(latent_channels, latent_channels, 1)
        self.has_projection = projection
        if projection:
            self.channel_ds = nn.Sequential(
                conv(latent_channels, projection_width, 1),
                nn.ReLU(),
                conv(projection_width, projection_width, 3, padding="same"),
                nn.ReLU(),
                conv(projection_width, latent_channels, 1),
            )
            self.channel_proj = conv(latent_channels, latent_channels, 1)
        self.gradient_checkpointing = False

    # -- shapes --------------------------------------------------------------------------------------------------
    def latent_shape(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        """Latent shape ``(C, *spatial / f)`` for an input of spatial size ``spatial`` (divisible by f)."""
        return (self.latent_channels, *(s // self.factor for s in spatial))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise DataError unless ``x`` is ``(B, C_in, *spatial)`` with every side divisible by the factor."""
        want = self.init_kwargs["in_channels"]
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != want:
            raise DataError(
                f"input of shape {tuple(x.shape)} does not fit this {self.spatial_dims}D model, which expects "
                f"(B, {want}, {', '.join(['S'] * self.spatial_dims)})"
            )
        bad = [s for s in x.shape[2:] if s % self.factor]
        if bad:
            raise DataError(
                f"input sides {tuple(x.shape[2:])} must be divisible by {self.factor}; pad with "
                "medfm.methods.medvae.data.pad_to_multiple first"
            )

    # -- encoder / decoder ---------------------------------------------------------------------------------------
    def _run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and x.requires_grad:
            from torch.utils.checkpoint import checkpoint

            return checkpoint(module, x, use_reentrant=False)
        return module(x)

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance (clamped to [-30, 20]), each ``(B, C, *spatial / f)``."""
        self.check_input(x)
        h = self.quant_conv(self._run(self.encoder, x))
        mean, logvar = torch.chunk(h, 2, dim=1)
        return mean, torch.clamp(logvar, -30.0, 20.0)

    def encode(self, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """Latent z: the posterior mean (deterministic, default) or a sample."""
        mean, logvar = self.moments(x)
        return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample else mean

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Stage-2 projected latent ``channel_proj(channel_ds(z) + z)`` (the latent used downstream)."""
        if not self.has_projection:
            raise DataError("this model has no projection head (built with projection=False)")
        return self.channel_proj(self.channel_ds(z) + z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``(B, C_out, *spatial)`` from an unprojected latent."""
        return self._run(self.decoder, self.post_quant_conv(z))

    def forward(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(reconstruction, mean, logvar)``; the decoder sees a posterior sample when ``sample``."""
        mean, logvar = self.moments(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample else mean
        return self.decode(z), mean, logvar

    def last_layer(self) -> torch.Tensor:
        """Weight of the decoder's output conv (for the adaptive adversarial weight)."""
        return self.decoder.blocks[-1].conv.weight

    def autoencoder_parameters(self) -> list[nn.Parameter]:
        """Encoder, decoder and quant convs (stage 1 trains these; stage 2 freezes them)."""
        mods = [self.encoder, self.decoder, self.quant_conv, self.post_quant_conv]
        return [p for m in mods for p in m.parameters()]

    def projection_parameters(self) -> list[nn.Parameter]:
        return list(self.channel_ds.parameters()) + list(self.channel_proj.parameters()) if self.has_projection else []


def build_model(preset: str | Preset, **overrides: Any) -> MedVAE:
    """A randomly initialised :class:`MedVAE` of a preset (``overrides`` replace constructor arguments)."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    kwargs = {**p.kwargs(), "preset": p.name, **overrides}
    return MedVAE(**kwargs)


def count_parameters(model: nn.Module, include_projection: bool = True) -> int:
    """Number of parameters (works on the meta device)."""
    total = sum(p.numel() for p in model.parameters())
    if not include_projection and getattr(model, "has_projection", False):
        total -= sum(p.numel() for p in model.projection_parameters())  # type: ignore[attr-defined]
    return total


def load_model(source: str, device: str = "cpu") -> MedVAE:
    """Load a model directory written by ``train``/``export`` (``local-dir:``/``hf-hub:`` sources accepted)."""
    return MedVAE.from_pretrained(source, device=device)
