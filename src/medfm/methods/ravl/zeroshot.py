"""Embedding images and their regions with the model's image tower, and zero-shot scoring (spec §2.2 steps 2-3).

Class text embedding = the normalised mean of the normalised embeddings of the class's prompt templates;
scores = ``softmax(cos / temperature)`` over classes (RaVL: temperature 0.07), for images (-> predicted label)
and for every region crop (-> region score distribution).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medfm.methods.ravl.data import PROMPT_TEMPLATES, AuditSet
from medfm.methods.ravl.regions import flatten_regions, grid_boxes, region_pixels

log = logging.getLogger(__name__)


@dataclass
class Embedded:
    """An audit set seen through a model.

    Attributes:
        image_emb: (N, D) unit image embeddings.
        region_emb: (R, D) unit region embeddings.
        boxes: (R, 4) region boxes [x0, y0, x1, y1].
        region_image: (R,) image index of each region.
        classifier: (D, C) unit class text embeddings.
        image_scores: (N, C) softmax zero-shot scores of images.
        region_scores: (R, C) softmax zero-shot scores of regions.
    """

    image_emb: np.ndarray
    region_emb: np.ndarray
    boxes: np.ndarray
    region_image: np.ndarray
    classifier: np.ndarray
    image_scores: np.ndarray
    region_scores: np.ndarray

    @property
    def image_pred(self) -> np.ndarray:
        return self.image_scores.argmax(1)

    @property
    def region_pred(self) -> np.ndarray:
        return self.region_scores.argmax(1)


def softmax_scores(emb: np.ndarray, classifier: np.ndarray, temperature: float = 0.07) -> np.ndarray:
    """``softmax(emb @ classifier / temperature)`` row-wise: (M, D) x (D, C) -> (M, C)."""
    logits = emb.astype(np.float64) @ classifier.astype(np.float64) / temperature
    logits -= logits.max(1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def class_embeddings(model: Any, classnames: Sequence[str], templates: Sequence[str] = PROMPT_TEMPLATES) -> np.ndarray:
    """(D, C) class text embeddings from the model's text tower (template-averaged, unit columns)."""
    w = model.zero_shot_classifier(list(classnames), list(templates))
    w = np.asarray(w.detach().cpu().numpy() if hasattr(w, "detach") else w, np.float32)
    return w / np.linalg.norm(w, axis=0, keepdims=True).clip(1e-12)


def region_boxes_of(data: AuditSet, grid: int) -> list[list[list[int]]]:
    """The candidate regions of every image: the set's own boxes when it has them, else a ``grid x grid`` grid."""
    if data.regions:
        return data.regions
    h, w = data.images.shape[-2:]
    cells = grid_boxes(h, w, grid)
    return [cells for _ in range(len(data))]


def embed(
    model: Any,
    data: AuditSet,
    grid: int = 2,
    templates: Sequence[str] = PROMPT_TEMPLATES,
    temperature: float = 0.07,
    batch_size: int = 256,
    crop_size: int | None = None,
    region_mode: str = "crop",
) -> Embedded:
    """Embed images and region crops and zero-shot classify both.

    Args:
        model: the model under audit (see medfm.methods.ravl.model).
        data: images and (optionally) their region boxes.
        grid: grid size used when ``data`` has no region boxes.
        templates: prompt templates with one ``{}`` for the class name.
        temperature: softmax temperature of the zero-shot scores.
        batch_size: images per forward pass.
        crop_size: side of the resized region crops (default: the image side).
        region_mode: "crop" (crop and resize, RaVL) or "mask" (the region in place on an empty canvas).
    """
    h, w = data.images.shape[-2:]
    boxes, owner = flatten_regions(region_boxes_of(data, grid), h, w)
    size = int(crop_size or max(h, w))
    img = model.encode_images(data.images, batch_size=batch_size).numpy()
    reg = np.zeros((len(boxes), img.shape[1]), np.float32)
    step = max(1, batch_size)
    for s in range(0, len(boxes), step * 4):  # crop in chunks to bound memory
        sl = slice(s, s + step * 4)
        crops = region_pixels(data.images, boxes[sl], owner[sl], region_mode, size)
        reg[sl] = model.encode_images(crops, batch_size=batch_size).numpy()
    W = class_embeddings(model, data.classnames, templates)
    return Embedded(img, reg, boxes, owner, W, softmax_scores(img, W, temperature), softmax_scores(reg, W, temperature))
