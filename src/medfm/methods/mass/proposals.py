"""Class-agnostic 3D mask proposals without labels (spec A3 and C2: the CPU substitute for SAM2 masks).

A generator is any callable ``(raw, image, body, spacing) -> list of (X, Y, Z) arrays`` (see
:class:`MaskGenerator`); each array is a bool mask or an integer label map whose positive values are masks: ``raw`` is HU (CT) or raw intensity, ``image`` the z-scored volume, ``body`` the body mask.
Built-in generators:

- ``slic``: 3D SLIC supervoxels (scikit-image) on the z-scored volume inside the body.
- ``threshold``: connected components of intensity windows (CT HU bands; MR intensity terciles).
- ``merge``: hierarchical merges of the SLIC supervoxels: the region adjacency graph weighted by the difference of
  mean intensity is cut at increasing thresholds (scipy connected components), one level per threshold.

Register your own with :func:`register_generator` or pass ``module:factory`` in ``--proposals.generators``; the
factory receives the :class:`~medfm.methods.mass.config.ProposalOptions` (this is where SAM2 slice propagation,
atlas masks or weak labels plug in). :func:`propose_masks` restricts every mask to the body, drops small and huge
ones, deduplicates by 3D IoU (NMS, largest first) and keeps at most ``max_masks``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from scipy import ndimage, sparse

log = logging.getLogger(__name__)


class MaskGenerator(Protocol):
    """Proposes class-agnostic binary masks for one volume."""

    name: str

    def __call__(
        self, raw: np.ndarray, image: np.ndarray, body: np.ndarray, spacing: tuple[float, float, float]
    ) -> list[np.ndarray]:
        """Bool masks and/or integer label maps (each positive value one mask), all (X, Y, Z)."""
        ...


def body_mask(raw: np.ndarray, modality: str = "CT", threshold: float = -500.0) -> np.ndarray:
    """Body: intensity above ``threshold`` HU (CT) or Otsu (MR), largest 3D component, holes filled, (X, Y, Z) bool."""
    if modality == "CT":
        fg = raw > threshold
    else:
        from skimage.filters import threshold_otsu

        fg = raw > threshold_otsu(raw)
    lab, n = ndimage.label(fg)
    if n == 0:
        return np.zeros_like(fg)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    body = ndimage.binary_fill_holes(lab == int(sizes.argmax()))
    for z in range(body.shape[2]):  # lungs and bowel gas connect to the outside in 3D: fill per axial slice too
        body[:, :, z] = ndimage.binary_fill_holes(body[:, :, z])
    return body


def slic_supervoxels(image: np.ndarray, body: np.ndarray, spacing: Any, n_segments: int, compactness: float):
    """SLIC label map (0 outside the body, 1..N inside) on the z-scored image."""
    from skimage.segmentation import slic

    if not body.any():
        return np.zeros(image.shape, dtype=np.int32)
    return slic(image.astype(np.float64), n_segments=n_segments, compactness=compactness, channel_axis=None,
                mask=body, spacing=np.asarray(spacing, float) / min(spacing), start_label=1,
                enforce_connectivity=True).astype(np.int32)  # fmt: skip


def adjacency(labels: np.ndarray) -> np.ndarray:
    """Unique pairs (a, b), a < b, of different positive labels that touch (6-connectivity). Shape (E, 2)."""
    pairs = []
    for axis in range(labels.ndim):
        a = np.moveaxis(labels, axis, 0)
        u, v = a[:-1].ravel(), a[1:].ravel()
        keep = (u != v) & (u > 0) & (v > 0)
        pairs.append(np.stack([np.minimum(u[keep], v[keep]), np.maximum(u[keep], v[keep])], 1))
    allp = np.concatenate(pairs) if pairs else np.zeros((0, 2), int)
    return np.unique(allp, axis=0) if len(allp) else allp


def hierarchical_merge(labels: np.ndarray, image: np.ndarray, thresholds: list[float]) -> list[np.ndarray]:
    """Merged label maps, one per threshold: adjacent regions whose mean intensities differ by < threshold join.

    Args:
        labels: (X, Y, Z) supervoxel labels, 0 = ignore.
        image: (X, Y, Z) intensity used for the region means.
        thresholds: increasing mean-difference thresholds (same units as ``image``).
    """
    n = int(labels.max())
    if n == 0:
        return []
    means = ndimage.mean(image, labels, index=np.arange(1, n + 1))
    edges = adjacency(labels)
    out = []
    for t in thresholds:
        if len(edges):
            w = np.abs(means[edges[:, 0] - 1] - means[edges[:, 1] - 1])
            keep = edges[w < t] - 1
        else:
            keep = np.zeros((0, 2), int)
        graph = sparse.coo_matrix((np.ones(len(keep)), (keep[:, 0], keep[:, 1])), shape=(n, n))
        _, comp = sparse.csgraph.connected_components(graph, directed=False)
        lut = np.concatenate([[0], comp + 1]).astype(np.int32)
        out.append(lut[labels])
    return out


class SlicGenerator:
    name = "slic"

    def __init__(self, opts: Any):
        self.opts = opts
        self.last_labels: np.ndarray | None = None

    def __call__(self, raw, image, body, spacing):
        self.last_labels = slic_supervoxels(image, body, spacing, self.opts.slic_segments, self.opts.slic_compactness)
        return [self.last_labels]


class MergeGenerator:
    """Hierarchical merges of SLIC supervoxels (reuses the labels of a preceding ``slic`` generator if any)."""

    name = "merge"

    def __init__(self, opts: Any, slic: SlicGenerator | None = None):
        self.opts = opts
        self.slic = slic

    def __call__(self, raw, image, body, spacing):
        labels = self.slic.last_labels if self.slic is not None and self.slic.last_labels is not None else None
        if labels is None or labels.shape != image.shape:
            labels = slic_supervoxels(image, body, spacing, self.opts.slic_segments, self.opts.slic_compactness)
        return hierarchical_merge(labels, image, sorted(self.opts.merge_thresholds))


class ThresholdGenerator:
    """Connected components of intensity windows."""

    name = "threshold"

    def __init__(self, opts: Any, modality: str = "CT"):
        self.opts = opts
        self.modality = modality

    def windows(self, raw: np.ndarray, body: np.ndarray) -> list[tuple[float, float]]:
        if self.modality == "CT":
            out = []
            for w in self.opts.ct_windows:
                lo, _, hi = str(w).partition(":")
                out.append((float(lo), float(hi)))
            return out
        q = np.percentile(raw[body], [0, 33.3, 66.7, 100]) if body.any() else np.zeros(4)
        return [(q[i], q[i + 1]) for i in range(3)]

    def __call__(self, raw, image, body, spacing):
        out = []
        for lo, hi in self.windows(raw, body):
            out.append(ndimage.label((raw >= lo) & (raw < hi) & body)[0])
        return out


_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_generator(name: str, factory: Callable[[Any], MaskGenerator]) -> None:
    """Make ``name`` usable in ``--proposals.generators``; ``factory(opts)`` builds the generator."""
    _REGISTRY[name] = factory


def build_generators(opts: Any, modality: str = "CT") -> list[MaskGenerator]:
    """Generators named in ``opts.generators`` (built-ins, registered names, or ``module:factory``)."""
    from medfm.core.commands import load_object
    from medfm.core.errors import UsageError

    gens: list[Any] = []
    slic: SlicGenerator | None = None
    for name in opts.generators:
        if name == "slic":
            slic = SlicGenerator(opts)
            gens.append(slic)
        elif name == "merge":
            gens.append(MergeGenerator(opts, slic))
        elif name == "threshold":
            gens.append(ThresholdGenerator(opts, modality))
        elif name in _REGISTRY:
            gens.append(_REGISTRY[name](opts))
        elif ":" in name:
            try:
                gens.append(load_object(name)(opts))
            except (ImportError, AttributeError) as exc:
                raise UsageError(f"--proposals.generators: cannot load {name!r} ({exc})") from None
        else:
            raise UsageError(f"unknown mask generator {name!r}; use slic, threshold, merge or module:factory")
    return gens


def to_index_sets(arr: np.ndarray) -> list[np.ndarray]:
    """Flat voxel indices (int64, sorted) of each mask in a bool mask or an integer label map."""
    arr = np.asarray(arr)
    if arr.dtype == bool:
        return [np.flatnonzero(arr.ravel())] if arr.any() else []
    flat = arr.ravel()
    fg = np.flatnonzero(flat > 0)
    if not len(fg):
        return []
    order = np.argsort(flat[fg], kind="stable")
    idx, vals = fg[order], flat[fg][order]
    cuts = np.flatnonzero(np.diff(vals)) + 1
    return np.split(idx, cuts)


def iou_nms(index_sets: list[np.ndarray], size: int, threshold: float) -> list[int]:
    """Indices of the masks kept by 3D-IoU NMS: sorted largest first, a mask is dropped when its IoU with an
    already kept mask exceeds ``threshold``. Masks are flat voxel index arrays into a volume of ``size`` voxels;
    all pairwise intersections come from one sparse product (N x V) @ (V x N)."""
    if not index_sets:
        return []
    sizes = np.array([len(r) for r in index_sets])
    order = np.argsort(-sizes, kind="stable")
    rows = [index_sets[i] for i in order]
    mat = sparse.csr_matrix(
        (np.ones(int(sizes.sum()), np.float32), np.concatenate(rows), np.concatenate([[0], np.cumsum(sizes[order])])),
        shape=(len(rows), size),
    )
    inter = (mat @ mat.T).tocsr()
    s = sizes[order]
    kept: list[int] = []
    kept_set = np.zeros(len(order), bool)
    for i in range(len(order)):
        j, v = inter.indices[inter.indptr[i] : inter.indptr[i + 1]], inter.data[inter.indptr[i] : inter.indptr[i + 1]]
        sel = kept_set[j]
        if sel.any():
            iou = v[sel] / (s[i] + s[j[sel]] - v[sel])
            if (iou > threshold).any():
                continue
        kept_set[i] = True
        kept.append(int(order[i]))
    return kept


def propose_masks(
    raw: np.ndarray,
    image: np.ndarray,
    spacing: tuple[float, float, float],
    opts: Any,
    modality: str = "CT",
    generators: list[MaskGenerator] | None = None,
) -> tuple[list[np.ndarray], list[str], np.ndarray]:
    """All proposals of one volume after body restriction, size filter, IoU NMS and the cap.

    Returns:
        ``(masks, sources, body)``: flat voxel index arrays (into ``raw.ravel()``), largest first; the generator
        name of each; the (X, Y, Z) body mask.
    """
    body = body_mask(raw, modality, opts.body_threshold)
    body_flat = body.ravel()
    body_voxels = max(int(body.sum()), 1)
    cand: list[np.ndarray] = []
    src: list[str] = []
    for gen in generators if generators is not None else build_generators(opts, modality):
        for arr in gen(raw, image, body, spacing):
            if np.shape(arr) != raw.shape:
                raise ValueError(f"mask generator {gen.name} returned shape {np.shape(arr)}, expected {raw.shape}")
            for idx in to_index_sets(arr):
                idx = idx[body_flat[idx]]
                if opts.min_voxels <= len(idx) <= opts.max_fraction * body_voxels:
                    cand.append(idx)
                    src.append(gen.name)
    kept = iou_nms(cand, raw.size, opts.iou_threshold)[: opts.max_masks]
    return [cand[i] for i in kept], [src[i] for i in kept], body


def proposal_quality(masks: list[np.ndarray], label: np.ndarray, labels: dict[int, str]) -> dict[str, dict[str, float]]:
    """Best Dice of any proposal (flat index arrays) against each ground-truth structure present in ``label``.

    Returns ``{structure: {"best_dice": d, "voxels": n}}``."""
    values = [v for v in np.unique(label) if v > 0]
    out: dict[str, dict[str, float]] = {}
    if not values or not masks:
        return {labels.get(int(v), str(v)): {"best_dice": 0.0, "voxels": int((label == v).sum())} for v in values}
    sizes = np.array([len(x) for x in masks])
    m = sparse.csr_matrix(
        (np.ones(int(sizes.sum()), np.float32), np.concatenate(masks), np.concatenate([[0], np.cumsum(sizes)])),
        shape=(len(masks), label.size),
    )
    flat = label.ravel()
    msize = sizes.astype(np.float64)
    for v in values:
        g = (flat == v).astype(np.float32)
        inter = m @ g
        d = 2 * inter / (msize + g.sum())
        out[labels.get(int(v), str(v))] = {"best_dice": float(d.max()), "voxels": int(g.sum())}
    return out
