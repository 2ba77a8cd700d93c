"""MedVAE algorithmic core: presets, shapes, KL, inflation, converter vs the original code, data edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from medfm.core.errors import DataError
from medfm.methods.medvae.convert import key_mapping, load_original, merge_lora, original_to_medfm
from medfm.methods.medvae.data import clean_nans, crop_padding, pad_to_multiple
from medfm.methods.medvae.data import load_file as load_image_file
from medfm.methods.medvae.inflate import inflate_kernel, inflate_model
from medfm.methods.medvae.losses import downsample_baseline, kl_divergence, ms_ssim, psnr, slice_stack
from medfm.methods.medvae.model import PRESETS, MedVAE, build_model, count_parameters

FIX = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name", [n for n, p in PRESETS.items() if p.params_m])
def test_published_presets_match_spec_parameter_counts(name):
    with torch.device("meta"):
        model = build_model(name)
    # spec B1: 55.3 M (4_1/4_3 2D), 83.6/83.7 M (8_x 2D), 161.0 M (4_1 3D), 246.0 M (8_1 3D)
    assert count_parameters(model) / 1e6 == pytest.approx(PRESETS[name].params_m, abs=0.051)


def test_published_layouts_map_tensor_for_tensor():
    layouts = json.loads((FIX / "medvae_original_layouts.json").read_text())
    for name, layout in layouts.items():
        with torch.device("meta"):
            model = build_model(name)
        mapping = key_mapping(model)
        assert sorted(mapping.values()) == sorted(layout), name
        sd = model.state_dict()
        assert all(sd[k].numel() == int(np.prod(layout[v])) for k, v in mapping.items()), name


def test_latent_shapes_and_projection():
    m = build_model("tiny_8_1_2d").eval()
    x = torch.rand(2, 1, 32, 48) * 2 - 1
    rec, mean, logvar = m(x, sample=False)
    assert rec.shape == x.shape and mean.shape == (2, 1, 4, 6) == logvar.shape
    assert m.project(mean).shape == mean.shape
    assert torch.equal(m.encode(x), m.encode(x))  # deterministic mean latent
    with pytest.raises(DataError, match="divisible by 8"):
        m.encode(torch.zeros(1, 1, 30, 32))


def test_kl_hand_computed():
    assert float(kl_divergence(torch.zeros(3, 1, 2, 2), torch.zeros(3, 1, 2, 2))) == 0.0
    mean = torch.tensor([[[[1.0, 2.0]]]])
    logvar = torch.tensor([[[[0.0, float(np.log(2.0))]]]])
    # 0.5 * [(1 + 1 - 1 - 0) + (4 + 2 - 1 - ln 2)]
    assert float(kl_divergence(mean, logvar)) == pytest.approx(0.5 * (1 + 5 - np.log(2.0)), rel=1e-6)


def test_metrics_and_baseline_shapes():
    x = torch.rand(2, 1, 64, 64)
    assert torch.allclose(ms_ssim(x, x), torch.ones(2), atol=1e-5)
    assert float(psnr(x, x + 0.1)[0]) == pytest.approx(20.0, abs=1e-3)  # MSE 0.01 at data range 1
    small, up = downsample_baseline(x * 2 - 1, 4)
    assert small.shape == (2, 1, 16, 16) and up.shape == x.shape
    stacks = slice_stack(torch.rand(2, 1, 8, 10, 12), 3, torch.Generator().manual_seed(0))
    assert [tuple(s.shape) for s in stacks] == [(6, 1, 10, 12), (6, 1, 8, 12), (6, 1, 8, 10)]


def test_inflation_keeps_2d_response_on_z_constant_volume():
    torch.manual_seed(0)
    m2 = build_model("tiny_4_1_2d").eval()
    m3 = inflate_model(build_model("tiny_4_1_3d"), m2.state_dict()).eval()
    k = inflate_kernel(torch.arange(4.0).view(1, 1, 2, 2), 3)
    assert k.shape == (1, 1, 2, 2, 3) and torch.equal(k[..., 1], torch.arange(4.0).view(1, 1, 2, 2))
    assert k[..., 0].abs().sum() == 0 and k[..., 2].abs().sum() == 0
    img = torch.rand(1, 1, 16, 16) * 2 - 1
    vol = img[..., None].expand(-1, -1, -1, -1, 8).contiguous()
    with torch.no_grad():
        z2, z3 = m2.encode(img), m3.encode(vol)
        p2, p3 = m2.project(z2), m3.project(z3)
    assert z3.shape == (1, 1, 4, 4, 2)
    for j in range(z3.shape[-1]):
        assert torch.allclose(z3[..., j], z2, atol=1e-4)
        assert torch.allclose(p3[..., j], p2, atol=1e-4)


def _fixture(name):
    path = FIX / f"medvae_original_{name}.safetensors"
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        cfg = json.loads(f.metadata()["ddconfig"])
    sd = {k.removeprefix("state_dict."): v.float() for k, v in tensors.items() if k.startswith("state_dict.")}
    out = {k.removeprefix("out."): v for k, v in tensors.items() if k.startswith("out.")}
    return cfg, sd, out


@pytest.mark.parametrize("name,dims", [("2d", 2), ("2d_lora", 2), ("3d", 3)])
def test_converter_reproduces_original_outputs(name, dims):
    cfg, sd, out = _fixture(name)
    model = MedVAE(dims, cfg["in_channels"], cfg["out_ch"], cfg["z_channels"], [cfg["ch"] * c for c in cfg["ch_mult"]])
    load_original({"state_dict": sd}, model).eval()
    with torch.no_grad():
        mean, logvar = model.moments(out["input"])
        rec = model.decode(mean)
        proj = model.project(mean)
    for key, ours in (("mean", mean), ("logvar", logvar), ("reconstruction", rec), ("projected", proj)):
        ref = out[key]
        assert torch.allclose(ours, ref, atol=1e-4 * max(1.0, float(ref.abs().max()))), key
    # a broken mapping (the encoder's two middle ResNet blocks swapped) is detected by the same comparison
    bad = {k.replace("mid.block_1", "mid.tmp").replace("mid.block_2", "mid.block_1").replace("mid.tmp", "mid.block_2"): v
           for k, v in sd.items()}  # fmt: skip
    load_original(bad, model)
    with torch.no_grad():
        assert not torch.allclose(model.moments(out["input"])[0], out["mean"], atol=1e-4)


def test_lora_merge_hand_computed():
    w = torch.ones(2, 3, 1, 1)
    down = torch.arange(3.0).view(1, 3, 1, 1)  # r = 1
    up = torch.tensor([1.0, 2.0]).view(2, 1, 1, 1)
    merged = merge_lora({"a.conv.weight": w, "a.conv.bias": torch.zeros(2), "a.lora_down.weight": down,
                         "a.lora_up.weight": up})  # fmt: skip
    assert set(merged) == {"a.weight", "a.bias"}
    expected = torch.tensor([[1.0, 2.0, 3.0], [1.0, 3.0, 5.0]]).view(2, 3, 1, 1)
    assert torch.equal(merged["a.weight"], expected)


def test_wrong_shape_checkpoint_names_both_shapes():
    _, sd, _ = _fixture("2d")
    model = build_model("tiny_4_1_2d")
    with pytest.raises(DataError, match=r"shape \(32, 1, 3, 3\).*needs \(16, 1, 3, 3\)"):
        original_to_medfm(sd, model)


def test_pad_crop_inverse_and_nans(tmp_path):
    arr = np.random.default_rng(0).random((30, 37)).astype(np.float32)
    padded, pads = pad_to_multiple(arr, 8)
    assert padded.shape == (32, 40) and padded[0, 0] == -1.0
    assert np.array_equal(crop_padding(padded[None, None], pads)[0, 0], arr)
    with_nan = arr.copy()
    with_nan[3, 4] = np.nan
    cleaned = clean_nans(with_nan, "x")
    assert np.isfinite(cleaned).all() and cleaned[3, 4] == arr[np.isfinite(with_nan)].min()
    with pytest.raises(DataError, match="NaN"):
        clean_nans(np.full((4, 4), np.nan), "all-nan.png")


def test_16bit_png_and_monochrome1_dicom(tmp_path):
    from PIL import Image

    ramp = (np.linspace(0, 65535, 40 * 24).reshape(40, 24)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "r16.png")
    arr, meta = load_image_file(tmp_path / "r16.png", dims=2)
    assert meta["bits"] == 16 and arr.min() == pytest.approx(-1.0) and arr.max() == pytest.approx(1.0)
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    fm = FileMetaDataset()
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    fm.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(tmp_path / "m1.dcm"), {}, file_meta=fm, preamble=b"\0" * 128)
    ds.Modality, ds.Rows, ds.Columns = "DX", 8, 8
    ds.PhotometricInterpretation, ds.SamplesPerPixel = "MONOCHROME1", 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    px = np.zeros((8, 8), np.uint16)
    px[:, 4:] = 4000  # high stored value = dark on MONOCHROME1
    ds.PixelData = px.tobytes()
    pydicom.dcmwrite(str(tmp_path / "m1.dcm"), ds, enforce_file_format=True)
    arr, _ = load_image_file(tmp_path / "m1.dcm", dims=2)
    assert arr[0, 0] > arr[0, 7]  # inverted: zero stored value is bright


def test_ms_ssim_settings_follow_the_size_rule():
    from medfm.methods.medvae.losses import MS_SSIM_WEIGHTS, ms_ssim_settings

    def norm(k):
        w = MS_SSIM_WEIGHTS[:k]
        return tuple(x / sum(w) for x in w)

    # MONAI needs side // (scales - 1)^2 > kernel - 1 and side // 2^(scales - 1) >= kernel
    assert ms_ssim_settings(256) == (11, norm(5))
    assert ms_ssim_settings(64) == (11, norm(3))  # 64 // 9 = 7 is not > 10: three scales
    assert ms_ssim_settings(32) == (11, norm(2))
    assert ms_ssim_settings(11) == (11, norm(1))
    assert ms_ssim_settings(8) == (7, norm(1))
    assert ms_ssim_settings(2) == (1, (1.0,))
    assert abs(sum(ms_ssim_settings(256)[1]) - 1.0) < 1e-12


def test_ssim_window_by_image_size_and_identity():
    import torch
    from monai.metrics.regression import compute_ssim_and_cs

    from medfm.methods.medvae.losses import ssim

    g = torch.Generator().manual_seed(0)
    for side, kernel in ((16, 11), (12, 11), (11, 7), (8, 7), (7, 3)):
        x = torch.rand(2, 1, side, side, generator=g)
        y = (x + 0.1 * torch.rand(2, 1, side, side, generator=g)).clamp(0, 1)
        ref, _ = compute_ssim_and_cs(x, y, spatial_dims=2, kernel_size=[kernel] * 2, kernel_sigma=[1.5] * 2,
                                     data_range=1.0)  # fmt: skip
        got = ssim(x, y)
        assert got.shape == (2,) and torch.allclose(got, ref.flatten(1).mean(1)), side
        assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
