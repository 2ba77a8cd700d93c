"""CheXficient's contrastive objective: symmetric InfoNCE (open_clip's ClipLoss) on the kept pairs only.

Spec §1.2/§1.4 B.4: the loss is the mean of CE(image->text) and CE(text->image) over the kept pairs of the global
batch, so negatives are also only kept pairs; when nothing is kept the full batch is used.
"""

from __future__ import annotations

import torch


def clip_loss(
    z_img: torch.Tensor,
    z_txt: torch.Tensor,
    logit_scale: torch.Tensor,
    keep: torch.Tensor | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> torch.Tensor:
    """Symmetric InfoNCE over ``(B, D)`` unit image / text embeddings, restricted to ``keep``.

    Args:
        z_img: ``(B, D)`` L2-normalised image embeddings.
        z_txt: ``(B, D)`` L2-normalised report embeddings (row i pairs with image i).
        logit_scale: scalar ``exp(learnable log scale)`` = 1 / temperature.
        keep: optional ``(B,)`` bool mask of kept pairs; all-False falls back to the full batch.
        rank, world_size: for open_clip's cross-process gathering (1 process: no gathering).

    Returns:
        Scalar loss.
    """
    from open_clip.loss import ClipLoss

    if keep is not None and bool(keep.any()):
        keep = keep.to(z_img.device)
        z_img, z_txt = z_img[keep], z_txt[keep]
    loss = ClipLoss(local_loss=False, gather_with_grad=True, rank=rank, world_size=world_size)
    return loss(z_img, z_txt, logit_scale)


def per_pair_infonce(z_img: torch.Tensor, z_txt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """``(B,)`` per-pair symmetric InfoNCE (mean of the two directions), for diagnostics and loss-based baselines."""
    logits = logit_scale * z_img @ z_txt.T
    target = torch.arange(z_img.shape[0], device=z_img.device)
    ce = torch.nn.functional.cross_entropy
    return 0.5 * (ce(logits, target, reduction="none") + ce(logits.T, target, reduction="none"))
