"""The CheXficient image tower inside the VLM: exact weight conversion, preprocessing parity, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfm.core.errors import UsageError
from medfm.methods.chexficient.model import CheXficientModel
from medfm.methods.vlm.config import LMSpec, VisionSpec, VLMSpec
from medfm.methods.vlm.model import build_vlm, load_vlm, save_vlm
from medfm.methods.vlm.towers import chexficient_tower

TOWER = {"kind": "vit", "image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16}
BAG = {"kind": "bag", "width": 16, "buckets": 256}


@pytest.fixture(scope="module")
def chexficient_dir(tmp_path_factory):
    torch.manual_seed(3)
    m = CheXficientModel(embed_dim=16, image_tower=TOWER, text_tower=BAG)
    with torch.no_grad():  # move every weight off its init so a dropped or transposed tensor shows
        for p in m.visual.parameters():
            p.add_(0.2 * torch.randn_like(p))
    d = tmp_path_factory.mktemp("chexficient") / "model"
    m.save_pretrained(d)
    return d


def test_converted_tower_reproduces_the_chexficient_image_embedding(chexficient_dir):
    from transformers import CLIPVisionModel

    ref = CheXficientModel.from_pretrained(chexficient_dir)
    cfg, state, proc = chexficient_tower(chexficient_dir)
    tower = CLIPVisionModel(cfg).eval()
    tower.load_state_dict(state, strict=True)
    rng = np.random.default_rng(0)
    images = [rng.random((32, 32)).astype(np.float32) for _ in range(3)]
    with torch.no_grad():
        # the HF image processor path (uint8 PIL as the VLM collator feeds it) vs CheXficient's own preprocessing
        from PIL import Image

        pil = [Image.fromarray(np.rint(im * 255).astype(np.uint8)) for im in images]
        pixels = proc(images=pil, return_tensors="pt")["pixel_values"]
        ref_pixels = ref.preprocess(torch.tensor(np.stack([np.asarray(p, np.float32) / 255 for p in pil]))[:, None])
        assert torch.allclose(pixels, ref_pixels, atol=1e-5)
        want = ref.encode_image(ref_pixels, normalize=False)
        got = tower(pixel_values=pixels).pooler_output @ ref.visual.proj
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert not torch.allclose(got, torch.zeros_like(got))


def test_vlm_with_chexficient_tower_builds_saves_and_reloads(chexficient_dir, tmp_path):
    spec = VLMSpec(vision=VisionSpec(kind="chexficient", path=str(chexficient_dir)),
                   lm=LMSpec(source="tiny", tiny_hidden=32, tiny_layers=1), system_prompt="")  # fmt: skip
    model, proc = build_vlm(spec, seed=0)
    _, state, _ = chexficient_tower(chexficient_dir)
    ours = model.model.vision_tower.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in state.items())
    # the CheXficient ViT is trained through its CLS token, so the LM sees it too: (32/8)^2 patches + CLS
    assert model.config.image_seq_length == 17 and model.config.vision_feature_select_strategy == "full"
    save_vlm(model, proc, tmp_path / "vlm")
    again, proc2 = load_vlm(tmp_path / "vlm")
    key = next(k for k in ours if k.endswith("post_layernorm.weight"))
    assert torch.equal(again.model.vision_tower.state_dict()[key], ours[key])
    text = proc2.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}],
                                     add_generation_prompt=True)  # fmt: skip
    enc = proc2(text=[text], images=[np.zeros((32, 32, 3), np.uint8)], return_tensors="pt")
    assert int((enc["input_ids"] == again.config.image_token_index).sum()) == 17
    with torch.no_grad():  # the expanded placeholders and the tower's features line up (17 of each)
        again(**enc)
    # LLaVA's convention (drop CLS) stays available
    spec_default = VLMSpec(vision=VisionSpec(kind="chexficient", path=str(chexficient_dir), feature_select="default"),
                           lm=spec.lm, system_prompt="")  # fmt: skip
    m2, p2 = build_vlm(spec_default, seed=0)
    enc2 = p2(text=[text], images=[np.zeros((32, 32, 3), np.uint8)], return_tensors="pt")
    assert m2.config.image_seq_length == 16 == int((enc2["input_ids"] == m2.config.image_token_index).sum())
    with torch.no_grad():
        m2(**enc2)


def test_non_vit_chexficient_tower_is_a_clear_error(tmp_path):
    m = CheXficientModel(embed_dim=8, image_tower={"kind": "resnet", "image_size": 32, "layers": [1, 1, 1, 1],
                                                   "width": 8}, text_tower=BAG)  # fmt: skip
    m.save_pretrained(tmp_path / "rn")
    with pytest.raises(UsageError, match="only the ViT tower"):
        chexficient_tower(tmp_path / "rn")
    with pytest.raises(UsageError, match=r"needs --model\.vision\.path"):
        build_vlm(VLMSpec(vision=VisionSpec(kind="chexficient"), lm=LMSpec(source="tiny")))
