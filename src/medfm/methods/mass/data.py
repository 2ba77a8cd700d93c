"""Volumes for MASS: reading (datalist or CT phantoms), preprocessing, and the prepared cache on disk.

Arrays are 3D in the file's voxel order ``(X, Y, Z)`` (called (D, H, W) by the network). Preprocessing (spec A3
step 4, A9.8): optional resampling to ``spacing`` (trilinear image, nearest label; medfm.data.io.resample),
CT clip to ``ct_window`` HU then z-score; MR clip to the 2nd-98th percentile then z-score; zero-pad (in the
normalised image: the clip floor) every axis to at least ``min_size``.

Prepared cache (written by ``medfm mass prepare``)::

    <dir>/index.json                 {"schema": "medfm.mass.masks/1", "volumes": [{"id", "file", "shape", ...}]}
    <dir>/volumes/<id>.npz           image (float32, normalised), raw (float32, HU/intensity), label (optional),
                                     masks_indptr/masks_indices (CSR: mask i = flat voxel indices), sources
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

INDEX_SCHEMA = "medfm.mass.masks/1"


@dataclass
class Case:
    """One preprocessed volume.

    Attributes:
        id: case id.
        image: (X, Y, Z) float32, normalised (z-scored).
        raw: (X, Y, Z) float32 in HU (CT) or original intensity, same grid as ``image``.
        spacing: voxel size, mm.
        label: (X, Y, Z) integer label map or None.
        labels: label value -> structure name.
        meta: free-form facts (pathologies present, source path).
    """

    id: str
    image: np.ndarray
    raw: np.ndarray
    spacing: tuple[float, float, float]
    label: np.ndarray | None = None
    labels: dict[int, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def normalize(raw: np.ndarray, modality: str, ct_window: tuple[float, float] = (-991.0, 500.0)) -> np.ndarray:
    """Clip and z-score: CT to ``ct_window`` HU; MR to its 2nd-98th percentiles. Returns float32."""
    x = raw.astype(np.float32)
    lo, hi = ct_window if modality == "CT" else np.percentile(x, [2, 98])
    x = np.clip(x, lo, hi)
    return ((x - x.mean()) / max(float(x.std()), 1e-6)).astype(np.float32)


def pad_to(arr: np.ndarray, size: int, value: float) -> np.ndarray:
    """Pad each axis symmetrically to at least ``size`` voxels with ``value``."""
    pads = [((size - s) // 2, size - s - (size - s) // 2) if s < size else (0, 0) for s in arr.shape]
    return np.pad(arr, pads, constant_values=value) if any(p != (0, 0) for p in pads) else arr


def preprocess(
    case_id: str,
    raw: np.ndarray,
    spacing: tuple[float, float, float],
    opts: Any,
    label: np.ndarray | None = None,
    affine: np.ndarray | None = None,
    labels: dict[int, str] | None = None,
    meta: dict[str, Any] | None = None,
) -> Case:
    """Resample (if ``opts.spacing``), normalise and pad one volume; see the module docstring."""
    if raw.ndim != 3:
        raise DataError(f"{case_id}: expected a 3D image, got shape {raw.shape}")
    if label is not None and label.shape != raw.shape:
        raise DataError(f"{case_id}: label shape {label.shape} differs from image shape {raw.shape}; "
                        "image and label must share one voxel grid")  # fmt: skip
    if opts.spacing:
        target = tuple(opts.spacing) * 3 if len(opts.spacing) == 1 else tuple(opts.spacing)
        if len(target) != 3:
            raise UsageError(f"--data.spacing needs 1 or 3 values (mm), got {opts.spacing}")
        if not np.allclose(target, spacing, rtol=1e-3):
            from medfm.data.io import Volume, resample, spacing_affine

            aff = affine if affine is not None else spacing_affine(spacing)
            vol = resample(Volume(raw.astype(np.float32), spacing, aff), target)
            if label is not None:
                label = resample(Volume(label, spacing, aff), target, is_label=True).array
            raw, spacing = vol.array, tuple(float(s) for s in target)  # type: ignore[assignment]
            log.info("%s: resampled to %s mm, shape %s", case_id, spacing, raw.shape)
    raw = raw.astype(np.float32)
    image = normalize(raw, opts.modality, tuple(opts.ct_window))
    floor = float(image.min())
    raw_floor = float(opts.ct_window[0]) if opts.modality == "CT" else float(raw.min())
    image = pad_to(image, opts.min_size, floor)
    raw = pad_to(raw, opts.min_size, raw_floor)
    if label is not None:
        label = pad_to(label, opts.min_size, 0)
    return Case(case_id, image, raw, tuple(float(s) for s in spacing), label, dict(labels or {}), dict(meta or {}))


def load_cases(opts: Any, limit: int | None = None) -> list[Case]:
    """Read and preprocess the volumes described by a :class:`~medfm.methods.mass.config.DataOptions`."""
    if opts.datalist:
        return _load_datalist(opts, limit)
    from medfm.data.phantoms.config import CTPhantomConfig
    from medfm.data.phantoms.ct3d import LABELS, generate_ct_patient

    if len(opts.phantom_shape) != 3 or len(opts.phantom_spacing) != 3:
        raise UsageError("--data.phantom_shape and --data.phantom_spacing need 3 values each")
    cfg = CTPhantomConfig(n=opts.phantom_first + opts.phantom_n, shape=list(opts.phantom_shape),
                          spacing=list(opts.phantom_spacing), seed=opts.phantom_seed)  # fmt: skip
    n = opts.phantom_n if limit is None else min(limit, opts.phantom_n)
    cases = []
    for i in range(opts.phantom_first, opts.phantom_first + n):
        p = generate_ct_patient(cfg, i)
        meta = {"source": f"phantom:ct3d seed={opts.phantom_seed} index={i}", **p.metadata}
        cases.append(preprocess(p.id, p.image, p.spacing, opts, p.label, labels=LABELS, meta=meta))
    return cases


def _load_datalist(opts: Any, limit: int | None) -> list[Case]:
    from medfm.data.io import load_volume
    from medfm.data.manifests import read_datalist

    dl = read_datalist(opts.datalist)
    records = dl.records if opts.split == "all" else dl.split(opts.split)
    if not records:
        raise DataError(f"{opts.datalist}: split {opts.split!r} is empty; use --data.split train|val|test|all")
    cases = []
    for rec in records[:limit] if limit else records:
        img = load_volume(rec.image, dtype=np.float32)
        label = None
        if rec.label is not None:
            lab = load_volume(rec.label)
            if lab.array.shape != img.array.shape or not np.allclose(lab.affine, img.affine, atol=1e-3):
                raise DataError(
                    f"{rec.label}: label grid {lab.array.shape} does not match image {rec.image} grid "
                    f"{img.array.shape} (shape and affine must be equal); resample the label onto the image"
                )
            label = np.rint(lab.array).astype(np.int16)
        arr = img.array[..., 0] if img.array.ndim == 4 and img.array.shape[-1] == 1 else img.array
        meta = {"source": str(rec.image), **rec.metadata}
        cases.append(preprocess(rec.id, arr, img.spacing, opts, label, img.affine, dl.labels, meta))
    return cases


# ----------------------------------------------------------------------------------------------------------------------
# Prepared cache


def masks_to_csr(masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Masks as flat voxel index arrays (or bool arrays) -> (indptr int64 (N+1,), indices int32)."""
    idx = [(np.flatnonzero(m.ravel()) if m.dtype == bool else np.asarray(m)).astype(np.int32) for m in masks]
    indptr = np.zeros(len(idx) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(i) for i in idx])
    return indptr, (np.concatenate(idx) if idx else np.zeros(0, np.int32))


def csr_to_masks(indptr: np.ndarray, indices: np.ndarray, shape: tuple[int, ...], which: Any = None) -> np.ndarray:
    """(N, X, Y, Z) bool masks (or only rows ``which``) from the CSR arrays of :func:`masks_to_csr`."""
    rows = range(len(indptr) - 1) if which is None else which
    out = np.zeros((len(rows), int(np.prod(shape))), dtype=bool)
    for j, i in enumerate(rows):
        out[j, indices[indptr[i] : indptr[i + 1]]] = True
    return out.reshape(len(rows), *shape)


@dataclass
class PreparedCase:
    """A cached case: image, optional label and the mask proposals in CSR form (see module docstring)."""

    case: Case
    indptr: np.ndarray
    indices: np.ndarray
    sources: list[str]

    @property
    def n_masks(self) -> int:
        return len(self.indptr) - 1

    def masks(self, which: Any = None) -> np.ndarray:
        return csr_to_masks(self.indptr, self.indices, self.case.image.shape, which)


def save_prepared(directory: Path, case: Case, masks: list[np.ndarray], sources: list[str]) -> dict[str, Any]:
    """Write one case (masks as flat index arrays or bool arrays) into the cache atomically; returns its index entry."""
    import io

    from medfm.core.files import atomic_write_bytes

    indptr, indices = masks_to_csr(masks)
    buf = io.BytesIO()
    arrays = {"image": case.image, "raw": case.raw, "masks_indptr": indptr, "masks_indices": indices,
              "sources": np.array(sources, dtype="U16"), "spacing": np.array(case.spacing)}  # fmt: skip
    if case.label is not None:
        arrays["label"] = case.label.astype(np.int16)
    np.savez_compressed(buf, **arrays)
    rel = f"volumes/{case.id}.npz"
    atomic_write_bytes(directory / rel, buf.getvalue())
    return {
        "id": case.id,
        "file": rel,
        "shape": list(case.image.shape),
        "spacing": list(case.spacing),
        "n_masks": len(masks),
        "sources": {s: sources.count(s) for s in sorted(set(sources))},
        "has_label": case.label is not None,
        "labels": {str(k): v for k, v in case.labels.items()},
        "meta": {k: v for k, v in case.meta.items() if k in ("source", "present")},
    }


def read_index(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / "index.json"
    if not path.is_file():
        raise DataError(f"{directory}: no index.json; run `medfm mass prepare --output_dir {directory}` first")
    index = json.loads(path.read_text())
    if index.get("schema") != INDEX_SCHEMA:
        raise DataError(f"{path}: schema {index.get('schema')!r} is not {INDEX_SCHEMA}")
    return index


def load_prepared(directory: str | Path, limit: int | None = None) -> list[PreparedCase]:
    """All cached cases of a prepare run (images, labels, mask CSR)."""
    directory = Path(directory)
    index = read_index(directory)
    out = []
    for entry in index["volumes"][:limit] if limit else index["volumes"]:
        try:
            z = np.load(directory / entry["file"])
        except (OSError, ValueError) as exc:
            raise DataError(f"{directory / entry['file']}: unreadable ({exc}); rerun prepare") from None
        labels = {int(k): v for k, v in entry.get("labels", {}).items()}
        case = Case(entry["id"], z["image"], z["raw"], tuple(z["spacing"].tolist()),
                    z.get("label", None), labels, entry.get("meta", {}))  # fmt: skip
        out.append(PreparedCase(case, z["masks_indptr"], z["masks_indices"], [str(s) for s in z["sources"]]))
    return out


def structure_ids(names: list[str], labels: dict[int, str]) -> dict[str, int]:
    """Map requested structure names (or label values as strings) to label values; UsageError if unknown."""
    by_name = {v: k for k, v in labels.items()}
    out = {}
    for name in names:
        if name in by_name:
            out[name] = by_name[name]
        elif name.isdigit():
            out[labels.get(int(name), name)] = int(name)
        else:
            raise UsageError(f"structure {name!r} is not in the labels ({', '.join(sorted(by_name)) or 'none'})")
    return out
