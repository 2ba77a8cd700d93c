"""The MASS pretext-task sampler (spec A4): K masks, two overlapping views of one scan, weak/strong augmentation.

Per sample: pick a scan, K of its automatic masks (sorted indices, without replacement), one anchor voxel, a
view A containing it and a view B whose start is within ``V - int(min_overlap * V)`` voxels of A's start per axis
(so the views overlap by at least ``min_overlap`` per axis), both of side ``V = crop + margin`` (clipped to the
volume). One of the K channels becomes an all-ones mask in both views. A is the *reference* (weak augmentation),
B the *target* (strong augmentation); each augmentation applies a random affine (probability ``p_affine``) and
then centre-crops to ``crop``, otherwise random-crops, then intensity operations each with probability 0.2.
Masks are re-binarised; empty masks are kept (as in the original).

Tensors: images ``(B, 1, c, c, c)`` float32; masks ``(B, K, c, c, c)`` float32 in {0, 1}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medfm.methods.mass.data import PreparedCase


@dataclass(frozen=True)
class AugmentParams:
    """One augmentation strength (spec A4 step 5)."""

    p_affine: float
    scale: tuple[float, float]
    rotate_deg: float
    shear: float
    brightness: tuple[float, float]
    shift_sd: float
    gamma: tuple[float, float]
    contrast: tuple[float, float]
    noise_sd: float
    p_intensity: float = 0.2


WEAK = AugmentParams(0.5, (0.7, 1 / 0.7), 30.0, 0.0, (0.9, 1.1), 0.1, (0.8, 1.2), (0.8, 1.2), 0.02)
STRONG = AugmentParams(0.8, (0.7, 1 / 0.7), 30.0, 0.1, (0.8, 1.3), 0.15, (0.8, 1.3), (0.8, 1.3), 0.04)


def overlapping_starts(
    shape: tuple[int, ...], view: tuple[int, ...], min_overlap: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Starts of two views of size ``view`` in a volume of ``shape`` sharing an anchor voxel, with per-axis
    start distance <= ``view - int(min_overlap * view)`` (overlap >= min_overlap of the view side)."""
    a_start, b_start = [], []
    for s, v in zip(shape, view):
        anchor = int(rng.integers(0, s))
        lo, hi = max(0, anchor - v + 1), min(anchor, s - v)
        a = int(rng.integers(lo, hi + 1))
        max_shift = v - int(min_overlap * v)
        blo, bhi = max(lo, a - max_shift), min(hi, a + max_shift)
        b = int(rng.integers(blo, bhi + 1))
        a_start.append(a)
        b_start.append(b)
    return np.array(a_start), np.array(b_start)


def _affine_matrix(p: AugmentParams, rng: np.random.Generator) -> torch.Tensor:
    ang = np.deg2rad(rng.integers(-int(p.rotate_deg), int(p.rotate_deg) + 1, size=3))
    cx, cy, cz = np.cos(ang)
    sx, sy, sz = np.sin(ang)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    scale = np.diag(1.0 / rng.uniform(*p.scale, size=3))  # output->input sampling: inverse scale
    shear = np.eye(3)
    if p.shear:
        shear[np.triu_indices(3, 1)] = rng.uniform(-p.shear, p.shear, size=3)
    m = rz @ ry @ rx @ scale @ shear
    return torch.tensor(np.concatenate([m, np.zeros((3, 1))], 1), dtype=torch.float32)


def augment_view(
    image: torch.Tensor, masks: torch.Tensor, crop: int, p: AugmentParams | None, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment one view ``image`` (1, V, V, V) and ``masks`` (K, V, V, V) and crop both to ``crop``^3."""
    size = image.shape[1:]
    if p is not None and rng.random() < p.p_affine:
        theta = _affine_matrix(p, rng)[None]
        grid = F.affine_grid(theta, [1, 1, *size], align_corners=False)
        image = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        masks = F.grid_sample(masks[None], grid, mode="nearest", padding_mode="zeros", align_corners=False)[0]
        start = [(s - crop) // 2 for s in size]
    else:
        start = [int(rng.integers(0, s - crop + 1)) for s in size]
    sl = tuple(slice(st, st + crop) for st in start)
    image, masks = image[(slice(None), *sl)], (masks[(slice(None), *sl)] > 0.5).float()
    if p is not None:
        image = intensity_augment(image, p, rng)
    return image.contiguous(), masks.contiguous()


def intensity_augment(image: torch.Tensor, p: AugmentParams, rng: np.random.Generator) -> torch.Tensor:
    """Brightness, shift, gamma (range-normalised, stats kept), contrast and noise, each with prob ``p_intensity``."""
    x = image
    if rng.random() < p.p_intensity:
        x = x * float(rng.uniform(*p.brightness))
    if rng.random() < p.p_intensity:
        x = x + float(rng.normal(0, p.shift_sd))
    if rng.random() < p.p_intensity:
        lo, hi = x.min(), x.max()
        rngv = (hi - lo).clamp_min(1e-6)
        mean, std = x.mean(), x.std()
        x = ((x - lo) / rngv) ** float(rng.uniform(*p.gamma)) * rngv + lo
        x = (x - x.mean()) / x.std().clamp_min(1e-6) * std + mean
    if rng.random() < p.p_intensity:
        lo, hi, mean = x.min(), x.max(), x.mean()
        x = ((x - mean) * float(rng.uniform(*p.contrast)) + mean).clamp(lo, hi)
    if rng.random() < p.p_intensity:
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**31)))
        x = x + torch.randn(x.shape, generator=gen) * p.noise_sd
    return x


class TwoViewSampler:
    """Draws pretext-task batches from prepared cases (see module docstring).

    Args:
        cases: prepared cases with at least one mask each (others are skipped).
        crop: network input side.
        margin: extra side of the views before augmentation.
        num_masks: K (capped by the smallest mask count among the cases).
        min_overlap: per-axis overlap of the two views.
        all_ones_task: put one all-ones mask among the K.
        augment: weak/strong augmentation on (else random crops only).
    """

    def __init__(self, cases: list[PreparedCase], crop: int, margin: int = 8, num_masks: int = 6,
                 min_overlap: float = 0.67, all_ones_task: bool = True, augment: bool = True):  # fmt: skip
        from medfm.core.errors import DataError

        self.cases = [c for c in cases if c.n_masks > 0]
        if not self.cases:
            raise DataError("no prepared volume has any mask proposal; check --proposals options and rerun prepare")
        for c in self.cases:
            if min(c.case.image.shape) < crop:
                raise DataError(f"{c.case.id}: volume {c.case.image.shape} smaller than the crop {crop}; "
                                f"rerun prepare with --data.min_size {crop}")  # fmt: skip
        self.crop, self.margin = crop, margin
        self.k = max(1, min(num_masks, min(c.n_masks for c in self.cases) + (1 if all_ones_task else 0)))
        self.min_overlap, self.all_ones, self.augment = min_overlap, all_ones_task, augment

    def views(self, case: PreparedCase, rng: np.random.Generator):
        """(ref_img (1,c,c,c), ref_masks (K,...), tgt_img, tgt_masks) for one case."""
        img = case.case.image
        v = tuple(min(self.crop + self.margin, s) for s in img.shape)
        a, b = overlapping_starts(img.shape, v, self.min_overlap, rng)
        n_real = self.k - 1 if self.all_ones else self.k
        which = np.sort(rng.choice(case.n_masks, size=min(n_real, case.n_masks), replace=False))
        masks = case.masks(which)
        if self.all_ones:
            ones_at = int(rng.integers(0, self.k))
            masks = np.insert(masks, ones_at, np.ones(img.shape, bool), axis=0)
        out = []
        for start, params in ((a, WEAK), (b, STRONG)):
            sl = tuple(slice(int(s), int(s) + n) for s, n in zip(start, v))
            vi = torch.from_numpy(np.ascontiguousarray(img[sl]))[None]
            vm = torch.from_numpy(np.ascontiguousarray(masks[(slice(None), *sl)])).float()
            out.extend(augment_view(vi, vm, self.crop, params if self.augment else None, rng))
        return tuple(out)

    def sample(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        """A batch ``{"ref_image", "ref_masks", "target_image", "target_masks"}``."""
        parts = [self.views(self.cases[int(rng.integers(0, len(self.cases)))], rng) for _ in range(batch_size)]
        keys = ("ref_image", "ref_masks", "target_image", "target_masks")
        return {k: torch.stack([p[i] for p in parts]) for i, k in enumerate(keys)}


def random_cube_mask(shape: tuple[int, ...], patch: int, ratio: float, rng: np.random.Generator) -> torch.Tensor:
    """(1, D, H, W) float mask with ``ratio`` of the ``patch``^3 cubes set to 1 (for masked-image modelling)."""
    grid = [math.ceil(s / patch) for s in shape]
    coarse = torch.from_numpy((rng.random(grid) < ratio).astype(np.float32))
    full = coarse.repeat_interleave(patch, 0).repeat_interleave(patch, 1).repeat_interleave(patch, 2)
    return full[: shape[0], : shape[1], : shape[2]][None]
