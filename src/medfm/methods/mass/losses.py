"""MASS training losses (spec A4): adaptive-alpha Dice + BCE per (sample, task), and the SSL baselines' losses.

Layouts: ``logits`` and ``target`` are ``(B, K, D, H, W)``; target in {0, 1}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def adaptive_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Tversky-style Dice with adaptive alpha, per (sample, task): ``(B, K)`` losses in [0, 1].

    With P = sigmoid(logits): TP = sum P*y, FP = sum P*(1-y), FN = sum (1-P)*y,
    alpha = clamp(FP / (FP + FN + eps), 0.2, 0.8) (not detached), beta = 1 - alpha,
    dice = TP / (TP + alpha*FP + beta*FN + eps), loss = 1 - dice. An empty target gives loss 1 - 0 = 1 unless the
    prediction is also empty (then TP = FP = FN = 0 and dice = 0: the term is constant; BCE drives P to 0).
    """
    p = torch.sigmoid(logits.float()).flatten(2)
    y = target.float().flatten(2)
    tp = (p * y).sum(-1)
    fp = (p * (1 - y)).sum(-1)
    fn = ((1 - p) * y).sum(-1)
    alpha = (fp / (fp + fn + eps)).clamp(0.2, 0.8)
    dice = tp / (tp + alpha * fp + (1 - alpha) * fn + eps)
    return 1 - dice


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy with logits per (sample, task): ``(B, K)``."""
    per_voxel = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return per_voxel.flatten(2).mean(-1)


def mass_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0, bce_weight: float = 1.0):
    """``dice_weight * Dice + bce_weight * BCE`` averaged over every (sample, task). Returns a scalar tensor."""
    return (dice_weight * adaptive_dice_loss(logits, target) + bce_weight * bce_loss(logits, target)).mean()


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy for two views ``(B, E)`` each (positives = same row)."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.t() / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)
