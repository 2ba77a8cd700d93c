"""The local transformers backend on the real SmolLM2-135M-Instruct (shared, loaded once per session)."""

from __future__ import annotations

import math

import pytest

from medfm.backends.base import ChatMessage, GenerationRequest, parse_json_response

Q = "What is the capital of France?"


def test_greedy_is_deterministic_and_batch_invariant(hf_backend):
    prompts = [Q, "Say hello."]
    batched = hf_backend.generate([GenerationRequest.of(p, max_tokens=8) for p in prompts])
    single = [hf_backend.generate([GenerationRequest.of(p, max_tokens=8)])[0] for p in prompts]
    assert [r.text for r in batched] == [r.text for r in single]
    assert all(r.ok and r.text for r in batched)
    assert "Paris" in batched[0].text  # the model knows this one
    assert batched[1].usage.completion_tokens <= 8
    assert {r.finish_reason for r in batched} <= {"stop", "length"}


def test_seeded_sampling_is_reproducible(hf_backend):
    kw = {"temperature": 1.0, "max_tokens": 8}
    a = hf_backend.chat("Tell me a colour.", seed=1, **kw).text
    b = hf_backend.chat("Tell me a colour.", seed=1, **kw).text
    c = hf_backend.chat("Tell me a colour.", seed=2, **kw).text
    assert a == b
    assert c != a  # a different seed gives a different sample


def test_logprobs_match_teacher_forced_scoring(hf_backend):
    r = hf_backend.chat(Q, max_tokens=8, logprobs=True, top_logprobs=3)
    assert len(r.logprobs) == r.usage.completion_tokens
    for t in r.logprobs:  # greedy: the chosen token is the top-1 alternative
        assert t.top[0][0] == t.token and math.isclose(t.top[0][1], t.logprob, abs_tol=1e-4)
        assert t.logprob <= 0
    s = hf_backend.score([Q], [r.text])[0]
    assert s.error is None and len(s.token_logprobs) == len(r.logprobs)
    assert s.logprob == pytest.approx(sum(t.logprob for t in r.logprobs), abs=1e-3)


def test_scoring_prefers_the_true_answer_by_a_wide_margin(hf_backend):
    prompts = [Q, Q, "What colour is the sky on a clear day?", "What colour is the sky on a clear day?"]
    conts = [
        "The capital of France is Paris.",
        "The capital of France is Banana.",
        "The sky is blue.",
        "The sky is green.",
    ]
    s = hf_backend.score(prompts, conts)
    assert s[0].logprob - s[1].logprob > 5.0
    assert s[2].logprob - s[3].logprob > 2.0
    # batching does not change scores
    one = hf_backend.score(prompts[:1], conts[:1])[0]
    assert one.logprob == pytest.approx(s[0].logprob, abs=1e-3)


def test_attentions_are_returned_with_layout(hf_backend):
    r = hf_backend.chat("Hi", max_tokens=3, output_attentions=True)
    assert len(r.attentions) == 30  # SmolLM2-135M: 30 layers x 9 heads
    t = r.prompt_token_count + r.usage.completion_tokens
    for a in r.attentions:
        assert tuple(a.shape) == (9, t, t)
    a0 = r.attentions[0]
    assert a0.sum(-1).sub(1).abs().max() < 1e-4  # rows are distributions
    assert a0[:, 0, 1:].abs().max() == 0  # causal: the first token sees only itself
    att, n_prompt = hf_backend.forward_attentions(Q, "Paris")
    assert att[0].shape[-1] > n_prompt


def test_prefill_json_mode_and_images_rejected(hf_backend):
    from PIL import Image

    r = hf_backend.chat([ChatMessage("user", Q), ChatMessage("assistant", "Answer:")], max_tokens=4)
    assert r.ok and not r.text.startswith("Answer:")
    j = hf_backend.chat('Give a JSON object with key "city" for the capital of France.', json_mode=True, max_tokens=12)
    assert j.text.startswith("{")
    obj, err = parse_json_response(j.text)
    assert (obj is None) == (err is not None)  # parsed or reported, never raised
    img = Image.new("RGB", (8, 8))
    bad = hf_backend.generate([GenerationRequest([ChatMessage("user", "x", [img])]), GenerationRequest.of("ok")])
    assert "text-only" in bad[0].error and bad[1].ok
    assert not hf_backend.capabilities.images and hf_backend.capabilities.attentions


def test_stop_strings(hf_backend):
    full = hf_backend.chat(Q, max_tokens=8).text
    cut = hf_backend.chat(Q, max_tokens=8, stop=["France"]).text
    assert "France" in full and cut == full[: full.index("France")]


def test_dequantised_cache_folder_is_complete(tmp_path):
    from medfm.backends.hf import dequantised_dir
    from medfm.data.assets import get_asset

    # A private cache root: the shared one may hold another pytest worker's conversion in progress.
    gguf = get_asset("smollm2-135m-instruct-gguf").path()
    d = dequantised_dir(gguf, root=tmp_path)
    names = {p.name for p in d.iterdir()}
    assert {"model.safetensors", "config.json", "medfm_source.json"} <= names
    assert "quantization_config" not in (d / "config.json").read_text()
    assert [p.name for p in tmp_path.iterdir()] == [d.name]  # no temporary left behind
    assert dequantised_dir(gguf, root=tmp_path) == d  # built once, then reused
