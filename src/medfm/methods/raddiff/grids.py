"""Image grids, boxes and crop grids of RadDiff's multimodal proposer and targeted visual search.

Geometry follows the released code: every sampled image is resized to ``resize`` x ``resize`` (1024 in the
paper), tiles are ``tile`` px on the long side (256), laid out ``rows`` x ``cols`` (4 x 5) with ``gap`` px
(10) between tiles; the combined image puts the A grid over the B grid with ``group_gap`` px (50).
Boxes are normalised ``(x1, y1, x2, y2)`` in [0, 1] on the resized image.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Box = tuple[float, float, float, float]
_GROUP_A_KEYS = ("group_a", "a", "set_a", "groupa", "set1", "group1", "set_1", "group_1")


@dataclass(frozen=True)
class GridSpec:
    """Grid geometry (pixels). Defaults are the paper's."""

    rows: int = 4
    cols: int = 5
    tile: int = 256
    gap: int = 10
    group_gap: int = 50
    resize: int = 1024


def _resized(image: Any, spec: GridSpec) -> Any:
    """The image in greyscale at ``resize`` x ``resize`` (the frame tiles and boxes refer to)."""
    from PIL import Image

    return image.convert("L").resize((spec.resize, spec.resize), Image.BILINEAR)


def _tile(image: Any, spec: GridSpec) -> Any:
    from PIL import Image

    return _resized(image, spec).resize((spec.tile, spec.tile), Image.BILINEAR)


def make_grid(images: Sequence[Any], spec: GridSpec = GridSpec()) -> Any:
    """Tile up to ``rows * cols`` PIL images (row-major) into one greyscale PIL image.

    Size: ``(cols * tile + (cols - 1) * gap, rows * tile + (rows - 1) * gap)``; unused cells stay black.
    """
    from PIL import Image

    w = spec.cols * spec.tile + (spec.cols - 1) * spec.gap
    h = spec.rows * spec.tile + (spec.rows - 1) * spec.gap
    grid = Image.new("L", (w, h), 0)
    for k, im in enumerate(list(images)[: spec.rows * spec.cols]):
        r, c = divmod(k, spec.cols)
        grid.paste(_tile(im, spec), (c * (spec.tile + spec.gap), r * (spec.tile + spec.gap)))
    return grid


def stack_vertical(top: Any, bottom: Any, gap: int) -> Any:
    """``top`` above ``bottom`` with ``gap`` black pixels between (the A-over-B combined image)."""
    from PIL import Image

    out = Image.new("L", (max(top.width, bottom.width), top.height + gap + bottom.height), 0)
    out.paste(top, (0, 0))
    out.paste(bottom, (0, top.height + gap))
    return out


def _box_from(value: Any) -> Box | None:
    if isinstance(value, dict):
        keys = [k for k in ("x1", "y1", "x2", "y2") if k in value]
        if len(keys) != 4:
            return None
        vals = [value[k] for k in ("x1", "y1", "x2", "y2")]
    elif isinstance(value, list | tuple) and len(value) == 4:
        vals = list(value)
    else:
        return None
    try:
        x1, y1, x2, y2 = (min(1.0, max(0.0, float(v))) for v in vals)
    except (TypeError, ValueError):
        return None
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def parse_boxes(answer: str | dict[str, Any] | None, n: int = 5) -> list[Box]:
    """Lenient parsing of the localisation answer into exactly ``n`` normalised boxes.

    Accepts ``{"boxes": [...]}``, per-group keys (``{"group_a": [...], "group_b": [...]}``, A preferred), a bare
    list, boxes as ``{x1, y1, x2, y2}`` objects or 4-lists; clamps to [0, 1], orders the corners, trims to
    ``n`` and pads with zero boxes (which :func:`crop_grids` skips).
    """
    obj: Any = answer
    if isinstance(answer, str):
        from medfm.methods.raddiff.proposer import extract_json

        obj = extract_json(answer)
    items: list[Any] = []
    if isinstance(obj, list):
        items = obj
    elif isinstance(obj, dict):
        if isinstance(obj.get("boxes"), list):
            items = obj["boxes"]
        else:
            pref = [k for k in obj if str(k).lower().replace(" ", "_") in _GROUP_A_KEYS]
            keys = pref + [k for k in obj if k not in pref]
            for k in keys:
                if isinstance(obj[k], list):
                    items = obj[k]
                    break
    boxes = [b for b in (_box_from(v) for v in items) if b is not None][:n]
    return boxes + [(0.0, 0.0, 0.0, 0.0)] * (n - len(boxes))


def crop(image: Any, box: Box, spec: GridSpec = GridSpec()) -> Any:
    """Crop a normalised box out of the image resized to ``resize`` x ``resize``."""
    return _crop_resized(_resized(image, spec), box, spec)


def _crop_resized(im: Any, box: Box, spec: GridSpec) -> Any:
    x1, y1, x2, y2 = (round(v * spec.resize) for v in box)
    return im.crop((x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)))


def crop_grids(images_a: Sequence[Any], images_b: Sequence[Any], boxes: Sequence[Box],
               spec: GridSpec = GridSpec()) -> list[tuple[Box, Any]]:  # fmt: skip
    """Targeted visual search: for each non-degenerate box, crop every sampled image and re-tile A over B.

    Returns:
        ``(box, combined crop grid)`` per box with ``x2 > x1`` and ``y2 > y1``.
    """
    valid = [box for box in boxes if box[2] > box[0] and box[3] > box[1]]
    if not valid:
        return []
    cells = spec.rows * spec.cols  # make_grid shows only the first rows * cols images
    resized_a = [_resized(im, spec) for im in list(images_a)[:cells]]  # once per image, not once per box
    resized_b = [_resized(im, spec) for im in list(images_b)[:cells]]
    out = []
    for box in valid:
        grid_a = make_grid([_crop_resized(im, box, spec) for im in resized_a], spec)
        grid_b = make_grid([_crop_resized(im, box, spec) for im in resized_b], spec)
        out.append((box, stack_vertical(grid_a, grid_b, spec.group_gap)))
    return out


def boxes_json(boxes: Sequence[Box]) -> str:
    return json.dumps({"boxes": [dict(zip(("x1", "y1", "x2", "y2"), (round(v, 4) for v in b))) for b in boxes]})
