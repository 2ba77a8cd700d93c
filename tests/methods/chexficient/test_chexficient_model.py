"""The dual encoder's public API, the masked CLIP loss and evaluation helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medfm.methods.chexficient.evaluation import retrieval_ranks, text_to_image_ranks
from medfm.methods.chexficient.losses import clip_loss
from medfm.methods.chexficient.model import CheXficientModel

TINY = {"kind": "vit", "image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16}


def test_clip_loss_hand_computed_and_mask():
    zi = torch.eye(3)
    zt = torch.eye(3)
    scale = torch.tensor(2.0)
    # logits = 2 I; CE of each row = -log(e^2 / (e^2 + 2))
    expect = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert float(clip_loss(zi, zt, scale)) == pytest.approx(expect, rel=1e-5)
    keep = torch.tensor([True, True, False])
    expect2 = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert float(clip_loss(zi, zt, scale, keep)) == pytest.approx(expect2, rel=1e-5)
    assert float(clip_loss(zi, zt, scale, torch.zeros(3, dtype=torch.bool))) == pytest.approx(expect, rel=1e-5)


def test_model_api_and_roundtrip(tmp_path):
    from PIL import Image

    torch.manual_seed(0)
    m = CheXficientModel(embed_dim=16, image_tower=TINY, text_tower={"kind": "bag", "width": 16, "buckets": 512})
    assert float(m.scale().detach()) == pytest.approx(100.0)  # temperature 0.01
    imgs = torch.randint(0, 256, (5, 48, 48), dtype=torch.uint8)
    z = m.encode_images(imgs)
    assert z.shape == (5, 16) and torch.allclose(z.norm(dim=1), torch.ones(5), atol=1e-5)
    pil = [Image.fromarray(imgs[i].numpy()) for i in range(5)]
    assert torch.allclose(m.encode_images(pil), z, atol=1e-5)
    t = m.encode_texts(["No pleural effusion.", "Cardiomegaly. No pneumothorax."])
    assert t.shape == (2, 16) and torch.allclose(t.norm(dim=1), torch.ones(2), atol=1e-5)
    w = m.zero_shot_classifier(["cardiomegaly", "pneumothorax", "edema"], ["{}", "there is {}"])
    assert w.shape == (16, 3)
    p = m.zero_shot(imgs, ["cardiomegaly", "pneumothorax"])
    assert p.shape == (5, 2) and torch.allclose(p.sum(1), torch.ones(5), atol=1e-5)
    pf = m.zero_shot_findings(imgs, ["cardiomegaly", "edema"])
    assert pf.shape == (5, 2) and bool(((pf > 0) & (pf < 1)).all())
    m.save_pretrained(tmp_path / "m")
    m2 = CheXficientModel.from_pretrained(tmp_path / "m")
    assert torch.allclose(m2.encode_images(imgs), z, atol=1e-6)
    assert torch.allclose(m2.encode_texts(["No pleural effusion."]), t[:1], atol=1e-6)


def test_minilm_text_tower_roundtrip(tmp_path):
    pytest.importorskip("transformers")
    from medfm.data.assets import get_asset

    if not get_asset("all-minilm-l6-v2").installed:
        pytest.skip("MiniLM asset not installed")
    m = CheXficientModel(embed_dim=8, image_tower=TINY)  # default text tower: MiniLM offline
    t = m.encode_texts(["no pleural effusion", "large right pleural effusion"])
    assert t.shape == (2, 8)
    m.save_pretrained(tmp_path / "mini")
    assert (tmp_path / "mini" / "text_encoder" / "config.json").is_file()
    m2 = CheXficientModel.from_pretrained(f"local-dir:{tmp_path / 'mini'}")
    assert torch.allclose(m2.encode_texts(["no pleural effusion", "large right pleural effusion"]), t, atol=1e-5)


def test_retrieval_ranks_hand_values():
    zi = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    zt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    own = np.array([0, 1, 0])
    # image 2 is closer to report 1 (0.8) than its own report 0 (0.6) -> rank 2
    assert retrieval_ranks(zi, zt, own).tolist() == [1, 1, 2]
    assert text_to_image_ranks(zi, zt, own).tolist() == [1, 1]
