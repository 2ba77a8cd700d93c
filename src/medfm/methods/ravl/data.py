"""Audit and fine-tuning sets for RaVL: images, class labels, captions, candidate regions and ground truth.

An :class:`AuditSet` holds ``N`` images ``(N, C, H, W)`` float32 in [0, 1] (C = 1 grey or 3 RGB), one class
index per image over ``classnames``, one caption per image (for fine-tuning), the candidate region boxes of
every image (``[x0, y0, x1, y1]`` in pixels, end exclusive) and, when known, the ground-truth boxes of the
spurious feature and of the core feature (used for Precision@k and region accuracy only, never by discovery).

Builders:

- :func:`cxr_audit_set`: chest X-ray phantoms (medfm.data.phantoms.cxr) restricted to single-label images over a
  few findings, with the phantom's planted corner marker correlated with one finding at a chosen Cramér's V.
- :func:`quadrant_digits`: the RaVL synthetic protocol at small scale: a digit glyph (scikit-learn's bundled
  ``load_digits``) in one quadrant of an RGB canvas and, with a class-dependent probability, a red square in
  another quadrant.
- :func:`manifest_audit_set`: a CSV/JSONL manifest with image paths, a class column, optional captions and
  optional region boxes / spurious boxes (JSON lists).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfm.core.errors import DataError, UsageError

log = logging.getLogger(__name__)

Box = list[int]  # [x0, y0, x1, y1], pixels, end exclusive

CAPTION_TEMPLATES = ("the image shows {}", "an image showing {}", "there is {}", "this is {}")
PROMPT_TEMPLATES = ("{}", "the image shows {}", "an image showing {}", "this is {}")
CXR_CLASS_TEXT = {"No Finding": "no finding", "Cardiomegaly": "cardiomegaly", "Pleural Effusion": "pleural effusion",
                  "Pneumothorax": "pneumothorax", "Edema": "edema", "Atelectasis": "atelectasis",
                  "Consolidation": "consolidation"}  # fmt: skip
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass
class AuditSet:
    """Images with labels, captions, candidate regions and optional ground truth.

    Attributes:
        images: (N, C, H, W) float32 in [0, 1].
        labels: (N,) int64 class index into ``classnames``.
        classnames: C class names as used in prompts ("cardiomegaly", "nine").
        captions: N fine-tuning captions.
        regions: per image, its candidate region boxes (list of [x0, y0, x1, y1]).
        spurious_boxes: per image, ground-truth boxes of the spurious feature (empty list = absent), or None.
        core_boxes: per image, ground-truth boxes of the class's core feature, or None.
        ids: N item ids.
        meta: facts about how the set was built (target Cramér's V, spurious class, ...).
    """

    images: np.ndarray
    labels: np.ndarray
    classnames: list[str]
    captions: list[str]
    regions: list[list[Box]] = field(default_factory=list)
    spurious_boxes: list[list[Box]] | None = None
    core_boxes: list[list[Box]] | None = None
    ids: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images, np.float32)
        if self.images.ndim == 3:
            self.images = self.images[:, None]
        self.labels = np.asarray(self.labels, np.int64)
        if not self.ids:
            self.ids = [str(i) for i in range(len(self.labels))]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def has_spurious(self) -> np.ndarray | None:
        """(N,) bool: image carries the ground-truth spurious feature (None when unknown)."""
        if self.spurious_boxes is None:
            return None
        return np.array([len(b) > 0 for b in self.spurious_boxes], bool)

    def subset(self, index: Any) -> AuditSet:
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        pick = [int(i) for i in idx]
        return AuditSet(
            images=self.images[idx],
            labels=self.labels[idx],
            classnames=list(self.classnames),
            captions=[self.captions[i] for i in pick],
            regions=[self.regions[i] for i in pick] if self.regions else [],
            spurious_boxes=[self.spurious_boxes[i] for i in pick] if self.spurious_boxes is not None else None,
            core_boxes=[self.core_boxes[i] for i in pick] if self.core_boxes is not None else None,
            ids=[self.ids[i] for i in pick],
            meta=dict(self.meta),
        )

    def with_grid(self, grid: int) -> AuditSet:
        """A copy whose candidate regions are the ``grid x grid`` equal cells of each image."""
        from medfm.methods.ravl.regions import grid_boxes

        h, w = self.images.shape[-2:]
        cells = grid_boxes(h, w, grid)
        out = self.subset(np.arange(len(self)))
        out.regions = [list(cells) for _ in range(len(self))]
        return out

    def split(self, fraction: float, seed: int = 0) -> tuple[AuditSet, AuditSet]:
        """Random (1 - fraction, fraction) split, stratified by class."""
        rng = np.random.default_rng(seed)
        second = np.zeros(len(self), bool)
        for c in np.unique(self.labels):
            members = rng.permutation(np.flatnonzero(self.labels == c))
            second[members[: round(fraction * len(members))]] = True
        return self.subset(~second), self.subset(second)


def captions_for(classnames: list[str], labels: np.ndarray, seed: int) -> list[str]:
    """One caption per image from :data:`CAPTION_TEMPLATES` (RaVL's synthetic captions)."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(CAPTION_TEMPLATES), size=len(labels))
    return [CAPTION_TEMPLATES[k].format(classnames[y]) for k, y in zip(pick, labels)]


def achieved_cramers_v(has_feature: np.ndarray, labels: np.ndarray, cls: int) -> float:
    """Cramér's V (|phi|) between feature presence and ``labels == cls``."""
    from medfm.data.phantoms.cxr import cramers_v

    return float(cramers_v(np.asarray(has_feature, bool), np.asarray(labels) == cls))


# ----------------------------------------------------------------------------------------------------------------------
# Chest X-ray phantoms


def cxr_audit_set(
    n: int,
    seed: int = 0,
    size: int = 64,
    classes: tuple[str, ...] = ("No Finding", "Cardiomegaly", "Pleural Effusion"),
    spurious_label: str | None = "Pleural Effusion",
    cramers_v: float = 0.9,
    corner: str = "top_right",
    marker: str = "token",
) -> AuditSet:
    """Single-label chest X-ray phantoms over ``classes`` with an optional planted marker.

    Findings not in ``classes`` get prevalence 0; images with more than one of ``classes`` present are dropped,
    so about ``n`` images are generated and ``<= n`` kept. The marker correlates with ``spurious_label`` at
    Cramér's V ``cramers_v`` in the generator's population (the achieved V on the kept images is in ``meta``).

    Args:
        n: images to generate before filtering.
        seed: phantom seed.
        size: image side in pixels.
        classes: CheXpert finding names; "No Finding" = none of the others.
        spurious_label: finding the marker correlates with (None: no marker).
        cramers_v: target association strength in [0, 1] (0: marker independent of the label).
        corner: image corner of the marker.
        marker: "token" (a T glyph) or "square".
    """
    from medfm.data.phantoms.config import CXRPrevalence
    from medfm.data.phantoms.cxr import FINDINGS, generate_cxr

    for c in classes:
        if c not in FINDINGS:
            raise UsageError(f"class {c!r} is not a phantom finding; use one of: {', '.join(FINDINGS)}")
    sampled = [c for c in classes if c != "No Finding"]
    if not sampled:
        raise UsageError("classes need at least one finding besides 'No Finding'")
    prev = {f.replace("_", " "): 0.0 for f in CXRPrevalence().as_dict()}
    share = 0.8 / (len(sampled) + (1 if "No Finding" in classes else 0)) * 1.25
    for c in sampled:
        prev[c] = min(0.45, share)
    spurious = {"label": spurious_label, "cramers_v": float(cramers_v), "corner": corner, "kind": marker}
    batch = generate_cxr(n, seed=seed, size=size, prevalence=prev, spurious=spurious, duplicate_rate=0.0,
                         uncertain_rate=0.0)  # fmt: skip
    fidx = [FINDINGS.index(c) for c in sampled]
    present = batch.present[:, fidx]
    labels = np.full(len(batch.records), -1, np.int64)
    one = present.sum(1) == 1
    for k, c in enumerate(sampled):
        labels[one & present[:, k]] = classes.index(c)
    if "No Finding" in classes:
        labels[present.sum(1) == 0] = classes.index("No Finding")
    keep = np.flatnonzero(labels >= 0)
    classnames = [CXR_CLASS_TEXT.get(c, c.lower()) for c in classes]
    recs = [batch.records[i] for i in keep]
    spur_boxes = [[list(r["spurious_box"])] if r["spurious"] else [] for r in recs]
    core = []
    for i in keep:
        y = classes[labels[i]]
        box = batch.records[i]["boxes"].get(y) if y != "No Finding" else None
        core.append([list(box)] if box else [])
    out = AuditSet(
        images=batch.images[keep],
        labels=labels[keep],
        classnames=classnames,
        captions=captions_for(classnames, labels[keep], seed + 1),
        spurious_boxes=spur_boxes,
        core_boxes=core,
        ids=[r["id"] for r in recs],
        meta={"source": "cxr-phantom", "classes": list(classes), "spurious_label": spurious_label,
              "cramers_v_target": float(cramers_v), "size": size, "seed": seed},
    )  # fmt: skip
    if spurious_label is not None and spurious_label in classes:
        out.meta["spurious_class"] = classes.index(spurious_label)
        out.meta["cramers_v_achieved"] = achieved_cramers_v(out.has_spurious, out.labels, classes.index(spurious_label))
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Quadrant digits (RaVL's synthetic protocol)


def _digit_glyphs() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def quadrant_digits(
    n: int,
    seed: int = 0,
    size: int = 32,
    spurious_class: int | None = None,
    cramers_v: float = 0.0,
    square_rate: float = 0.5,
    glyph_split: str = "train",
    num_classes: int = 10,
) -> AuditSet:
    """Digits in one quadrant of a ``size x size`` RGB canvas, a red square in another with some probability.

    With ``spurious_class = s`` and Cramér's V ``v``, ``P(square | y = s) = pi + v (1 - pi)`` and
    ``P(square | y != s) = pi (1 - v)`` with ``pi = P(y = s)`` (so V between square and ``y == s`` is ``v``);
    without a spurious class the square appears with probability ``square_rate`` independently of the digit.
    Glyphs come from disjoint halves of scikit-learn's 1,797 ``load_digits`` images (``glyph_split``
    "train" or "test"), nearest-upsampled to the quadrant size with random intensity jitter.
    """
    from medfm.data.phantoms.cxr import spurious_rates

    if size % 2:
        raise UsageError(f"quadrant image size must be even, got {size}")
    rng = np.random.default_rng(seed)
    glyphs, targets = _digit_glyphs()
    order = np.random.default_rng(12345).permutation(len(targets))
    half = order[: len(order) // 2] if glyph_split == "train" else order[len(order) // 2 :]
    keep = half[targets[half] < num_classes]
    q = size // 2
    labels = rng.integers(0, num_classes, size=n)
    pool = {c: keep[targets[keep] == c] for c in range(num_classes)}
    if spurious_class is None:
        p_sq = np.full(n, square_rate)
    else:
        a, b = spurious_rates(1.0 / num_classes, cramers_v)
        p_sq = np.where(labels == spurious_class, a, b)
    has_sq = rng.random(n) < p_sq
    quads = [(0, 0), (q, 0), (0, q), (q, q)]  # (x0, y0)
    images = np.zeros((n, 3, size, size), np.float32)
    spur, core = [], []
    for i in range(n):
        g = glyphs[rng.choice(pool[int(labels[i])])]
        up = np.kron(g, np.ones((int(np.ceil(q / 8)),) * 2, np.float32))[:q, :q] * rng.uniform(0.7, 1.0)
        dq, sq = rng.choice(4, size=2, replace=False)
        x0, y0 = quads[dq]
        images[i, :, y0 : y0 + q, x0 : x0 + q] = up
        core.append([[x0, y0, x0 + q, y0 + q]])
        if has_sq[i]:
            x0, y0 = quads[sq]
            m = max(1, q // 8)
            images[i, 0, y0 + m : y0 + q - m, x0 + m : x0 + q - m] = 1.0
            spur.append([[x0 + m, y0 + m, x0 + q - m, y0 + q - m]])
        else:
            spur.append([])
    classnames = list(DIGIT_NAMES[:num_classes])
    out = AuditSet(
        images=images,
        labels=labels,
        classnames=classnames,
        captions=captions_for(classnames, labels, seed + 1),
        spurious_boxes=spur,
        core_boxes=core,
        ids=[f"digit_{seed}_{i:06d}" for i in range(n)],
        meta={"source": "quadrant-digits", "spurious_class": spurious_class, "cramers_v_target": float(cramers_v),
              "size": size, "seed": seed},
    )  # fmt: skip
    out = out.with_grid(2)
    if spurious_class is not None:
        out.meta["cramers_v_achieved"] = achieved_cramers_v(has_sq, labels, spurious_class)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Manifests


def _json_cell(value: Any, where: str) -> Any:
    if value in (None, ""):
        return None
    if isinstance(value, list | dict):
        return value
    try:
        return json.loads(str(value))
    except json.JSONDecodeError:
        raise DataError(f"{where} is not a JSON list of boxes [[x0, y0, x1, y1], ...]: {str(value)[:60]!r}") from None


def _boxes(value: Any, where: str) -> list[Box]:
    got = _json_cell(value, where)
    if got is None:
        return []
    if isinstance(got, list) and len(got) == 4 and all(isinstance(v, int | float) for v in got):
        got = [got]
    if not isinstance(got, list) or not all(isinstance(b, list) and len(b) == 4 for b in got):
        raise DataError(f"{where} must be a JSON list of [x0, y0, x1, y1] boxes, got {str(value)[:60]!r}")
    return [[round(float(v)) for v in b] for b in got]


def manifest_audit_set(
    path: str | Path,
    label_column: str = "label",
    image_column: str = "image",
    caption_column: str | None = "caption",
    region_column: str | None = None,
    spurious_column: str | None = None,
    classnames: list[str] | None = None,
    size: int | None = None,
    limit: int | None = None,
) -> AuditSet:
    """Read a CSV/JSONL manifest: image path, class label (name or index), optional caption and boxes.

    Args:
        path: manifest file; image paths are relative to its folder.
        label_column: class of each image (a class name, or an integer index into ``classnames``).
        image_column: image path column (PNG/JPEG/DICOM, read by medfm.data.io.read_radiograph).
        caption_column: caption for fine-tuning (default: a template caption from the class name).
        region_column: JSON list of candidate region boxes per image (default: none, use a grid).
        spurious_column: JSON list of ground-truth spurious-feature boxes (for Precision@k), optional.
        classnames: class order (default: sorted distinct labels).
        size: resize images to ``size x size`` (default: the first image's size; all must then agree).
        limit: read at most this many rows.
    """
    from medfm.data.io import read_radiograph
    from medfm.data.manifests import read_table

    path = Path(path)
    header, rows = read_table(path)
    for col in (image_column, label_column):
        if col not in header:
            raise DataError(f"{path}: missing column {col!r}; columns found: {', '.join(header)}")
    rows = rows[:limit] if limit else rows
    if not rows:
        raise DataError(f"{path}: the manifest has no rows")
    raw = [str(r[label_column]).strip() for r in rows]
    if classnames is None:
        classnames = sorted(set(raw))
    labels = []
    for i, v in enumerate(raw):
        if v in classnames:
            labels.append(classnames.index(v))
        elif v.isdigit() and int(v) < len(classnames):
            labels.append(int(v))
        else:
            raise DataError(f"{path}: row {i + 1} label {v!r} is not one of the classes {classnames}")
    imgs = []
    for i, r in enumerate(rows):
        arr = read_radiograph(path.parent / str(r[image_column])).array
        if size is not None and arr.shape != (size, size):
            from PIL import Image

            arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR), np.float32)
        if imgs and arr.shape != imgs[0].shape:
            raise DataError(f"{path}: row {i + 1} image is {arr.shape}, others {imgs[0].shape}; pass --data.size")
        imgs.append(arr)
    lab = np.asarray(labels)
    caps = (
        [str(r.get(caption_column) or "") for r in rows]
        if caption_column and caption_column in header
        else captions_for(classnames, lab, 0)
    )
    regions = [_boxes(r.get(region_column), f"{path}: row {i + 1} column {region_column}") for i, r in enumerate(rows)] \
        if region_column and region_column in header else []  # fmt: skip
    spur = [_boxes(r.get(spurious_column), f"{path}: row {i + 1} column {spurious_column}") for i, r in enumerate(rows)] \
        if spurious_column and spurious_column in header else None  # fmt: skip
    ids = [str(r.get("id") or i) for i, r in enumerate(rows)]
    return AuditSet(np.stack(imgs), lab, list(classnames), caps, regions, spur, None, ids, {"source": str(path)})
