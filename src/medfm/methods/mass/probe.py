"""Frozen-encoder volume classification (spec A6): deepest encoder map -> attention pooling -> dropout -> linear.

Attention pooling: 1x1 conv C -> C/4, ReLU, 1x1 conv -> 1, softmax over voxels, weighted sum of the features.
Volumes are padded to a multiple of the encoder's divisor; features ``(N, C, d, h, w)`` are computed once.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from medfm.methods.mass.data import Case
from medfm.methods.mass.model import IrisNet

log = logging.getLogger(__name__)


class AttentionPoolHead(nn.Module):
    """``(B, C, d, h, w)`` features -> ``(B,)`` logits."""

    def __init__(self, channels: int, dropout: float = 0.1):
        super().__init__()
        hidden = max(channels // 4, 1)
        self.attn = nn.Sequential(nn.Conv3d(channels, hidden, 1), nn.ReLU(), nn.Conv3d(hidden, 1, 1))
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(channels, 1)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.attn(feat).flatten(2), dim=-1)  # (B, 1, N)
        pooled = (feat.flatten(2) * w).sum(-1)  # (B, C)
        return self.linear(self.drop(pooled))[:, 0]


def binary_target(case: Case, target: str) -> int:
    """1 if structure ``target`` is in the label map (or ``metadata:KEY`` is truthy), else 0."""
    if target.startswith("metadata:"):
        key = target.split(":", 1)[1]
        present = case.meta.get("present", {})
        value = present.get(key, case.meta.get(key))
        if value is None:
            from medfm.core.errors import DataError

            raise DataError(f"{case.id}: metadata has no {key!r} for --target {target}")
        return int(bool(value))
    from medfm.methods.mass.data import structure_ids

    if case.label is None:
        from medfm.core.errors import DataError

        raise DataError(f"{case.id}: --target {target} needs a label map in the datalist")
    value = structure_ids([target], case.labels)[target]
    return int((case.label == value).any())


@torch.no_grad()
def encode_volumes(model: IrisNet, cases: list[Case], min_side: int = 0) -> list[torch.Tensor]:
    """Deepest encoder features of each whole volume (padded to ``min_side`` and a multiple of the divisor)."""
    model.eval()
    dev = next(model.parameters()).device
    div = model.divisor
    out = []
    for c in cases:
        sides = [max(s, min_side) for s in c.image.shape]
        pads = [(0, n - s + (-n) % div) for s, n in zip(c.image.shape, sides)]
        x = np.pad(c.image, pads, mode="edge")
        out.append(model.encode(torch.from_numpy(np.ascontiguousarray(x))[None, None].float().to(dev))[-1].cpu())
    return out


def train_probe(feats: list[torch.Tensor], y: np.ndarray, steps: int, lr: float, weight_decay: float,
                seed: int = 0) -> AttentionPoolHead:  # fmt: skip
    """Train the attention-pooling head with class-weighted BCE (full batch of cached features)."""
    torch.manual_seed(seed)
    head = AttentionPoolHead(feats[0].shape[1])
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    yt = torch.tensor(y, dtype=torch.float32)
    pos = float(yt.sum())
    pos_weight = torch.tensor((len(yt) - pos) / max(pos, 1.0))
    same_shape = len({tuple(f.shape) for f in feats}) == 1
    head.train()
    for _ in range(steps):
        logits = head(torch.cat(feats)) if same_shape else torch.cat([head(f) for f in feats])
        loss = nn.functional.binary_cross_entropy_with_logits(logits, yt, pos_weight=pos_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    return head


@torch.no_grad()
def probe_scores(head: AttentionPoolHead, feats: list[torch.Tensor]) -> np.ndarray:
    return np.array([float(torch.sigmoid(head(f))[0]) for f in feats])


def run_probe(model: IrisNet, train: list[Case], test: list[Case], target: str, opts: Any, seed: int = 0):
    """Frozen features -> head -> test scores. Returns ``(y_test, scores, y_train)``."""
    y_train = np.array([binary_target(c, target) for c in train])
    y_test = np.array([binary_target(c, target) for c in test])
    if len(np.unique(y_train)) < 2:
        from medfm.core.errors import DataError

        raise DataError(f"--target {target}: the training volumes contain only class {int(y_train[0])}; "
                        "use more volumes (--data.phantom_n) or another target")  # fmt: skip
    side = getattr(opts, "crop", 0)
    head = train_probe(encode_volumes(model, train, side), y_train, opts.steps, opts.lr, opts.weight_decay, seed)
    return y_test, probe_scores(head, encode_volumes(model, test, side)), y_train
