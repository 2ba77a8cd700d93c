"""medfm.data.io: round trips through every reader/writer, real DICOM files, series geometry, windowing,
resampling, and one clear DataError per corrupt input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from medfm.core.errors import DataError, UsageError
from medfm.data import io

pydicom = pytest.importorskip("pydicom")


# ----------------------------------------------------------------------------------------------------------------------
# Helpers


def write_ct_slice(path: Path, pixels: np.ndarray, position, orientation, pixel_spacing, *, series_uid: str,
                   thickness: float = 2.5, instance: int = 1, intercept: float = -1024.0) -> Path:  # fmt: skip
    """Write one CT slice (stored int16 values, rescale to HU) with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.3.4"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    ds.SliceThickness = thickness
    ds.RescaleSlope = 1.0
    ds.RescaleIntercept = intercept
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.int16)).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def make_series(folder: Path, n: int = 5, rows: int = 6, cols: int = 4, spacing=(0.7, 0.5), step: float = 2.5,
                orientation=(1, 0, 0, 0, 1, 0), origin=(-10.0, 20.0, 30.0), uid: str = "1.2.3.4.5") -> Path:  # fmt: skip
    """Series whose slice k holds stored value 1000 + 10*k + pixel index; files named in shuffled order."""
    folder.mkdir(parents=True, exist_ok=True)
    row_cos, col_cos = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row_cos, col_cos)
    names = np.random.default_rng(0).permutation(n)
    for k in range(n):
        pixels = 1000 + 10 * k + np.arange(rows * cols).reshape(rows, cols)
        pos = np.asarray(origin) + k * step * normal
        write_ct_slice(folder / f"img{names[k]:03d}.dcm", pixels, pos, orientation, spacing, series_uid=uid,
                       thickness=step, instance=int(names[k]) + 1)  # fmt: skip
    return folder


# ----------------------------------------------------------------------------------------------------------------------
# NIfTI


@pytest.mark.parametrize("name", ["vol.nii", "vol.nii.gz"])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8, np.int16])
def test_nifti_round_trip(tmp_path, name, dtype):
    arr = (np.random.default_rng(1).random((7, 5, 3)) * 100).astype(dtype)
    aff = io.spacing_affine((0.8, 0.9, 2.5), origin=(1.0, -2.0, 3.0))
    path = io.save_nifti(tmp_path / name, arr, spacing=(0.8, 0.9, 2.5), affine=aff)
    vol = io.load_nifti(path)
    assert vol.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_allclose(vol.spacing, (0.8, 0.9, 2.5), rtol=1e-6)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-5)
    assert not list(tmp_path.glob(".*tmp*")), "atomic write left a temporary file"


def test_truncated_nifti_raises_data_error_naming_file(tmp_path):
    path = io.save_nifti(tmp_path / "cut.nii.gz", np.random.default_rng(0).random((16, 16, 16)).astype(np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=re.escape("cut.nii.gz")):
        io.load_nifti(path)
    raw = io.save_nifti(tmp_path / "cut.nii", np.zeros((16, 16, 16), np.float32))
    raw.write_bytes(raw.read_bytes()[:600])
    with pytest.raises(DataError, match=r"cut\.nii"):
        io.load_nifti(raw)
    with pytest.raises(DataError, match="does not exist"):
        io.load_nifti(tmp_path / "nope.nii")


# ----------------------------------------------------------------------------------------------------------------------
# PNG / JPEG


@pytest.mark.parametrize("bits", [8, 16])
def test_png_round_trip(tmp_path, bits):
    rng = np.random.default_rng(2)
    arr = rng.random((13, 17)).astype(np.float32)
    path = io.save_png(tmp_path / f"im{bits}.png", arr, bits=bits)
    img = io.read_radiograph(path)
    assert img.array.shape == (13, 17) and img.array.dtype == np.float32
    assert img.bits == bits
    top = 2**bits - 1
    # Quantisation error is at most half a grey level.
    assert np.max(np.abs(img.array - arr)) <= 0.5 / top + 1e-6
    np.testing.assert_array_equal(np.rint(img.array * top), np.rint(arr * top))


def test_png_integer_input_and_clipping(tmp_path):
    raw = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    img = io.read_radiograph(io.save_png(tmp_path / "u16.png", raw, bits=16))
    np.testing.assert_allclose(img.array, raw / 65535.0, atol=1e-7)
    img = io.read_radiograph(io.save_png(tmp_path / "clip.png", np.array([[-0.5, 0.25], [1.5, np.nan]]), bits=8))
    np.testing.assert_allclose(img.array, [[0.0, 64 / 255], [1.0, 0.0]], atol=1e-7)
    with pytest.raises(UsageError):
        io.save_png(tmp_path / "bad.png", raw, bits=8)
    with pytest.raises(UsageError):
        io.save_png(tmp_path / "bad.png", np.zeros((2, 2, 2)))


def test_jpeg_and_rgb_png_are_read_as_grey(tmp_path):
    from PIL import Image

    grad = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (32, 1))
    Image.fromarray(grad).save(tmp_path / "g.jpg", quality=95)
    img = io.read_radiograph(tmp_path / "g.jpg")
    assert img.bits == 8 and img.array.shape == (32, 64)
    assert np.max(np.abs(img.array - grad / 255.0)) < 0.03  # JPEG is lossy
    rgb = np.stack([grad, grad, grad], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_allclose(io.read_radiograph(tmp_path / "rgb.png").array, grad / 255.0, atol=1 / 255)


def test_corrupt_png_and_jpeg_raise_data_error(tmp_path):
    path = io.save_png(tmp_path / "good.png", np.random.default_rng(0).random((64, 64)))
    data = path.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.png").write_bytes(data[:16] + b"\x00garbage" * 50)
    (tmp_path / "text.jpg").write_bytes(b"this is not a jpeg")
    for name in ("trunc.png", "garbage.png", "text.jpg"):
        with pytest.raises(DataError, match=re.escape(name)):
            io.read_radiograph(tmp_path / name)


# ----------------------------------------------------------------------------------------------------------------------
# Real DICOM files (pydicom-data)


@pytest.fixture(scope="module")
def rg1():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_UNCR.dcm", download=False)
    if path is None:
        pytest.skip("pydicom-data is not installed")
    return Path(path)


def test_monochrome1_radiograph_window_and_inversion(rg1):
    img = io.read_radiograph(rg1)
    ds = pydicom.dcmread(rg1)
    raw = ds.pixel_array.astype(np.float64)
    assert img.array.shape == raw.shape == (1955, 1841)
    assert img.array.dtype == np.float32 and img.array.min() >= 0.0 and img.array.max() <= 1.0
    assert img.photometric == "MONOCHROME1" and img.bits == 15 and img.spacing is None  # PixelSpacing is 0\0
    assert img.meta["normalization"] == "voi_window"
    # Hand-computed DICOM LINEAR window (center 15000, width 30000; output range 0..2^15-1), then inverted.
    c, w = 15000.0 - 0.5, 30000.0 - 1.0
    expected = 1.0 - np.clip((raw - c) / w + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(img.array, expected, atol=1e-5)
    # Displayed the right way round: lungs are dark, the mediastinum/spine between them is bright.
    h, wd = img.array.shape
    band = img.array[int(0.3 * h) : int(0.55 * h)]
    lungs = np.concatenate([band[:, int(0.2 * wd) : int(0.35 * wd)], band[:, int(0.65 * wd) : int(0.8 * wd)]], axis=1)
    mediastinum = band[:, int(0.47 * wd) : int(0.53 * wd)]
    assert mediastinum.mean() - lungs.mean() > 0.1


def test_radiograph_without_voi_is_minmax(rg1):
    img = io.read_radiograph(rg1, voi=False)
    assert img.meta["normalization"] == "minmax"
    assert img.array.min() == pytest.approx(0.0) and img.array.max() == pytest.approx(1.0)


def test_ct_slice_hu_and_brain_window():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("693_UNCR.dcm", download=False)
    if path is None:
        pytest.skip("pydicom-data is not installed")
    hu, meta = io.read_dicom_pixels(path)
    raw = pydicom.dcmread(path).pixel_array.astype(np.float32)
    np.testing.assert_array_equal(hu, raw * 1.0 - 1024.0)  # RescaleSlope 1, RescaleIntercept -1024
    assert meta["modality"] == "CT" and meta["spacing"] == pytest.approx((0.478516, 0.478516))
    assert meta["window"] == (40.0, 100.0)
    brain = io.window(hu, "brain")
    assert brain.dtype == np.float32 and brain.min() == 0.0 and brain.max() == 1.0
    # The corners are air/padding (< -900 HU): black in every soft-tissue window.
    assert np.all(brain[:10, :10] == 0.0) and np.all(hu[:10, :10] < -900)
    img = io.load_image(path)
    assert isinstance(img, io.Image2D) and img.array.shape == (512, 512)


def test_dicom_magic_without_suffix_and_truncated_dicom(tmp_path, rg1):
    target = tmp_path / "IM0001"
    target.write_bytes(rg1.read_bytes())
    assert io.is_dicom(target)
    assert isinstance(io.load_image(target), io.Image2D)
    cut = tmp_path / "cut.dcm"
    data = rg1.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=re.escape("cut.dcm")):
        io.read_radiograph(cut)
    (tmp_path / "notdicom.dcm").write_bytes(b"hello" * 100)
    with pytest.raises(DataError, match=re.escape("notdicom.dcm")):
        io.read_radiograph(tmp_path / "notdicom.dcm")


# ----------------------------------------------------------------------------------------------------------------------
# DICOM series


def _sitk_ras_affine(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: SimpleITK's series reader, converted from LPS to RAS+ and (Z, Y, X) to (X, Y, Z)."""
    sitk = pytest.importorskip("SimpleITK")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    direction = np.asarray(img.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(img.GetSpacing())[None, :]
    lps[:3, 3] = img.GetOrigin()
    arr = np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0))
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, arr


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, 1, 0), (1, 0, 0, 0, 0, -1)], ids=["axial", "coronal"])
def test_dicom_series_geometry_matches_simpleitk(tmp_path, orientation):
    folder = make_series(tmp_path / "s", orientation=orientation)
    vol = io.load_dicom_series(folder)
    assert vol.array.shape == (4, 6, 5)  # (X=columns, Y=rows, Z=slices)
    assert vol.spacing == pytest.approx((0.5, 0.7, 2.5))
    # Slices sorted by position, not by file name: slice k holds 1000 + 10k + index, minus the 1024 intercept.
    for k in range(5):
        expected = (1000 + 10 * k + np.arange(24).reshape(6, 4)).T - 1024.0
        np.testing.assert_array_equal(vol.array[:, :, k], expected)
    ref_affine, ref_arr = _sitk_ras_affine(folder)
    np.testing.assert_allclose(vol.affine, ref_affine, atol=1e-4)
    np.testing.assert_allclose(vol.array, ref_arr, atol=1e-4)
    # Hand-computed: voxel (0, 0, 0) is the first slice's ImagePositionPatient, LPS -> RAS flips x and y.
    np.testing.assert_allclose(vol.affine[:3, 3], [10.0, -20.0, 30.0])


def test_dicom_series_round_trips_through_nifti(tmp_path):
    vol = io.load_dicom_series(make_series(tmp_path / "s"))
    back = io.load_nifti(io.save_nifti(tmp_path / "v.nii.gz", vol.array, vol.spacing, vol.affine))
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)
    assert isinstance(io.load_image(tmp_path / "s"), io.Volume)


def test_dicom_series_skips_stray_files_with_a_warning(tmp_path, caplog):
    folder = make_series(tmp_path / "s")
    clean = io.load_dicom_series(folder)
    (folder / "notes.txt").write_text("not a dicom file")  # clinical exports carry such files
    (folder / "thumb.jpg").write_bytes(b"\xff\xd8\xff" + b"0" * 300)
    with caplog.at_level("WARNING"):
        vol = io.load_dicom_series(folder)
    np.testing.assert_array_equal(vol.array, clean.array)
    assert "skipped 2 non-DICOM file(s)" in caplog.text and "notes.txt" in caplog.text
    with pytest.raises(DataError, match=re.escape("notes.txt")):  # files named explicitly must all be DICOM
        io.load_dicom_series([*sorted(folder.glob("*.dcm")), folder / "notes.txt"])
    only = tmp_path / "junk"
    only.mkdir()
    (only / "a.txt").write_text("x")
    with pytest.raises(DataError, match="no readable DICOM files"):
        io.load_dicom_series(only)


def test_load_volume_reads_nifti_and_dicom_series_alike(tmp_path):
    vol = io.load_volume(make_series(tmp_path / "s"), dtype=np.float32)
    path = io.save_nifti(tmp_path / "v.nii.gz", vol.array, vol.spacing, vol.affine)
    back = io.load_volume(path, dtype=np.float32)
    np.testing.assert_array_equal(back.array, vol.array)
    with pytest.raises(DataError, match="does not exist"):
        io.load_volume(tmp_path / "missing.nii.gz")
    (tmp_path / "x.png").write_bytes(b"png")
    with pytest.raises(DataError, match="not a 3D volume"):
        io.load_volume(tmp_path / "x.png")


def test_dicom_series_bad_inputs_name_the_file(tmp_path):
    folder = make_series(tmp_path / "s")
    victim = sorted(folder.glob("*.dcm"))[2]
    victim.write_bytes(victim.read_bytes()[:-20])  # truncated pixel data
    with pytest.raises(DataError, match=victim.name):
        io.load_dicom_series(folder)
    make_series(tmp_path / "two", uid="1.1")
    make_series(tmp_path / "two2", uid="2.2")
    for f in (tmp_path / "two2").iterdir():
        f.rename(tmp_path / "two" / f"b_{f.name}")
    with pytest.raises(DataError, match="2 series"):
        io.load_dicom_series(tmp_path / "two")
    assert io.load_dicom_series(tmp_path / "two", series_uid="2.2").array.shape == (4, 6, 5)
    with pytest.raises(DataError, match="no DICOM files"):
        (tmp_path / "empty").mkdir()
        io.load_dicom_series(tmp_path / "empty")


# ----------------------------------------------------------------------------------------------------------------------
# Windowing


def test_window_hand_computed_values():
    hu = np.array([-1000.0, -600.0, 150.0, 250.0])
    # lung: center -600, width 1500 -> [-1350, 150]; mediastinum-like 50/350 -> [-125, 225]
    np.testing.assert_allclose(io.window(hu, "lung"), [350 / 1500, 0.5, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(io.window(hu, 50.0, 350.0), [0.0, 0.0, 275 / 350, 1.0], atol=1e-6)
    assert io.window(hu, "bone").dtype == np.float32
    for name in ("lung", "mediastinum", "bone", "abdomen", "brain"):
        assert name in io.WINDOW_PRESETS
    with pytest.raises(UsageError, match="presets"):
        io.window(hu, "kidney-ish")
    with pytest.raises(UsageError):
        io.window(hu, 40.0)
    with pytest.raises(UsageError):
        io.window(hu, "lung", 100.0)


# ----------------------------------------------------------------------------------------------------------------------
# Resampling


def test_resample_linear_ramp_is_exact_in_world_coordinates():
    spacing = (2.0, 1.5, 3.0)
    aff = io.spacing_affine(spacing, origin=(5.0, -3.0, 10.0))
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in (16, 14, 10)], indexing="ij"), axis=-1).astype(float)
    world = idx @ aff[:3, :3].T + aff[:3, 3]
    ramp = 0.3 * world[..., 0] - 0.2 * world[..., 1] + 0.5 * world[..., 2]
    out = io.resample(io.Volume(ramp.astype(np.float32), spacing, aff), 1.0)
    assert out.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert out.array.shape == (32, 21, 30)  # round(shape * old / new spacing): same physical extent
    nidx = np.stack(np.meshgrid(*[np.arange(n) for n in out.array.shape], indexing="ij"), axis=-1).astype(float)
    nworld = nidx @ out.affine[:3, :3].T + out.affine[:3, 3]
    expected = 0.3 * nworld[..., 0] - 0.2 * nworld[..., 1] + 0.5 * nworld[..., 2]
    inner = tuple(slice(2, -2) for _ in range(3))  # away from the border padding
    np.testing.assert_allclose(out.array[inner], expected[inner], atol=1e-3)


def test_resample_labels_nearest_keeps_values_and_volume():
    spacing = (1.0, 1.0, 1.0)
    grid = np.stack(np.meshgrid(*[np.arange(40)] * 3, indexing="ij"), axis=-1)
    sphere = (np.linalg.norm(grid - 19.5, axis=-1) < 12).astype(np.uint8) * 3
    sphere[:5, :5, :5] = 7
    out = io.resample(io.Volume(sphere, spacing, io.spacing_affine(spacing)), (2.0, 2.0, 2.0), is_label=True)
    assert out.array.dtype == np.uint8
    assert set(np.unique(out.array)) <= {0, 3, 7}
    vol_in = (sphere == 3).sum() * 1.0
    vol_out = (out.array == 3).sum() * 8.0
    assert abs(vol_out - vol_in) / vol_in < 0.05  # physical volume kept (mm^3)


# ----------------------------------------------------------------------------------------------------------------------
# Dispatch


def test_load_image_dispatch_and_unknown_format(tmp_path):
    io.save_nifti(tmp_path / "a.nii.gz", np.zeros((3, 3, 3), np.float32))
    io.save_png(tmp_path / "b.png", np.zeros((4, 4)))
    assert isinstance(io.load_image(tmp_path / "a.nii.gz"), io.Volume)
    assert isinstance(io.load_image(tmp_path / "b.png"), io.Image2D)
    (tmp_path / "c.xyz").write_text("?")
    with pytest.raises(DataError, match=re.escape("c.xyz")):
        io.load_image(tmp_path / "c.xyz")
    with pytest.raises(DataError, match="does not exist"):
        io.load_image(tmp_path / "missing.png")
