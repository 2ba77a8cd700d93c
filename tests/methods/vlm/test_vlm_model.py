"""The VLM as a Hugging Face model: inputs, loss masking, bad input, save/load, KV cache, hf backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfm.core.errors import DataError
from medfm.methods.vlm.config import GenerationOptions, LMSpec, VisionSpec, VLMSpec
from medfm.methods.vlm.data import Example, VLMCollator
from medfm.methods.vlm.infer import answer_logprobs, generate
from medfm.methods.vlm.model import IMAGE_TOKEN, build_vlm, load_vlm, save_vlm
from medfm.methods.vlm.train import sft_loss

SPEC = VLMSpec(
    vision=VisionSpec(image_size=16, patch_size=8, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2),
    lm=LMSpec(source="tiny", tiny_hidden=32, tiny_layers=1),
    system_prompt="Be brief.",
    max_length=64,
)


@pytest.fixture(scope="module")
def vlm():
    return build_vlm(SPEC, seed=0)


def _examples(n: int = 3) -> list[Example]:
    rng = np.random.default_rng(0)
    answers = ["Left pleural effusion.", "No acute findings.", "Cardiomegaly."]
    return [Example(str(i), [rng.random((20, 20)).astype(np.float32)], "Describe.", answers[i % 3]) for i in range(n)]


def test_build_has_image_token_template_and_lm_weights(vlm):
    model, proc = vlm
    tok = proc.tokenizer
    assert tok.convert_tokens_to_ids(IMAGE_TOKEN) == model.config.image_token_index
    assert model.config.image_seq_length == 4  # (16 / 8) ** 2 patches
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # tied as in SmolLM2


def test_collator_masks_everything_but_the_answer(vlm):
    _, proc = vlm
    ex = _examples(2)
    batch = VLMCollator(proc, "", SPEC.max_length, 1, train=True)(ex)
    assert batch["pixel_values"].shape == (2, 3, 16, 16)
    assert int((batch["input_ids"][0] == proc.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)).sum()) == 4
    for b in range(2):
        kept = batch["labels"][b][batch["labels"][b] != -100]
        assert proc.tokenizer.decode(kept) == ex[b].answer + "<|im_end|>\n"
    text = proc.tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()])
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<image>")


def test_sft_loss_equals_the_models_own_loss(vlm):
    model, proc = vlm
    batch = VLMCollator(proc, "", SPEC.max_length, 1, train=True)(_examples(3))
    with torch.no_grad():
        ours = sft_loss(model, batch)
        ref = model(**batch).loss
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)


def test_bad_input_gives_one_clear_error(vlm):
    _, proc = vlm
    col = VLMCollator(proc, "", SPEC.max_length, 1, train=False)
    ex = _examples(1)[0]
    with pytest.raises(DataError, match="no image"):
        col([Example("x", [], "Describe.")])
    with pytest.raises(DataError, match="at most 1"):
        col([Example("y", ex.images * 2, "Describe.")])
    with pytest.raises(DataError, match="exceed max_length 64"):
        col([Example("z", ex.images, "word " * 100)])


def test_save_load_roundtrip_kv_cache_and_scoring(vlm, tmp_path):
    model, proc = vlm
    ex = _examples(2)
    out = save_vlm(model, proc, tmp_path / "m")
    model2, proc2 = load_vlm(out)
    batch = VLMCollator(proc, "", SPEC.max_length, 1, train=False)(ex)
    with torch.no_grad():
        a = model(**batch).logits
        b = model2(**VLMCollator(proc2, "", SPEC.max_length, 1, train=False)(ex)).logits
    assert torch.allclose(a, b, atol=1e-5)
    opts = GenerationOptions(max_new_tokens=6, batch_size=2)
    on = generate(model2, proc2, ex, SPEC, opts)
    off = generate(model2, proc2, ex, SPEC, GenerationOptions(max_new_tokens=6, batch_size=2, use_cache=False))
    assert on.texts == off.texts and on.new_tokens == off.new_tokens  # the KV cache changes speed, not output
    lp = answer_logprobs(model2, proc2, ex, ["yes", "no"], SPEC)
    assert lp.shape == (2, 2) and np.all(lp < 0)


def test_generate_accepts_an_int_eos_token_id(vlm):
    """Llava-like HF models usually carry one int ``eos_token_id`` (the medfm VLM carries a list)."""
    model, proc = vlm
    ex = _examples(2)
    opts = GenerationOptions(max_new_tokens=4, batch_size=2)
    ref = generate(model, proc, ex, SPEC, opts)
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = proc.tokenizer.convert_tokens_to_ids("<|im_end|>")
    try:
        out = generate(model, proc, ex, SPEC, opts)
    finally:
        model.generation_config.eos_token_id = saved
    assert out.texts == ref.texts and out.new_tokens == ref.new_tokens


def test_hf_backend_serves_the_saved_vlm(vlm, tmp_path):
    from medfm.backends import make_backend
    from medfm.backends.base import ChatMessage, GenerationRequest
    from medfm.data.phantoms.cxr import write_png

    model, proc = vlm
    path = save_vlm(model, proc, tmp_path / "m")
    img = write_png(tmp_path / "x.png", np.random.default_rng(0).random((20, 20)))
    backend = make_backend(f"hf:{path}")
    assert backend.capabilities.images
    r = backend.generate([GenerationRequest([ChatMessage("user", "Describe.", [str(img)])], max_tokens=3)])[0]
    assert r.error is None and r.usage.prompt_tokens > 4  # image placeholders are part of the prompt
    two = GenerationRequest([ChatMessage("user", "Compare.", [str(img), str(img)])], max_tokens=3)
    bad = backend.generate([two])[0]
    assert bad.error is not None and "supports at most 1" in bad.error


def test_pretrained_transformers_vision_tower_is_loaded(tmp_path):
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    cfg = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                             image_size=16, patch_size=8)  # fmt: skip
    torch.manual_seed(1)
    tower = SiglipVisionModel(cfg)
    tower.save_pretrained(tmp_path / "tower")
    SiglipImageProcessor(size={"height": 16, "width": 16}).save_pretrained(tmp_path / "tower")
    spec = VLMSpec(vision=VisionSpec(kind="hf", path=str(tmp_path / "tower")), lm=SPEC.lm, system_prompt="")
    model, proc = build_vlm(spec, seed=0)
    ours = model.model.vision_tower.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in tower.state_dict().items())
    assert model.config.image_seq_length == 4 and proc.image_processor.size["height"] == 16
