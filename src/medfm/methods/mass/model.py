"""The Iris in-context segmentation network as configured for MASS (spec part A, section A2).

Layouts: images ``(B, 1, D, H, W)``, reference masks ``(B, K, D, H, W)`` in {0, 1}, logits ``(B, K, D, H, W)``.
Spatial sizes must be divisible by ``2 ** (len(channels) - 1)`` and at most ``pos_size`` per axis.

Pieces (names follow the original code):

- :class:`PreActBlock`: pre-activation residual block (InstanceNorm -> ReLU -> 3^3 conv) x 2, bias-free convs, a
  pre-activated 3^3 conv shortcut when the channel count changes (MONAI ``ADN`` + ``Convolution``).
- :class:`TaskEncoding` (``TaskEncodingLayer_SubPixel``): one per prior stage; turns a reference feature map and
  K binary masks into ``(B, K, T, C)`` task tokens (T = ``num_queries`` + 1 foreground token).
- :class:`PriorFusion` (``MultiPriorFusionLayer``): bidirectional cross-attention between the tokens of all K
  tasks and the image tokens of the decoder, at the ``num_prior_stage`` deepest scales.
- :class:`IrisNet`: encoder, decoder, task encoders, fusion, and the dynamic head (a per-task 1x1 conv whose
  weights are produced from the task's posterior tokens).

Deviation from the original: the foreground token averages the feature map inside the mask at feature
resolution, weighting each feature cell by its mask voxel count (identical to averaging nearest-upsampled
features), instead of upsampling the C-channel map to full resolution (4 GB at 128^3).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import ADN, Convolution
from monai.networks.utils import pixelshuffle, pixelunshuffle
from torch import nn

from medfm.core.hub import PretrainedMixin

log = logging.getLogger(__name__)

_NORM = ("instance", {"affine": False, "eps": 1e-4})


def _adn(channels: int) -> ADN:
    return ADN(ordering="NA", in_channels=channels, act="RELU", norm=_NORM, norm_dim=3)


def _conv(cin: int, cout: int, k: int = 3) -> Convolution:
    return Convolution(3, cin, cout, kernel_size=k, conv_only=True, bias=False)


class PreActBlock(nn.Module):
    """Pre-activation residual block ``(B, cin, D, H, W) -> (B, cout, D, H, W)``."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.pre = _adn(cin)
        self.conv1 = _conv(cin, cout)
        self.mid = _adn(cout)
        self.conv2 = _conv(cout, cout)
        self.shortcut = _conv(cin, cout) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre(x)
        out = self.conv2(self.mid(self.conv1(pre)))
        return out + (self.shortcut(pre) if self.shortcut is not None else x)


def _stage(cin: int, cout: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(PreActBlock(cin, cout), *[PreActBlock(cout, cout) for _ in range(blocks - 1)])


class Encoder(nn.Module):
    """Residual U-Net encoder. Returns features from full resolution to the deepest, ``channels[i]`` at 1/2^i."""

    def __init__(self, in_channels: int, channels: list[int], blocks: int):
        super().__init__()
        self.stem = nn.Sequential(_conv(in_channels, channels[0]), *[PreActBlock(channels[0], channels[0])])
        self.stages = nn.ModuleList(
            nn.Sequential(nn.MaxPool3d(2), _stage(channels[i - 1], channels[i], blocks))
            for i in range(1, len(channels))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return feats


class FFN(nn.Module):
    def __init__(self, dim: int, ratio: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim * ratio), nn.GELU(), nn.Linear(dim * ratio, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossAttention(nn.Module):
    """Pre-LN residual attention ``q + MHA(LN(q), LN(kv))`` (self-attention when ``self_attn``)."""

    def __init__(self, dim: int, heads: int, self_attn: bool = False):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = None if self_attn else nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, q: torch.Tensor, kv: torch.Tensor | None = None) -> torch.Tensor:
        qn = self.norm_q(q)
        kvn = qn if self.norm_kv is None else self.norm_kv(kv)
        return q + self.attn(qn, kvn, kvn, need_weights=False)[0]


class ResFFN(nn.Module):
    def __init__(self, dim: int, ratio: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.ffn = FFN(dim, ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(self.norm(x))


class TaskQueryBlock(nn.Module):
    """Self-attn, FFN, cross-attn (queries -> mask-conditioned feature tokens), FFN, self-attn, FFN."""

    def __init__(self, dim: int, heads: int, ratio: int = 4):
        super().__init__()
        self.sa1, self.ff1 = CrossAttention(dim, heads, self_attn=True), ResFFN(dim, ratio)
        self.ca, self.ff2 = CrossAttention(dim, heads), ResFFN(dim, ratio)
        self.sa2, self.ff3 = CrossAttention(dim, heads, self_attn=True), ResFFN(dim, ratio)

    def forward(self, q: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        q = self.ff1(self.sa1(q))
        q = self.ff2(self.ca(q, tokens))
        return self.ff3(self.sa2(q))


class TaskEncoding(nn.Module):
    """Reference features + K masks -> task tokens ``(B, K, num_queries + 1, C)``.

    Args:
        dim: feature channels C of this stage.
        scale: sub-pixel factor s (feature resolution is 1/s of the mask resolution).
        pos_size: side of the learned full-resolution positional embedding (>= the crop side).
    """

    def __init__(self, dim: int, scale: int, pos_size: int, num_queries: int, heads: int, blocks: int = 2):
        super().__init__()
        self.scale = scale
        s3 = scale**3
        self.to_subpixel = nn.Sequential(_adn(dim), nn.Conv3d(dim, s3, 1))
        self.mask_conv = nn.Sequential(_adn(2), _conv(2, 1))
        self.pos = nn.Parameter(torch.zeros(1, 1, pos_size, pos_size, pos_size))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.from_subpixel = nn.Sequential(_adn(s3), nn.Conv3d(s3, dim, 1))
        self.queries = nn.Parameter(torch.empty(num_queries, dim))
        nn.init.xavier_uniform_(self.queries)
        self.norm_queries, self.norm_fg, self.norm_all = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(TaskQueryBlock(dim, heads) for _ in range(blocks))
        self.norm_out = nn.LayerNorm(dim)

    def foreground_token(self, feat: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Masked average of ``feat`` (B, C, d, h, w) inside each mask (B, K, D, H, W) -> (B, K, C)."""
        s = self.scale
        weights = F.avg_pool3d(masks, s) * s**3 if s > 1 else masks  # voxels of each mask per feature cell
        total = weights.flatten(2).sum(-1).clamp_min(1.0)  # (B, K)
        return torch.einsum("bkn,bcn->bkc", weights.flatten(2), feat.flatten(2)) / total[..., None]

    def forward(self, feat: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        b, c = feat.shape[:2]
        k = masks.shape[1]
        size = masks.shape[2:]
        fg = self.foreground_token(feat, masks)  # (B, K, C)
        sub = self.to_subpixel(feat)
        full = pixelshuffle(sub, 3, self.scale) if self.scale > 1 else sub  # (B, 1, D, H, W)
        pair = torch.cat([full.unsqueeze(1).expand(b, k, *full.shape[1:]), masks.unsqueeze(2)], dim=2)
        x = self.mask_conv(pair.reshape(b * k, 2, *size)) + self.pos[..., : size[0], : size[1], : size[2]]
        x = pixelunshuffle(x, 3, self.scale) if self.scale > 1 else x
        x = self.from_subpixel(x).reshape(b, k, c, *feat.shape[2:]) + feat.unsqueeze(1)
        tokens = x.reshape(b * k, c, -1).transpose(1, 2)  # (B*K, N, C)
        q = torch.cat(
            [self.norm_queries(self.queries).expand(b * k, -1, -1), self.norm_fg(fg.reshape(b * k, 1, c))], dim=1
        )
        q = self.norm_all(q)
        for block in self.blocks:
            q = block(q, tokens)
        return self.norm_out(q).reshape(b, k, -1, c)


class FusionBlock(nn.Module):
    """priors <- CA(priors, image)+FFN; image <- CA(image, priors)+FFN; priors <- SA(priors)+FFN."""

    def __init__(self, dim: int, heads: int, ratio: int = 4):
        super().__init__()
        self.p_ca, self.p_ff1 = CrossAttention(dim, heads), ResFFN(dim, ratio)
        self.x_ca, self.x_ff = CrossAttention(dim, heads), ResFFN(dim, ratio)
        self.p_sa, self.p_ff2 = CrossAttention(dim, heads, self_attn=True), ResFFN(dim, ratio)

    def forward(self, priors: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        priors = self.p_ff1(self.p_ca(priors, image))
        image = self.x_ff(self.x_ca(image, priors))
        priors = self.p_ff2(self.p_sa(priors))
        return priors, image


class PriorFusion(nn.Module):
    """Fuse the tokens of all K tasks (B, K, T, C) with a feature map (B, C, d, h, w)."""

    def __init__(self, dim: int, heads: int, blocks: int = 2):
        super().__init__()
        self.blocks = nn.ModuleList(FusionBlock(dim, heads) for _ in range(blocks))

    def forward(self, feat: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, k, t, c = tokens.shape
        priors = tokens.reshape(b, k * t, c)
        image = feat.flatten(2).transpose(1, 2)
        for block in self.blocks:
            priors, image = block(priors, image)
        feat = image.transpose(1, 2).reshape(feat.shape)
        return feat, priors.reshape(b, k, t, c)[:, :, 0]  # posterior token per task


class UpBlock(nn.Module):
    def __init__(self, cdeep: int, cskip: int, blocks: int):
        super().__init__()
        self.blocks = _stage(cdeep + cskip, cskip, blocks)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(deep.float(), size=skip.shape[2:], mode="trilinear", align_corners=True).to(skip.dtype)
        return self.blocks(torch.cat([skip, up], dim=1))


def _mlp(din: int, dhidden: int, dout: int) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(din, dhidden), nn.GELU(), nn.Linear(dhidden, dout))
    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return net


class IrisNet(nn.Module, PretrainedMixin):
    """Iris in-context segmentation network (MASS backbone).

    Args:
        in_channels: image channels (1 for CT/MR).
        channels: encoder widths per level, full resolution first (paper: 32, 64, 128, 256, 512).
        blocks: residual blocks per encoder/decoder stage (paper: 2).
        num_prior_stage: how many of the deepest levels get task encoding and fusion (paper: 3).
        num_queries: learned task queries per stage (paper: 10); tokens per task = num_queries + 1.
        head_dim: attention head width (heads = C / head_dim; paper: 32).
        pos_size: side of the learned positional embedding = the largest crop side (paper: 128).
        query_blocks: task-query attention blocks per stage (paper: 2).
        fusion_blocks: fusion blocks per decoder scale (paper: 2).
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: list[int] | tuple[int, ...] = (32, 64, 128, 256, 512),
        blocks: int = 2,
        num_prior_stage: int = 3,
        num_queries: int = 10,
        head_dim: int = 32,
        pos_size: int = 128,
        query_blocks: int = 2,
        fusion_blocks: int = 2,
    ):
        super().__init__()
        channels = [int(c) for c in channels]
        if not 1 <= num_prior_stage <= len(channels) - 1:
            raise ValueError(f"num_prior_stage must be in 1..{len(channels) - 1}, got {num_prior_stage}")
        self.init_kwargs: dict[str, Any] = dict(
            in_channels=in_channels, channels=channels, blocks=blocks, num_prior_stage=num_prior_stage,
            num_queries=num_queries, head_dim=head_dim, pos_size=pos_size, query_blocks=query_blocks,
            fusion_blocks=fusion_blocks,
        )  # fmt: skip
        self.channels = channels
        self.levels = len(channels)
        self.num_prior_stage = num_prior_stage
        self.num_tokens = num_queries + 1
        self.pos_size = pos_size
        self.encoder = Encoder(in_channels, channels, blocks)
        self.up = nn.ModuleList(UpBlock(channels[i + 1], channels[i], blocks) for i in reversed(range(self.levels - 1)))
        # prior levels, deepest first: L-1, L-2, ...
        self.prior_levels = [self.levels - 1 - i for i in range(num_prior_stage)]
        heads = [max(1, channels[lv] // head_dim) for lv in self.prior_levels]
        self.task_encoders = nn.ModuleList(
            TaskEncoding(channels[lv], 2**lv, pos_size, num_queries, h, query_blocks)
            for lv, h in zip(self.prior_levels, heads)
        )
        self.fusion = nn.ModuleList(
            PriorFusion(channels[lv], h, fusion_blocks) for lv, h in zip(self.prior_levels, heads)
        )
        total = sum(channels[lv] for lv in self.prior_levels)
        self.head = nn.Sequential(nn.LayerNorm(total), _mlp(total, total, channels[0]))
        self.head2 = _mlp(channels[0], channels[0], channels[0])

    # -- pieces ----------------------------------------------------------------------------------------------------
    @property
    def divisor(self) -> int:
        return 2 ** (self.levels - 1)

    def check_size(self, size: tuple[int, ...]) -> None:
        bad = [s for s in size if s % self.divisor or s > self.pos_size]
        if bad:
            raise ValueError(
                f"crop {tuple(size)}: every side must be divisible by {self.divisor} and <= pos_size {self.pos_size}"
            )

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features ``[(B, channels[i], D/2^i, H/2^i, W/2^i)]``, full resolution first."""
        return self.encoder(image)

    def encode_tasks(self, ref_image: torch.Tensor, ref_masks: torch.Tensor) -> list[torch.Tensor]:
        """Task tokens per prior stage (deepest first): ``[(B, K, T, C_stage)]``."""
        self.check_size(ref_image.shape[2:])
        feats = self.encode(ref_image)
        masks = ref_masks.to(feats[0].dtype)
        return [enc(feats[lv], masks) for enc, lv in zip(self.task_encoders, self.prior_levels)]

    def decode(self, feats: list[torch.Tensor], tokens: list[torch.Tensor] | None) -> tuple[torch.Tensor, list]:
        """Decoder; with ``tokens`` fuses them at the prior scales. Returns (final map (B, C0, D, H, W), posteriors)."""
        x = feats[-1]
        posts: list[torch.Tensor] = []
        stage = 0
        if tokens is not None:
            x, post = self.fusion[0](x, tokens[0])
            posts.append(post)
            stage = 1
        for i, up in enumerate(self.up):
            level = self.levels - 2 - i
            x = up(x, feats[level])
            if tokens is not None and stage < self.num_prior_stage and level == self.prior_levels[stage]:
                x, post = self.fusion[stage](x, tokens[stage])
                posts.append(post)
                stage += 1
        return x, posts

    def task_weights(self, posteriors: list[torch.Tensor]) -> torch.Tensor:
        """Dynamic head: concatenated posterior tokens (B, K, sum C) -> per-task 1x1-conv weights (B, K, C0)."""
        return self.head2(self.head(torch.cat(posteriors, dim=-1)))

    def segment(self, target: torch.Tensor, tokens: list[torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, K, D, H, W)`` for ``target`` (B, 1, D, H, W) given task tokens (batch 1 is broadcast)."""
        self.check_size(target.shape[2:])
        b = target.shape[0]
        tokens = [t.expand(b, *t.shape[1:]) if t.shape[0] == 1 and b > 1 else t for t in tokens]
        feats = self.encode(target)
        final, posts = self.decode(feats, tokens)
        return torch.einsum("bcdhw,bkc->bkdhw", final, self.task_weights(posts))

    def forward(self, target: torch.Tensor, ref_image: torch.Tensor, ref_masks: torch.Tensor) -> torch.Tensor:
        """In-context segmentation: logits ``(B, K, D, H, W)`` of the K reference masks' structures in ``target``."""
        return self.segment(target, self.encode_tasks(ref_image, ref_masks))

    def dense_features(self, image: torch.Tensor) -> torch.Tensor:
        """Last decoder map ``(B, C0, D, H, W)`` with an all-ones reference mask (``encode_dense_feature``)."""
        ones = torch.ones(image.shape[0], 1, *image.shape[2:], dtype=image.dtype, device=image.device)
        return self.decode(self.encode(image), self.encode_tasks(image, ones))[0]


def build_model(opts: Any) -> IrisNet:
    """An :class:`IrisNet` from a :class:`~medfm.methods.mass.config.ModelOptions`."""
    return IrisNet(
        in_channels=1,
        channels=list(opts.channels),
        blocks=opts.blocks,
        num_prior_stage=opts.num_prior_stage,
        num_queries=opts.num_queries,
        head_dim=opts.head_dim,
        pos_size=opts.pos_size,
        query_blocks=opts.query_blocks,
        fusion_blocks=opts.fusion_blocks,
    )


def count_parameters_by_part(model: IrisNet) -> dict[str, int]:
    """Parameter counts of encoder, decoder (incl. fusion), fusion, task encoding and head."""

    def n(mod: nn.Module) -> int:
        return sum(p.numel() for p in mod.parameters())

    return {
        "encoder": n(model.encoder),
        "decoder": n(model.up) + n(model.fusion),
        "fusion": n(model.fusion),
        "task_encoding": n(model.task_encoders),
        "head": n(model.head) + n(model.head2),
        "total": n(model),
    }
