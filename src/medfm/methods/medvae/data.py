"""Images for MedVAE: phantoms, folders and manifests -> normalised arrays in [-1, 1], with the inverse maps.

Normalisation follows the original code (spec B3): 2D radiographs are read to [0, 1] by
:func:`medfm.data.io.read_radiograph` (16-bit and MONOCHROME1 handled there) and mapped to [-1, 1]; CT volumes
are clipped to a HU window (default [-1000, 1000]) and mapped to [-1, 1]; MR volumes are min-max scaled
(0.5-99.5 percentiles). NaNs are replaced by the image minimum (background) with a warning; an all-NaN image is a
DataError. Arrays: 2D ``(H, W)``, 3D ``(X, Y, Z)`` (NIfTI voxel order), float32.

Sizes that are not multiples of the model's factor are padded with -1 (:func:`pad_to_multiple`), and the
padding is recorded so :func:`crop_padding` restores the original size after decoding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfm.core.errors import DataError, UsageError

log = logging.getLogger(__name__)

CT_PATHOLOGIES = ("tumour", "cyst", "nodule", "effusion")


@dataclass
class Item:
    """One image ready for the model.

    Attributes:
        id: item id (file stem or phantom id).
        array: float32 (H, W) or (X, Y, Z) in [-1, 1].
        labels: label name -> 0/1 (missing labels absent).
        split: "train", "val" or "test".
        meta: path, spacing (mm), affine (4x4 list), modality, original dtype/bits.
    """

    id: str
    array: np.ndarray
    labels: dict[str, int] = field(default_factory=dict)
    split: str = "train"
    meta: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------------
# Intensity


def clean_nans(array: np.ndarray, name: str) -> np.ndarray:
    """Replace NaN/inf by the finite minimum (background); DataError when nothing is finite."""
    array = np.asarray(array, dtype=np.float32)
    finite = np.isfinite(array)
    if finite.all():
        return array
    if not finite.any():
        raise DataError(f"{name}: every value is NaN or infinite; the image cannot be encoded")
    log.warning("%s: %d non-finite values replaced by the image minimum", name, int((~finite).sum()))
    out = array.copy()
    out[~finite] = float(array[finite].min())
    return out


def unit_to_model(array01: np.ndarray) -> np.ndarray:
    """[0, 1] -> [-1, 1]."""
    return (np.asarray(array01, dtype=np.float32) * 2.0 - 1.0).astype(np.float32)


def model_to_unit(array: np.ndarray) -> np.ndarray:
    """[-1, 1] -> [0, 1], clipped."""
    return np.clip((np.asarray(array, dtype=np.float32) + 1.0) / 2.0, 0.0, 1.0)


def normalize_volume(array: np.ndarray, modality: str, window: tuple[float, float] = (-1000.0, 1000.0)) -> np.ndarray:
    """CT: clip ``window`` (HU) -> [-1, 1]; MR/other: 0.5-99.5 percentile min-max -> [-1, 1]."""
    array = np.asarray(array, dtype=np.float32)
    if modality == "ct":
        lo, hi = window
    else:
        lo, hi = (float(v) for v in np.percentile(array, [0.5, 99.5]))
        if hi <= lo:
            hi = lo + 1.0
    return unit_to_model(np.clip((array - lo) / (hi - lo), 0.0, 1.0))


def volume_to_hu(array: np.ndarray, window: tuple[float, float] = (-1000.0, 1000.0)) -> np.ndarray:
    """Inverse of the CT normalisation: [-1, 1] -> HU inside ``window``."""
    lo, hi = window
    return model_to_unit(array) * (hi - lo) + lo


# ----------------------------------------------------------------------------------------------------------------------
# Geometry


def pad_to_multiple(array: np.ndarray, multiple: int, value: float = -1.0) -> tuple[np.ndarray, list[list[int]]]:
    """Pad every axis of ``array`` (spatial only) to a multiple of ``multiple``, centred, with ``value``.

    Returns:
        ``(padded, pads)`` with ``pads[i] = [before, after]`` per axis, for :func:`crop_padding`.
    """
    pads = []
    for s in array.shape:
        total = (-s) % multiple
        pads.append([total // 2, total - total // 2])
    if not any(b or a for b, a in pads):
        return array, pads
    return np.pad(array, pads, mode="constant", constant_values=value), pads


def crop_padding(array: np.ndarray, pads: list[list[int]]) -> np.ndarray:
    """Undo :func:`pad_to_multiple` on the last ``len(pads)`` axes."""
    lead = array.ndim - len(pads)
    sl = [slice(None)] * lead + [slice(b, array.shape[lead + i] - a) for i, (b, a) in enumerate(pads)]
    return array[tuple(sl)]


def fit_to(array: np.ndarray, shape: tuple[int, ...], value: float = -1.0) -> np.ndarray:
    """Centre-crop or pad (with ``value``) ``array`` to ``shape``."""
    out = array
    for axis, want in enumerate(shape):
        have = out.shape[axis]
        if have > want:
            start = (have - want) // 2
            out = np.take(out, np.arange(start, start + want), axis=axis)
        elif have < want:
            pad = [[0, 0]] * out.ndim
            pad[axis] = [(want - have) // 2, want - have - (want - have) // 2]
            out = np.pad(out, pad, mode="constant", constant_values=value)
    return out


def resize_2d(array: np.ndarray, size: int) -> np.ndarray:
    """Resize a (H, W) image so its longer side is ``size`` (antialiased), then centre-pad/crop to size x size."""
    from skimage.transform import resize

    h, w = array.shape
    scale = size / max(h, w)
    if scale != 1.0:
        array = resize(array, (max(1, round(h * scale)), max(1, round(w * scale))), order=3, anti_aliasing=scale < 1,
                       preserve_range=True).astype(np.float32)  # fmt: skip
    return fit_to(array, (size, size))


# ----------------------------------------------------------------------------------------------------------------------
# Sources


def _split(i: int, n: int, val_fraction: float) -> str:
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 and n > 1 else 0
    return "val" if i >= n - n_val else "train"


def cxr_phantoms(n: int, size: int, seed: int, label: str | None = None, val_fraction: float = 0.2) -> list[Item]:
    """2D chest X-ray phantoms at ``size`` x ``size``; labels = rendered findings (``present``).

    With ``label`` set, that finding's prevalence is raised to 0.5 so downstream AUROC is well estimated.
    """
    from medfm.data.phantoms.cxr import FINDINGS, generate_cxr

    overrides: dict[str, Any] = {}
    if label is not None:
        if label not in FINDINGS:
            raise UsageError(
                f"--data.label {label!r} is not a CXR phantom finding; choose one of {', '.join(FINDINGS)}"
            )
        if label not in ("No Finding", "Lung Opacity", "Lung Lesion"):
            overrides["prevalence"] = {label: 0.5}
    batch = generate_cxr(n, seed=seed, size=size, **overrides)
    items = []
    for i in range(len(batch.images)):
        labels = {f: int(batch.present[i, j]) for j, f in enumerate(FINDINGS)}
        rec = batch.records[i] if batch.records else {}
        items.append(Item(str(rec.get("id", f"cxr_{i:05d}")), unit_to_model(batch.images[i]), labels,
                          _split(i, len(batch.images), val_fraction),
                          {"modality": "xray", "source": "phantom:cxr", "site": rec.get("site")}))  # fmt: skip
    return items


def ct_phantoms(n: int, shape: list[int], seed: int, window: tuple[float, float], val_fraction: float = 0.2,
                label: str | None = None) -> list[Item]:  # fmt: skip
    """3D CT phantoms ``(X, Y, Z)`` normalised with the CT window; labels = pathologies present."""
    from medfm.data.phantoms.config import CTPhantomConfig
    from medfm.data.phantoms.ct3d import generate_ct_patient

    if label is not None and label not in CT_PATHOLOGIES:
        raise UsageError(f"--data.label {label!r} is not a CT phantom pathology; choose one of {CT_PATHOLOGIES}")
    fov = np.array([384.0, 384.0, 624.0])
    spacing = [float(v) for v in fov / np.asarray(shape, dtype=float)]
    kwargs: dict[str, Any] = {"n": n, "seed": seed, "shape": list(shape), "spacing": spacing}
    cfg = CTPhantomConfig(**kwargs)
    if label is not None:
        setattr(cfg.pathology, label, 0.5)
    items = []
    for i in range(n):
        p = generate_ct_patient(cfg, i)
        labels = {k: int(v) for k, v in p.metadata["present"].items()}
        items.append(Item(p.id, normalize_volume(p.image, "ct", window), labels, _split(i, n, val_fraction),
                          {"modality": "ct", "spacing": list(p.spacing), "source": "phantom:ct"}))  # fmt: skip
    return items


def _guess_modality(path: Path, modality: str) -> str:
    if modality != "auto":
        return modality
    return "ct"  # volumes without a declared modality are treated as CT (HU window); override with --data.modality


def load_file(path: Path, modality: str = "auto", window: tuple[float, float] = (-1000.0, 1000.0),
              dims: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    """Load one image file/folder to a normalised array and its metadata (spacing, affine, bits, photometric)."""
    from medfm.data.io import Image2D, load_image

    img = load_image(path)
    if isinstance(img, Image2D):
        arr = clean_nans(img.array, str(path))
        meta = {"path": str(path), "modality": "xray", "bits": img.bits, "photometric": img.photometric,
                "spacing": list(img.spacing) if img.spacing else None}  # fmt: skip
        out = unit_to_model(arr)
    else:
        raw = np.asarray(img.array, dtype=np.float32)
        if raw.ndim == 4 and raw.shape[-1] == 1:
            raw = raw[..., 0]
        if raw.ndim == 2:
            raw = raw[:, :, None]
        if raw.ndim != 3:
            raise DataError(f"{path}: expected a 3D volume, got shape {raw.shape}")
        raw = clean_nans(raw, str(path))
        mod = _guess_modality(path, modality)
        meta = {"path": str(path), "modality": mod, "spacing": list(img.spacing),
                "affine": np.asarray(img.affine).tolist(), "dtype": str(img.array.dtype)}  # fmt: skip
        out = normalize_volume(raw, mod, window)
        if dims == 2 and out.shape[2] == 1:
            out = out[:, :, 0]
    if dims is not None and out.ndim != dims:
        raise DataError(f"{path}: a {out.ndim}D image was given to a {dims}D model")
    return out.astype(np.float32), meta


SUPPORTED = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz")


def list_files(folder: Path) -> list[Path]:
    """Image files in ``folder`` (recursive), sorted; DICOM files without suffix are included."""
    from medfm.data.io import is_dicom

    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    return [p for p in files if p.name.lower().endswith(SUPPORTED) or is_dicom(p)]


def _manifest_items(path: Path) -> list[tuple[str, Path, dict[str, int], str | None]]:
    from medfm.data.manifests import ManifestColumns, manifest_format, read_datalist, read_report_manifest

    if manifest_format(path) == "datalist":
        dl = read_datalist(path)
        rows = []
        for r in dl.records:
            md = r.metadata or {}
            present = md.get("present", {}) if isinstance(md.get("present"), dict) else {}
            rows.append((r.id, r.image, {k: int(bool(v)) for k, v in present.items()}, r.split))
        return rows
    records = read_report_manifest(path, ManifestColumns(required=("image",)))
    rows = []
    for r in records:
        if r.image is None:
            continue
        labels = {k: int(v == 1 or v == -1) for k, v in r.labels.items() if v is not None}
        rows.append((r.id, r.image, labels, r.split))
    return rows


def load_items(source: str, dims: int, *, n: int = 64, size: int = 64, phantom_shape: list[int] | None = None,
               modality: str = "auto", window: tuple[float, float] = (-1000.0, 1000.0), seed: int = 0,
               val_fraction: float = 0.2, label: str | None = None, limit: int | None = None,
               resize: bool = True) -> list[Item]:  # fmt: skip
    """Items of a data source (see :class:`~medfm.methods.medvae.config.DataOptions`) for a ``dims``-D model.

    2D files are resized to ``size`` only when ``resize`` (training/evaluation); ``encode`` keeps native sizes.
    """
    count = n if limit is None else min(n, limit)
    if source.startswith("phantom:"):
        kind = source.split(":", 1)[1]
        if kind == "cxr":
            if dims != 2:
                raise UsageError("phantom:cxr gives 2D images; use a 2D preset or --data.source phantom:ct")
            return cxr_phantoms(count, size, seed, label, val_fraction)
        if kind == "ct":
            if dims != 3:
                raise UsageError("phantom:ct gives 3D volumes; use a 3D preset or --data.source phantom:cxr")
            return ct_phantoms(count, phantom_shape or [48, 48, 48], seed, window, val_fraction, label)
        raise UsageError(f"unknown phantom source {source!r}; use phantom:cxr or phantom:ct")
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: data source does not exist (a folder, a manifest, phantom:cxr or phantom:ct)")
    if path.is_dir() and not (dims == 3 and any(p.suffix.lower() == ".dcm" for p in path.iterdir())):
        rows = [(p.name.split(".")[0], p, {}, None) for p in list_files(path)]
    elif path.is_dir():
        rows = [(path.name, path, {}, None)]  # one DICOM series folder
    else:
        rows = _manifest_items(path)
    if not rows:
        raise DataError(f"{path}: no images found (supported: {', '.join(SUPPORTED)}, DICOM)")
    if limit is not None:
        rows = rows[:limit]
    items = []
    for i, (item_id, file, labels, split) in enumerate(rows):
        arr, meta = load_file(Path(file), modality, window, dims)
        if dims == 2 and resize:
            arr = resize_2d(arr, size)
        items.append(Item(item_id, arr, labels, split or _split(i, len(rows), val_fraction), meta))
    return items


def split_items(items: list[Item], split: str) -> list[Item]:
    """Items of one split; the whole list when that split is empty (tiny smoke runs)."""
    chosen = [it for it in items if (it.split in ("val", "test")) == (split in ("val", "test"))]
    return chosen or items


def binary_labels(items: list[Item], label: str) -> np.ndarray:
    """(N,) int array of ``label``; DataError naming the first item without it."""
    missing = [it.id for it in items if label not in it.labels]
    if missing:
        raise DataError(f"item {missing[0]} has no label {label!r} (available: {sorted(items[0].labels)})")
    return np.array([it.labels[label] for it in items], dtype=np.int64)
