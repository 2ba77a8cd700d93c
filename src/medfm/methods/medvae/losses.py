"""MedVAE objectives (spec B2) and image-fidelity metrics.

Stage 1 (per generator step): ``l1 * |x - x_hat| + w_p * perceptual(x, x_hat) + kl_weight * KL + d_weight * adv
(+ consistency * ||E(x) - E(x_hat)||^2)``. The original uses VGG-LPIPS as the perceptual term; LPIPS weights are
not available offline, so the default perceptual term is ``1 - MS-SSIM`` (MONAI's ``compute_ms_ssim``), or the
feature distance of a frozen teacher network. The adversarial term uses MONAI's ``PatchDiscriminator`` and
``PatchAdversarialLoss`` (hinge) and starts at ``disc_start``; its weight is LDM's adaptive weight
``scale * ||grad nll|| / ||grad g||`` at the decoder's last layer, clamped to [0, 1e4]. In 3D the perceptual and
adversarial terms are computed on 2D slices along all three axes (a few per axis) and averaged.

Stage 2 (2D): ``||E(x) - E(proj(z) / s)||^2`` summed over the embedding, averaged over the batch.

Tensors are ``(B, C, H, W)`` or ``(B, C, X, Y, Z)`` in [-1, 1]; metrics are computed on [0, 1] (data range 1).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over latent elements, averaged over the batch.

    Equals ``0.5 * sum(mean^2 + exp(logvar) - 1 - logvar)`` per item; 0 for a N(0, I) posterior.
    """
    per_item = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)
    return per_item.mean()


def ms_ssim_settings(side: int) -> tuple[int, tuple[float, ...]]:
    """Kernel size and scale weights for MS-SSIM on images whose smallest side is ``side``.

    Uses the standard 11-pixel Gaussian and 5 scales when the image allows it, else fewer scales and a 7- or
    3-pixel kernel (MONAI requires ``side // (scales - 1)^2 > kernel - 1``); weights are renormalised.
    """
    for kernel in (11, 7, 5, 3):
        for scales in (5, 4, 3, 2, 1):
            if side // max(1, scales - 1) ** 2 > kernel - 1 and side // 2 ** (scales - 1) >= kernel:
                w = MS_SSIM_WEIGHTS[:scales]
                total = sum(w)
                return kernel, tuple(x / total for x in w)
    return 1, (1.0,)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-item MS-SSIM ``(B,)`` of 2D or 3D images via MONAI, with size-adapted scales."""
    from monai.metrics.regression import compute_ms_ssim

    dims = x.ndim - 2
    kernel, weights = ms_ssim_settings(min(x.shape[2:]))
    value = compute_ms_ssim(x.float(), y.float(), spatial_dims=dims, data_range=data_range, kernel_size=kernel,
                            weights=weights)  # fmt: skip
    return value.reshape(-1)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-item SSIM ``(B,)`` (Gaussian window 11, sigma 1.5; 7 for small images) via MONAI."""
    from monai.metrics.regression import compute_ssim_and_cs

    dims = x.ndim - 2
    kernel = 11 if min(x.shape[2:]) > 11 else 7 if min(x.shape[2:]) > 7 else 3
    value, _ = compute_ssim_and_cs(x.float(), y.float(), spatial_dims=dims, kernel_size=[kernel] * dims,
                                   kernel_sigma=[1.5] * dims, data_range=data_range)  # fmt: skip
    return value.flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-item PSNR in dB ``(B,)``; ``data_range`` is the peak (1 for images in [0, 1])."""
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10.0 * torch.log10(torch.tensor(data_range**2) / mse)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def slice_stack(x: torch.Tensor, per_axis: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """2D slices of a 3D batch ``(B, C, X, Y, Z)`` along each axis: three tensors ``(B * k, C, ., .)``.

    ``per_axis`` slices per axis at evenly spaced positions with a random common offset (all slices when
    ``per_axis`` >= the axis length). 2D inputs are returned unchanged as ``[x]``.
    """
    if x.ndim == 4:
        return [x]
    out = []
    for axis in (2, 3, 4):
        n = x.shape[axis]
        k = min(per_axis, n)
        step = n / k
        offset = float(torch.rand((), generator=generator)) * step if k < n else 0.0
        idx = torch.tensor([min(n - 1, int(offset + i * step)) for i in range(k)], device=x.device)
        sl = x.index_select(axis, idx)  # (B, C, ..., k, ...)
        sl = sl.movedim(axis, 1)  # (B, k, C, a, b)
        out.append(sl.reshape(-1, x.shape[1], *sl.shape[3:]))
    return out


def adaptive_weight(nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, scale: float) -> torch.Tensor:
    """LDM's adaptive adversarial weight ``scale * ||d nll / d W|| / (||d g / d W|| + 1e-4)``, clamped to [0, 1e4]."""
    nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = torch.norm(nll_grad) / (torch.norm(g_grad) + 1e-4)
    return torch.clamp(weight, 0.0, 1e4).detach() * scale


class Stage1Loss(nn.Module):
    """Reconstruction + perceptual + KL + patch-adversarial loss with its discriminator.

    Args:
        in_channels: image channels.
        spatial_dims: 2 or 3 (3D uses slice-wise perceptual and adversarial terms with a 2D discriminator).
        l1_weight, perceptual_weight, kl_weight: term weights.
        perceptual: "ms-ssim", "teacher" (feature distance of ``teacher``) or "none".
        adversarial_weight: scale of the adaptive adversarial weight.
        disc_start: first step with the adversarial term.
        disc_channels, disc_layers: MONAI PatchDiscriminator width and depth.
        consistency_weight: weight of ``||E(x) - E(x_hat)||^2`` (needs ``teacher``).
        slices_per_axis: 3D slices per axis.
        teacher: frozen feature function ``(B, C, H, W) in [-1, 1] -> (B, D)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        spatial_dims: int = 2,
        l1_weight: float = 1.0,
        perceptual: str = "ms-ssim",
        perceptual_weight: float = 1.0,
        kl_weight: float = 1e-6,
        adversarial_weight: float = 0.5,
        disc_start: int = 3125,
        disc_channels: int = 64,
        disc_layers: int = 3,
        consistency_weight: float = 0.0,
        slices_per_axis: int = 4,
        teacher: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__()
        from monai.losses import PatchAdversarialLoss
        from monai.networks.nets import PatchDiscriminator

        self.spatial_dims = spatial_dims
        self.l1_weight, self.perceptual, self.perceptual_weight = l1_weight, perceptual, perceptual_weight
        self.kl_weight, self.adversarial_weight, self.disc_start = kl_weight, adversarial_weight, disc_start
        self.consistency_weight, self.slices_per_axis = consistency_weight, slices_per_axis
        self.teacher = teacher
        if (perceptual == "teacher" or consistency_weight > 0) and teacher is None:
            raise ValueError("the teacher perceptual/consistency term needs a teacher encoder")
        self.discriminator = PatchDiscriminator(spatial_dims=2, channels=disc_channels, in_channels=in_channels,
                                                num_layers_d=disc_layers, norm="BATCH")  # fmt: skip
        self.adv = PatchAdversarialLoss(criterion="hinge")

    def _slices(self, x: torch.Tensor, rec: torch.Tensor, gen: torch.Generator | None):
        if self.spatial_dims == 2:
            return [(x, rec)]
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        return list(zip(slice_stack(x, self.slices_per_axis, g1), slice_stack(rec, self.slices_per_axis, g2)))

    def perceptual_term(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        terms = []
        for a, b in pairs:
            if self.perceptual == "ms-ssim":
                terms.append(1.0 - ms_ssim(to_unit(b), to_unit(a)).mean())
            elif self.perceptual == "teacher":
                terms.append((self.teacher(a) - self.teacher(b)).pow(2).sum(1).mean())  # type: ignore[misc]
        return torch.stack(terms).mean() if terms else torch.zeros((), device=pairs[0][0].device)

    def generator_loss(
        self,
        x: torch.Tensor,
        rec: torch.Tensor,
        mean: torch.Tensor,
        logvar: torch.Tensor,
        step: int,
        last_layer: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total generator loss and its parts (floats, for logging)."""
        l1 = (x - rec).abs().mean()
        pairs = self._slices(x, rec, generator)
        perc = self.perceptual_term(pairs) if self.perceptual != "none" and self.perceptual_weight > 0 else None
        nll = self.l1_weight * l1 + (self.perceptual_weight * perc if perc is not None else 0.0)
        kl = kl_divergence(mean, logvar)
        total = nll + self.kl_weight * kl
        logs = {"l1": float(l1.detach()), "kl": float(kl.detach())}
        if perc is not None:
            logs["perceptual"] = float(perc.detach())
        if self.consistency_weight > 0:
            cons = torch.stack([(self.teacher(a) - self.teacher(b)).pow(2).sum(1).mean() for a, b in pairs]).mean()  # type: ignore[misc]
            total = total + self.consistency_weight * cons
            logs["consistency"] = float(cons.detach())
        if step >= self.disc_start and self.adversarial_weight > 0:
            fake = torch.cat([b for _, b in pairs])
            self.discriminator.requires_grad_(False)
            g_loss = self.adv(self.discriminator(fake)[-1], target_is_real=True, for_discriminator=False)
            self.discriminator.requires_grad_(True)
            if last_layer is not None and torch.is_grad_enabled():
                try:
                    d_weight = adaptive_weight(nll, g_loss, last_layer, self.adversarial_weight)
                except RuntimeError:  # no graph to the last layer (e.g. frozen decoder)
                    d_weight = torch.tensor(self.adversarial_weight)
            else:
                d_weight = torch.tensor(self.adversarial_weight)
            total = total + d_weight * g_loss
            logs.update(g_loss=float(g_loss.detach()), d_weight=float(d_weight))
        logs["loss"] = float(total.detach())
        return total, logs

    def discriminator_loss(self, x: torch.Tensor, rec: torch.Tensor,
                           generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
        """Hinge loss of the patch discriminator on real ``x`` vs detached reconstructions."""
        pairs = self._slices(x, rec.detach(), generator)
        real = torch.cat([a for a, _ in pairs])
        fake = torch.cat([b for _, b in pairs])
        loss_real = self.adv(self.discriminator(real)[-1], target_is_real=True, for_discriminator=True)
        loss_fake = self.adv(self.discriminator(fake)[-1], target_is_real=False, for_discriminator=True)
        loss = 0.5 * (loss_real + loss_fake)
        return loss, {"d_loss": float(loss.detach())}


def stage2_loss(teacher: Callable[[torch.Tensor], torch.Tensor], teacher_latent: Callable[[torch.Tensor], torch.Tensor],
                x: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """``||E(x) - E(latent)||^2`` summed over the embedding, averaged over the batch (x detached from E's grads)."""
    with torch.no_grad():
        target = teacher(x)
    return (target - teacher_latent(projected)).pow(2).sum(1).mean()


def downsample_baseline(x: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bicubic (2D) / trilinear (3D) downsampling by ``factor`` per axis and back: ``(small, upsampled)``.

    The downsampled image has the latent's spatial size; antialiasing is used for 2D.
    """
    size = [s // factor for s in x.shape[2:]]
    if x.ndim == 4:
        small = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
        up = F.interpolate(small, size=list(x.shape[2:]), mode="bicubic", align_corners=False)
    else:
        small = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
        up = F.interpolate(small, size=list(x.shape[2:]), mode="trilinear", align_corners=False)
    return small, up.clamp(-1.0, 1.0)
