"""End-to-end smoke runs of every ``medfm medvae`` verb on tiny presets, plus resume, cards and tiling."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from medfm.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("medvae")
    s1 = root / "s1"
    assert main(["medvae", "train", "--config", "preset:tiny", "--output_dir", str(s1), "--device", "cpu",
                 "--optim.steps", "4"]) == 0  # fmt: skip
    return root, s1 / "checkpoints" / "final"


def test_train_resume_card_and_stage2(trained):
    root, ckpt = trained
    s1 = ckpt.parent.parent
    assert json.loads((s1 / "checkpoints" / "last" / "trainer_state.json").read_text())["step"] == 4
    # rerun into the same dir with more steps: resumes at 4 and continues to 6
    assert main(["medvae", "train", "--config", "preset:tiny", "--output_dir", str(s1), "--device", "cpu",
                 "--optim.steps", "6"]) == 0  # fmt: skip
    steps = [r["step"] for r in map(json.loads, (s1 / "metrics.jsonl").read_text().splitlines())]
    assert steps == sorted(steps) and steps[-1] == 6 and steps.count(4) == 1
    assert main(["card", "validate", str(ckpt)]) == 0
    res = json.loads((s1 / "results.json").read_text())
    assert {"psnr", "ms_ssim", "psnr_bicubic", "psnr_gain_vs_bicubic"} <= set(res["metrics"])
    s2 = root / "s2"
    assert main(["medvae", "train", "--config", "preset:tiny", "--stage", "2", "--model.init", str(ckpt),
                 "--output_dir", str(s2), "--device", "cpu", "--optim.steps", "3"]) == 0  # fmt: skip
    from safetensors.torch import load_file

    a, b = load_file(str(ckpt / "model.safetensors")), load_file(str(s2 / "checkpoints/final/model.safetensors"))
    assert torch.equal(a["encoder.blocks.0.conv.weight"], b["encoder.blocks.0.conv.weight"])  # frozen
    assert not torch.equal(a["channel_proj.weight"], b["channel_proj.weight"])  # head trained


def test_encode_decode_roundtrip_restores_size(trained, tmp_path):
    _, ckpt = trained
    enc = tmp_path / "enc"
    assert main(["medvae", "encode", "--model", str(ckpt), "--input", "phantom:cxr", "--data.n", "3",
                 "--data.size", "34", "--projected", "true", "--output_dir", str(enc), "--device", "cpu"]) == 0  # fmt: skip
    with open(enc / "latents.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    with np.load(enc / rows[0]["latent"]) as f:
        assert f["latent"].shape == (1, 9, 9) and f["projected"].shape == (1, 9, 9)  # 34 padded to 36, /4
        assert f["pads"].tolist() == [[1, 1], [1, 1]]
    dec = tmp_path / "dec"
    assert main(["medvae", "decode", "--model", str(ckpt), "--input", str(enc / "latents.csv"),
                 "--output_dir", str(dec), "--device", "cpu"]) == 0  # fmt: skip
    from PIL import Image

    assert Image.open(dec / "images" / f"{rows[0]['id']}.png").size == (34, 34)


def test_evaluate_classify_export_report_dry_run(trained, tmp_path, capsys):
    _, ckpt = trained
    ev = tmp_path / "ev"
    assert main(["medvae", "evaluate", "--model", str(ckpt), "--data.n", "8", "--data.size", "32",
                 "--output_dir", str(ev), "--device", "cpu"]) == 0  # fmt: skip
    assert (ev / "plots" / "reconstructions.png").is_file() and (ev / "report.html").is_file()
    cl = tmp_path / "cl"
    assert main(["medvae", "classify", "--model", str(ckpt), "--data.n", "24", "--data.size", "32",
                 "--data.label", "Cardiomegaly", "--classifier.steps", "5", "--output_dir", str(cl),
                 "--device", "cpu"]) == 0  # fmt: skip
    metrics = json.loads((cl / "results.json").read_text())["metrics"]
    assert {"auroc_latent", "auroc_image", "auroc_bicubic", "throughput_gain_latent_vs_image"} <= set(metrics)
    ex = tmp_path / "ex"
    assert main(["medvae", "export", "--source", str(ckpt), "--preset", "tiny_4_1_2d", "--output_dir", str(ex)]) == 0
    assert main(["card", "validate", str(ex / "checkpoints" / "final")]) == 0
    assert main(["medvae", "export", "--source", str(ckpt), "--preset", "tiny_8_1_2d",
                 "--output_dir", str(tmp_path / "bad")]) == 3  # fmt: skip
    assert "does not match" in capsys.readouterr().err
    assert main(["medvae", "report", str(ev)]) == 0
    assert main(["medvae", "train", "--dry_run", "true", "--output_dir", str(tmp_path / "dry")]) == 0
    assert "stage 1" in capsys.readouterr().out


def test_3d_inflated_training_and_seamless_tiling(trained, tmp_path):
    _, ckpt = trained
    s3 = tmp_path / "s3"
    assert main(["medvae", "train", "--config", "preset:tiny_3d", "--stage", "2", "--model.init", str(ckpt),
                 "--output_dir", str(s3), "--device", "cpu", "--optim.steps", "2"]) == 0  # fmt: skip
    from medfm.methods.medvae.encode import seam_error
    from medfm.methods.medvae.model import load_model

    model = load_model(str(s3 / "checkpoints" / "final"))
    x = torch.rand(1, 1, 32, 32, 32) * 2 - 1
    assert seam_error(model, x, tile=32)["max_abs_error_gaussian"] < 1e-5  # one tile = whole-volume encoding
    err = seam_error(model, x, tile=16, overlap=0.5)  # 27 overlapping tiles: the stitched latent is finite and close
    assert 0 < err["rel_error_gaussian"] < 1.0 and np.isfinite(err["max_abs_error_gaussian"])
    enc = tmp_path / "enc3"
    assert main(["medvae", "encode", "--model", str(s3 / "checkpoints/final"), "--input", "phantom:ct",
                 "--data.n", "1", "--data.phantom_shape", "30,30,30", "--tile", "16", "--output_dir", str(enc),
                 "--device", "cpu"]) == 0  # fmt: skip
    with open(enc / "latents.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    with np.load(enc / row["latent"]) as f:
        assert f["latent"].shape == (1, 8, 8, 8)
