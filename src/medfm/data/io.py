"""Medical image I/O: NIfTI, DICOM series, 2D radiographs; windowing and resampling.

Arrays follow one convention throughout medfm: 3D volumes are ``(X, Y, Z)`` in the NIfTI voxel order
with ``spacing`` in mm per axis and a 4x4 ``affine`` (voxel -> RAS+ world, mm); 2D images are ``(H, W)``.
Corrupt or truncated files raise :class:`~medfm.core.errors.DataError` naming the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfm.core.errors import DataError
from medfm.core.files import atomic_path

log = logging.getLogger(__name__)


@dataclass
class Volume:
    """A 3D image: ``array`` (X, Y, Z), ``spacing`` (mm per axis), ``affine`` (4x4 voxel->world, mm)."""

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    path: Path | None = None
    meta: dict[str, Any] | None = None


def spacing_affine(spacing: tuple[float, float, float], origin: tuple[float, float, float] = (0.0, 0.0, 0.0)):
    """Diagonal affine for axis-aligned voxels of the given spacing (mm)."""
    aff = np.diag([*map(float, spacing), 1.0])
    aff[:3, 3] = origin
    return aff


def save_nifti(
    path: str | Path,
    array: np.ndarray,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    affine: np.ndarray | None = None,
) -> Path:
    """Write ``array`` (X, Y, Z) as NIfTI (``.nii`` or ``.nii.gz``) atomically; dtype is kept."""
    import nibabel as nib

    aff = spacing_affine(spacing) if affine is None else np.asarray(affine, dtype=float)
    img = nib.Nifti1Image(np.asarray(array), aff)
    img.header.set_zooms(tuple(float(s) for s in spacing)[: np.asarray(array).ndim])
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    with atomic_path(path) as tmp:
        real_tmp = tmp.with_name(tmp.name.removesuffix(tmp.suffix) + suffix) if suffix else tmp
        nib.save(img, str(real_tmp))
        real_tmp.replace(tmp)
    return path


def load_nifti(path: str | Path, dtype: Any = None) -> Volume:
    """Read a NIfTI file into a :class:`Volume` (array in the file's voxel order)."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file does not exist")
    try:
        img = nib.load(str(path))
        arr = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt/truncated files
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if dtype is not None:
        arr = arr.astype(dtype)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return Volume(arr, zooms, np.asarray(img.affine), path)


# ----------------------------------------------------------------------------------------------------------------------
# Generic helpers

NIFTI_SUFFIXES = (".nii", ".nii.gz")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


def is_nifti(path: str | Path) -> bool:
    name = Path(path).name.lower()
    return name.endswith(NIFTI_SUFFIXES)


def is_dicom(path: str | Path) -> bool:
    """True when ``path`` is a file with the DICOM preamble magic (``DICM`` at byte 128) or a .dcm suffix."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            if fh.read(4) == b"DICM":
                return True
    except OSError:
        return False
    return path.suffix.lower() in DICOM_SUFFIXES


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# ----------------------------------------------------------------------------------------------------------------------
# DICOM


def _dcmread(path: Path, stop_before_pixels: bool = False):
    import pydicom

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels)
    except Exception as exc:  # InvalidDicomError, EOFError, OSError, ...
        raise DataError(f"{path}: not a readable DICOM file ({_first_line(exc)})") from None


def _pixels(ds: Any, path: Path) -> np.ndarray:
    """Decoded stored pixel values of a dataset, with one clear error for missing or truncated pixel data."""
    if "PixelData" not in ds:
        raise DataError(f"{path}: DICOM file has no pixel data (SOP class {ds.get('SOPClassUID', '?')})")
    try:
        return ds.pixel_array
    except RuntimeError as exc:
        from medfm.core.errors import MissingDependencyError

        if "plugin" in str(exc).lower() or "missing" in str(exc).lower():
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
            raise MissingDependencyError(
                f"{path}: cannot decode transfer syntax {syntax}; install a decoder with: "
                "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"
            ) from None
        raise DataError(f"{path}: cannot decode DICOM pixel data ({_first_line(exc)})") from None
    except Exception as exc:  # truncated pixel data raises ValueError
        raise DataError(f"{path}: cannot decode DICOM pixel data ({_first_line(exc)})") from None


def _dicom_spacing(ds: Any) -> tuple[float, float] | None:
    """(row, column) spacing in mm from PixelSpacing or ImagerPixelSpacing; None when absent or zero."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(key)
        if value is not None and len(value) == 2:
            row, col = float(value[0]), float(value[1])
            if row > 0 and col > 0:
                return row, col
    return None


def read_dicom_pixels(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one single-frame DICOM image in modality units (HU for CT: the modality LUT / rescale is applied).

    Returns:
        ``(array, meta)``: array float32 (H, W) in modality units; meta has ``modality``, ``photometric``,
        ``bits`` (BitsStored), ``spacing`` ((row, col) mm or None), ``window`` ((center, width) from the file or
        None).
    """
    from pydicom.pixels import apply_modality_lut

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file does not exist")
    ds = _dcmread(path)
    arr = _pixels(ds, path)
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a single-frame greyscale DICOM image, got pixel array shape {arr.shape}")
    arr = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    window = None
    if "WindowCenter" in ds and "WindowWidth" in ds:
        c, w = ds.WindowCenter, ds.WindowWidth
        window = (float(c[0] if ds["WindowCenter"].VM > 1 else c), float(w[0] if ds["WindowWidth"].VM > 1 else w))
    meta = {
        "modality": str(ds.get("Modality", "")),
        "photometric": str(ds.get("PhotometricInterpretation", "")),
        "bits": int(ds.get("BitsStored", arr.dtype.itemsize * 8)),
        "spacing": _dicom_spacing(ds),
        "window": window,
    }
    return arr, meta


def _voi_output_range(ds: Any) -> tuple[float, float]:
    """Output range of pydicom's ``apply_voi_lut`` for this dataset (PS3.3 C.11.2; mirrors pydicom's rules)."""
    if ds.get("VOILUTSequence"):
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if ds.get("ModalityLUTSequence"):
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        lo, hi = 0.0, float(2**bits - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2 ** int(ds.BitsStored) - 1)
    else:
        lo, hi = float(-(2 ** (int(ds.BitsStored) - 1))), float(2 ** (int(ds.BitsStored) - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
    return lo, hi


@dataclass
class Image2D:
    """A 2D greyscale image ready for a model.

    Attributes:
        array: float32 (H, W) in [0, 1], 1 = bright on a display (MONOCHROME1 already inverted).
        spacing: (row, column) pixel spacing in mm, or None when the file does not say.
        photometric: DICOM photometric interpretation, or the PIL mode for PNG/JPEG.
        bits: bits per stored pixel in the file (8 or 16 for PNG/JPEG, BitsStored for DICOM).
        path: the file it came from.
        meta: extra facts (``modality``, ``normalization``: "voi_window" | "voi_lut" | "minmax" | "bits").
    """

    array: np.ndarray
    spacing: tuple[float, float] | None = None
    photometric: str = "MONOCHROME2"
    bits: int = 8
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _read_dicom_2d(path: Path, voi: bool = True) -> Image2D:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = _dcmread(path)
    stored = _pixels(ds, path)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if stored.ndim != 2 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DataError(
            f"{path}: expected a single-frame greyscale radiograph, got shape {stored.shape} "
            f"and photometric interpretation {photometric}"
        )
    has_voi = bool(ds.get("VOILUTSequence")) or ("WindowCenter" in ds and "WindowWidth" in ds)
    if voi and has_voi:
        try:
            # VOI applies to the modality LUT output; pydicom handles the rescale inside apply_voi_lut's range rules.
            values = apply_voi_lut(apply_modality_lut(stored, ds), ds, index=0).astype(np.float64)
        except Exception as exc:
            raise DataError(f"{path}: invalid VOI LUT / window in DICOM header ({_first_line(exc)})") from None
        lo, hi = _voi_output_range(ds)
        norm = "voi_lut" if ds.get("VOILUTSequence") else "voi_window"
        arr = (values - lo) / max(hi - lo, 1e-12)
    else:
        values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        arr = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
        norm = "minmax"
    arr = np.clip(arr, 0.0, 1.0)
    if photometric == "MONOCHROME1":
        arr = 1.0 - arr
    meta = {
        "modality": str(ds.get("Modality", "")),
        "normalization": norm,
        "view_position": str(ds.get("ViewPosition", "")) or None,
    }
    return Image2D(arr.astype(np.float32), _dicom_spacing(ds), photometric, int(ds.get("BitsStored", 16)), path, meta)


def _read_raster(path: Path) -> Image2D:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            dpi = img.info.get("dpi")
            if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                arr = np.asarray(img, dtype=np.float64) / 65535.0
                bits = 16
            elif mode == "I":
                raw = np.asarray(img, dtype=np.float64)
                bits = 16 if raw.max(initial=0) <= 65535 and raw.min(initial=0) >= 0 else 32
                arr = raw / (65535.0 if bits == 16 else max(raw.max(), 1.0))
            elif mode == "F":
                arr = np.asarray(img, dtype=np.float64)
                bits = 32
            else:
                grey = img.convert("L") if mode != "L" else img
                arr = np.asarray(grey, dtype=np.float64) / 255.0
                bits = 8
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image file ({_first_line(exc)})") from None
    spacing = None
    if dpi and dpi[0] and dpi[1] and float(dpi[0]) > 1 and float(dpi[1]) > 1:
        spacing = (25.4 / float(dpi[1]), 25.4 / float(dpi[0]))  # (row, col) mm from (x, y) dots per inch
    arr = np.clip(arr, 0.0, 1.0).astype(np.float32)
    return Image2D(arr, spacing, mode, bits, path, {"normalization": "bits"})


def read_radiograph(path: str | Path, voi: bool = True) -> Image2D:
    """Read a 2D radiograph (DICOM, PNG, JPEG, TIFF) into a float32 (H, W) array in [0, 1].

    DICOM: the modality LUT is applied, then the first VOI LUT or window from the header (``voi=True``), scaled
    by the VOI output range; without VOI the modality values are min-max scaled. MONOCHROME1 is inverted so
    1 is always bright. PNG/JPEG: 8-bit / 255, 16-bit / 65535; colour is converted to luminance.

    Raises:
        DataError: the file is missing, corrupt, truncated or not a greyscale single-frame image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file does not exist")
    if path.suffix.lower() in RASTER_SUFFIXES and not is_dicom(path):
        return _read_raster(path)
    return _read_dicom_2d(path, voi=voi)  # DICOM by magic or suffix; anything else fails there with DataError


def save_png(path: str | Path, array: np.ndarray, bits: int = 8) -> Path:
    """Write a 2D image (H, W) as an 8- or 16-bit greyscale PNG, atomically.

    Args:
        path: destination (.png).
        array: float in [0, 1] (values outside are clipped) scaled to the full bit range, or an unsigned integer
            array written as is (uint8 with ``bits=8``, uint8/uint16 with ``bits=16``).
        bits: 8 or 16.
    """
    from PIL import Image

    from medfm.core.errors import UsageError

    if bits not in (8, 16):
        raise UsageError(f"save_png: bits must be 8 or 16, got {bits}")
    arr = np.asarray(array)
    if arr.ndim != 2:
        raise UsageError(f"save_png: expected a 2D (H, W) array, got shape {arr.shape}")
    top = 255 if bits == 8 else 65535
    if np.issubdtype(arr.dtype, np.floating):
        out = np.rint(np.clip(np.nan_to_num(arr, nan=0.0), 0.0, 1.0) * top)
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() > top):
            raise UsageError(f"save_png: integer values must lie in [0, {top}] for {bits}-bit PNG")
        out = arr
    elif arr.dtype == bool:
        out = arr.astype(np.uint8) * top
    else:
        raise UsageError(f"save_png: unsupported dtype {arr.dtype}")
    img = Image.fromarray(np.ascontiguousarray(out.astype(np.uint8 if bits == 8 else np.uint16)))
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def load_dicom_series(folder: str | Path | list[str | Path], series_uid: str | None = None) -> Volume:
    """Read a DICOM series (one folder of single-frame slices, or a list of files) into a :class:`Volume`.

    Slices are sorted by their position along the slice normal (ImagePositionPatient projected on the cross
    product of the ImageOrientationPatient cosines). The array is ``(X, Y, Z)`` = (columns, rows, slices) in
    modality units (HU for CT) as float32; ``affine`` maps voxels to RAS+ world mm (DICOM's LPS with x and y
    negated, as nibabel and dcm2niix do); ``spacing`` is (column spacing, row spacing, slice step) in mm.

    Args:
        folder: folder holding the series' files (hidden files and DICOMDIR are skipped), or explicit files.
        series_uid: SeriesInstanceUID to read when the folder holds several series.

    Raises:
        DataError: naming the file that is not DICOM, lacks geometry, or does not fit the series.
    """
    from pydicom.pixels import apply_modality_lut

    if isinstance(folder, list | tuple):
        files = [Path(f) for f in folder]
        where = Path(files[0]).parent if files else Path(".")
    else:
        where = Path(folder)
        if not where.is_dir():
            raise DataError(f"{where}: DICOM series folder does not exist")
        files = sorted(
            p for p in where.iterdir() if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR"
        )
    if not files:
        raise DataError(f"{where}: no DICOM files found")
    headers = []
    skipped: list[str] = []
    for f in files:
        try:
            headers.append((f, _dcmread(f, stop_before_pixels=True)))
        except DataError as exc:
            if isinstance(folder, list | tuple):  # files named explicitly must all be DICOM
                raise
            skipped.append(f"{f.name} ({str(exc).split('(', 1)[-1].rstrip(')')})")
    if skipped:  # clinical exports carry README/.txt/thumbnail files beside the slices
        if not headers:
            raise DataError(f"{where}: no readable DICOM files among {len(files)} (e.g. {skipped[0]})")
        log.warning("%s: skipped %d non-DICOM file(s): %s", where, len(skipped), "; ".join(skipped[:5]))
    series: dict[str, list[tuple[Path, Any]]] = {}
    for f, ds in headers:
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((f, ds))
    if series_uid is not None:
        if series_uid not in series:
            raise DataError(f"{where}: no series {series_uid}; found {', '.join(sorted(series))}")
        items = series[series_uid]
    elif len(series) > 1:
        raise DataError(f"{where}: holds {len(series)} series ({', '.join(sorted(series))}); pass series_uid")
    else:
        items = next(iter(series.values()))
    for f, ds in items:
        for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if key not in ds:
                raise DataError(f"{f}: DICOM slice has no {key}; cannot place it in a volume")
    iop = np.asarray(items[0][1].ImageOrientationPatient, dtype=float)
    row_cos, col_cos = iop[:3], iop[3:]
    normal = np.cross(row_cos, col_cos)
    for f, ds in items[1:]:
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, dtype=float), iop, atol=1e-4):
            raise DataError(f"{f}: slice orientation differs from the rest of the series")
    items = sorted(items, key=lambda it: float(np.dot(np.asarray(it[1].ImagePositionPatient, dtype=float), normal)))
    positions = np.asarray([np.asarray(ds.ImagePositionPatient, dtype=float) for _f, ds in items])
    row_sp, col_sp = (float(v) for v in items[0][1].PixelSpacing)
    if len(items) > 1:
        gaps = np.diff(positions @ normal)
        if np.any(np.abs(gaps) < 1e-6):
            dup = items[int(np.argmin(np.abs(gaps))) + 1][0]
            raise DataError(f"{dup}: two slices share the same position; the folder mixes acquisitions")
        if np.ptp(gaps) > 0.01 * abs(float(np.mean(gaps))) + 1e-3:
            log.warning("%s: uneven slice gaps (%.3f..%.3f mm); using the mean", where, gaps.min(), gaps.max())
        step = (positions[-1] - positions[0]) / (len(items) - 1)
    else:
        thick = float(items[0][1].get("SpacingBetweenSlices", items[0][1].get("SliceThickness", 1.0)) or 1.0)
        step = normal * thick
    slices = []
    shape = None
    for f, _hdr in items:
        ds = _dcmread(f)
        arr = _pixels(ds, f)
        if arr.ndim != 2:
            raise DataError(f"{f}: expected a single-frame slice, got pixel array shape {arr.shape}")
        if shape is None:
            shape = arr.shape
        elif arr.shape != shape:
            raise DataError(f"{f}: slice shape {arr.shape} differs from the series' {shape}")
        slices.append(np.asarray(apply_modality_lut(arr, ds), dtype=np.float32))
    data = np.stack(slices, axis=-1)  # (rows, cols, Z)
    data = np.ascontiguousarray(np.transpose(data, (1, 0, 2)))  # (X=cols, Y=rows, Z)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_sp  # moving along a row = increasing column index
    lps[:3, 1] = col_cos * row_sp
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    spacing = (col_sp, row_sp, float(np.linalg.norm(step)))
    first = items[0][1]
    meta = {
        "modality": str(first.get("Modality", "")),
        "series_uid": str(first.get("SeriesInstanceUID", "")),
        "n_slices": len(items),
        "files": [str(f) for f, _ in items],
    }
    return Volume(data, spacing, affine, where, meta)


# ----------------------------------------------------------------------------------------------------------------------
# CT windowing

#: Named CT windows as (center, width) in HU.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (40.0, 400.0),
    "abdomen": (40.0, 400.0),
    "liver": (60.0, 160.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}


def window(array: np.ndarray, center: float | str, width: float | None = None) -> np.ndarray:
    """Map HU to [0, 1] through a linear window: ``clip((x - (center - width / 2)) / width, 0, 1)``.

    Args:
        array: any shape, in HU.
        center: window center (HU) or a preset name from :data:`WINDOW_PRESETS` (lung, mediastinum, bone, ...).
        width: window width (HU); omitted with a preset.

    Returns:
        float32 array of the same shape in [0, 1].
    """
    from medfm.core.errors import UsageError

    if isinstance(center, str):
        if center not in WINDOW_PRESETS:
            raise UsageError(f"unknown CT window {center!r}; presets: {', '.join(WINDOW_PRESETS)}")
        if width is not None:
            raise UsageError("window(): give either a preset name or center and width, not both")
        center, width = WINDOW_PRESETS[center]
    if width is None or width <= 0:
        raise UsageError(f"window(): width must be a positive number of HU, got {width}")
    lo = float(center) - float(width) / 2.0
    return np.clip((np.asarray(array, dtype=np.float32) - lo) / float(width), 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# Resampling


def resample(volume: Volume, spacing: float | tuple[float, float, float], is_label: bool = False) -> Volume:
    """Resample a volume to a target voxel spacing with SimpleITK (orientation and field of view kept).

    The new grid covers the same physical extent (voxel edges aligned, as TorchIO and nnU-Net do): the shape
    is ``round(old_shape * old_spacing / new_spacing)``. Points within half a voxel outside the old grid take
    the nearest voxel's value (no zero padding at the border).

    Args:
        volume: the input; its ``affine`` (RAS+, mm) defines the world geometry. Array (X, Y, Z).
        spacing: target spacing in mm, one number for isotropic or one per axis (X, Y, Z).
        is_label: nearest-neighbour interpolation and the input dtype kept (label maps); otherwise trilinear,
            float32 output.

    Returns:
        A new :class:`Volume` whose ``affine`` and ``spacing`` describe the resampled grid.
    """
    from medfm.core.errors import UsageError, require

    sitk = require("SimpleITK", extra="imaging")
    target = np.array([float(spacing)] * 3 if np.isscalar(spacing) else [float(s) for s in spacing])  # type: ignore[arg-type]
    if target.shape != (3,) or target.min() <= 0:
        raise UsageError(f"resample(): spacing must be one or three positive numbers (mm), got {spacing}")
    arr = np.asarray(volume.array)
    if arr.ndim != 3:
        raise UsageError(f"resample(): expected a 3D (X, Y, Z) array, got shape {arr.shape}")
    if is_label and arr.dtype == bool:
        arr = arr.astype(np.uint8)
    src = arr if is_label else arr.astype(np.float32)
    lps = _RAS_TO_LPS @ np.asarray(volume.affine, dtype=np.float64)
    old_sp = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / old_sp
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(src, (2, 1, 0))))  # sitk index (x, y, z)
    try:
        img.SetSpacing([float(v) for v in old_sp])
        img.SetOrigin([float(v) for v in lps[:3, 3]])
        img.SetDirection([float(v) for v in direction.ravel()])
    except RuntimeError as exc:
        where = volume.path or "volume"
        raise DataError(f"{where}: affine is not a rotation times spacing; cannot resample ({exc})") from None
    size = np.maximum(1, np.rint(np.asarray(arr.shape) * old_sp / target)).astype(int)
    origin = lps[:3, 3] + direction @ (0.5 * (target - old_sp))
    f = sitk.ResampleImageFilter()
    f.SetOutputSpacing([float(v) for v in target])
    f.SetSize([int(v) for v in size])
    f.SetOutputOrigin([float(v) for v in origin])
    f.SetOutputDirection([float(v) for v in direction.ravel()])
    f.SetInterpolator(sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear)
    f.SetUseNearestNeighborExtrapolator(True)
    f.SetDefaultPixelValue(0)
    f.SetOutputPixelType(img.GetPixelID())
    new = np.transpose(sitk.GetArrayFromImage(f.Execute(img)), (2, 1, 0))
    new_lps = np.eye(4)
    new_lps[:3, :3] = direction * target
    new_lps[:3, 3] = origin
    meta = dict(volume.meta or {})
    meta["resampled_from"] = tuple(float(v) for v in old_sp)
    spacing_out = (float(target[0]), float(target[1]), float(target[2]))
    return Volume(np.ascontiguousarray(new), spacing_out, _RAS_TO_LPS @ new_lps, volume.path, meta)


_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse


# ----------------------------------------------------------------------------------------------------------------------
# Dispatch


def load_volume(path: str | Path, dtype: Any = None) -> Volume:
    """A 3D volume from a NIfTI file or a DICOM series folder (wherever medfm reads NIfTI it reads DICOM series).

    Raises:
        DataError: a missing path, or a file that is neither NIfTI nor a DICOM series folder.
    """
    path = Path(path)
    if path.is_dir():
        vol = load_dicom_series(path)
        if dtype is not None:
            vol.array = vol.array.astype(dtype, copy=False)
        return vol
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    if is_nifti(path):
        return load_nifti(path, dtype=dtype)
    raise DataError(f"{path}: not a 3D volume; expected a .nii/.nii.gz file or a DICOM series folder")


def load_image(path: str | Path) -> Volume | Image2D:
    """Load any supported image: NIfTI -> Volume, DICOM folder -> Volume, DICOM file / PNG / JPEG / TIFF -> Image2D.

    The format is chosen from the suffix, and for suffix-less files from the DICOM magic bytes.
    """
    path = Path(path)
    if path.is_dir():
        return load_dicom_series(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    if is_nifti(path):
        return load_nifti(path)
    if path.suffix.lower() in RASTER_SUFFIXES or is_dicom(path):
        return read_radiograph(path)
    raise DataError(f"{path}: unknown image format; expected .nii/.nii.gz, a DICOM file or folder, .png, .jpg, .tif")
