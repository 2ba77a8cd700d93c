"""Candidate regions: grid cells or caller-given boxes, cropped and resized for the image tower.

Boxes are ``[x0, y0, x1, y1]`` in pixels, end exclusive. Regions of all images are flattened into one list;
``region_image[r]`` is the index of the image region ``r`` belongs to (regions of an image are contiguous).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medfm.core.errors import DataError

Box = Sequence[int]


def grid_boxes(height: int, width: int, grid: int) -> list[list[int]]:
    """The ``grid x grid`` equal cells of an image, row-major; the last row/column absorb any remainder."""
    if grid < 1:
        raise DataError(f"region grid must be >= 1, got {grid}")
    ys = np.linspace(0, height, grid + 1).round().astype(int)
    xs = np.linspace(0, width, grid + 1).round().astype(int)
    return [[int(xs[j]), int(ys[i]), int(xs[j + 1]), int(ys[i + 1])] for i in range(grid) for j in range(grid)]


def flatten_regions(regions: Sequence[Sequence[Box]], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes (R, 4) int, region_image (R,) int)`` from per-image box lists; boxes are clipped to the image."""
    boxes, owner = [], []
    for i, bs in enumerate(regions):
        for b in bs:
            x0, y0, x1, y1 = (int(v) for v in b)
            x0, x1 = max(0, min(x0, width)), max(0, min(x1, width))
            y0, y1 = max(0, min(y0, height)), max(0, min(y1, height))
            if x1 - x0 < 1 or y1 - y0 < 1:
                raise DataError(f"region box {list(b)} of image {i} is empty inside a {width}x{height} image")
            boxes.append([x0, y0, x1, y1])
            owner.append(i)
    return np.asarray(boxes, np.int64).reshape(-1, 4), np.asarray(owner, np.int64)


def crop_regions(images: np.ndarray, boxes: np.ndarray, region_image: np.ndarray, out_size: int) -> np.ndarray:
    """Crop every region and resize it (bilinear, antialiased) to ``out_size x out_size``.

    Args:
        images: (N, C, H, W) float32 in [0, 1].
        boxes: (R, 4) int boxes.
        region_image: (R,) image index of each box.
        out_size: side of the returned crops in pixels.

    Returns:
        (R, C, out_size, out_size) float32.
    """
    import torch
    import torch.nn.functional as F

    out = np.zeros((len(boxes), images.shape[1], out_size, out_size), np.float32)
    # group identical box geometries so each group is one batched resize
    keys = [tuple(b) for b in boxes.tolist()]
    groups: dict[tuple[int, ...], list[int]] = {}
    for r, k in enumerate(keys):
        groups.setdefault(k, []).append(r)
    for (x0, y0, x1, y1), rs in groups.items():
        idx = np.asarray(rs)
        crop = torch.from_numpy(np.ascontiguousarray(images[region_image[idx], :, y0:y1, x0:x1]))
        if crop.shape[-2:] != (out_size, out_size):
            crop = F.interpolate(crop, size=(out_size, out_size), mode="bilinear", antialias=True, align_corners=False)
        out[idx] = crop.numpy()
    return out


def mask_regions(images: np.ndarray, boxes: np.ndarray, region_image: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Each region in place on an otherwise empty canvas (no rescaling): (R, C, H, W) float32.

    Keeps the feature at the scale and position the model saw during training (the "paste the crop into an
    empty canvas" variant of the spec), which matters for small models trained at one scale.
    """
    out = np.full((len(boxes), *images.shape[1:]), fill, np.float32)
    for r, ((x0, y0, x1, y1), i) in enumerate(zip(boxes.tolist(), region_image.tolist())):
        out[r, :, y0:y1, x0:x1] = images[i, :, y0:y1, x0:x1]
    return out


def region_pixels(
    images: np.ndarray, boxes: np.ndarray, region_image: np.ndarray, mode: str = "crop", out_size: int | None = None
) -> np.ndarray:
    """Region inputs for the image tower: ``mode`` "crop" (crop + resize to ``out_size``) or "mask" (in place)."""
    if mode == "crop":
        return crop_regions(images, boxes, region_image, int(out_size or images.shape[-1]))
    if mode == "mask":
        return mask_regions(images, boxes, region_image)
    raise DataError(f"region mode must be crop or mask, got {mode!r}")


def box_cover(region: Box, feature: Box) -> float:
    """Fraction of the ``feature`` box's area that lies inside ``region`` (0..1)."""
    ix = max(0, min(region[2], feature[2]) - max(region[0], feature[0]))
    iy = max(0, min(region[3], feature[3]) - max(region[1], feature[1]))
    area = max(1, (feature[2] - feature[0]) * (feature[3] - feature[1]))
    return ix * iy / area


def region_has_feature(
    boxes: np.ndarray, region_image: np.ndarray, feature_boxes: Sequence[Sequence[Box]], min_cover: float = 0.5
) -> np.ndarray:
    """(R,) bool: the region covers at least ``min_cover`` of one of its image's feature boxes."""
    out = np.zeros(len(boxes), bool)
    for r, (b, i) in enumerate(zip(boxes.tolist(), region_image.tolist())):
        out[r] = any(box_cover(b, f) >= min_cover for f in feature_boxes[i])
    return out
