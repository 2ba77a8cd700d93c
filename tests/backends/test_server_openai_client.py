"""`medfm serve` conformance, driven by the official ``openai`` Python client on 127.0.0.1: text, images,
streaming, text completions, usage counts, OpenAI-shaped errors, limits and concurrency (issue 28)."""

from __future__ import annotations

import base64
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from medfm.backends.scripted import ScriptedBackend
from medfm.backends.server import ServerLimits, start_server_thread

openai = pytest.importorskip("openai")


def _client(srv, **kw):
    return openai.OpenAI(base_url=srv.url, api_key="unused", max_retries=0, timeout=30, **kw)


def _echo(req):
    """Answers with the last user text and how many images came with the conversation."""
    n_images = sum(len(m.images) for m in req.messages)
    return f"{req.messages[-1].content} | images={n_images} | raw={req.raw}"


@pytest.fixture()
def srv():
    with start_server_thread(ScriptedBackend(_echo, context_length=50), model_name="toy") as s:
        yield s


def test_text_chat_and_models(srv):
    c = _client(srv)
    assert [m.id for m in c.models.list()] == ["toy"]
    r = c.chat.completions.create(model="toy", messages=[{"role": "user", "content": "no effusion"}], max_tokens=20)
    assert r.choices[0].message.content == "no effusion | images=0 | raw=False"
    assert r.choices[0].finish_reason == "stop" and r.object == "chat.completion"
    assert r.usage.prompt_tokens == 2 and r.usage.completion_tokens == 6 and r.usage.total_tokens == 8


def test_images_as_data_urls(srv):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (6, 4)).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    content = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": url}}]
    r = _client(srv).chat.completions.create(model="toy", messages=[{"role": "user", "content": content}])
    assert r.choices[0].message.content == "look | images=1 | raw=False"


def test_streaming_delivers_the_whole_content_and_usage(srv):
    stream = _client(srv).chat.completions.create(
        model="toy", messages=[{"role": "user", "content": "stream me"}], stream=True, n=2,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = {0: "", 1: ""}
    finish = {}
    for ch in chunks:
        for choice in ch.choices:
            text[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    assert text == {0: "stream me | images=0 | raw=False", 1: "stream me | images=0 | raw=False"}
    assert finish == {0: "stop", 1: "stop"}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)


def test_text_completions_take_the_prompt_as_is(srv):
    c = _client(srv)
    r = c.completions.create(model="toy", prompt=["The heart is", "Lungs are"], max_tokens=10)
    assert [ch.text for ch in r.choices] == ["The heart is | images=0 | raw=True", "Lungs are | images=0 | raw=True"]
    assert r.object == "text_completion" and r.usage.prompt_tokens == 5
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(model="toy", prompt="x", stream=True)
                       if ch.choices)  # fmt: skip
    assert streamed == "x | images=0 | raw=True"


def test_usage_counts_what_is_returned_after_a_stop_string(srv):
    r = _client(srv).chat.completions.create(model="toy", messages=[{"role": "user", "content": "a b c"}],
                                             stop=["|"], max_tokens=40)  # fmt: skip
    assert r.choices[0].message.content == "a b c " and r.usage.completion_tokens == 3


def test_errors_are_openai_shaped(srv):
    c = _client(srv)
    with pytest.raises(openai.BadRequestError) as err:  # 60 words > the 50-word context
        c.chat.completions.create(model="toy", messages=[{"role": "user", "content": "w " * 60}])
    assert err.value.code == "context_length_exceeded" and "maximum context length is 50" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:  # fits, but not with the completion budget asked for
        c.chat.completions.create(model="toy", messages=[{"role": "user", "content": "w " * 40}], max_tokens=20)
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="toy", messages=[{"role": "user", "content": "x"}], temperature=5)
    assert err.value.body["param"] == "temperature"
    bad = httpx.post(
        srv.url + "/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    missing = httpx.get(srv.url + "/nope")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


def test_body_size_and_timeout_limits():
    slow = ScriptedBackend(lambda req: (time.sleep(1.5), "late")[1])
    limits = ServerLimits(max_body_bytes=2000, request_timeout_s=0.3)
    with start_server_thread(slow, limits=limits) as s:
        c = _client(s)
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 5000}])
        assert err.value.status_code == 413 and err.value.code == "request_too_large"
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert err.value.status_code == 504 and err.value.code == "timeout"


def test_twenty_concurrent_requests_are_batched_and_all_answered():
    lock = threading.Lock()
    batches = []

    class Recording(ScriptedBackend):
        def generate(self, requests):
            with lock:
                batches.append(len(requests))
            time.sleep(0.05)  # a decode step: lets the next requests queue up behind it
            return super().generate(requests)

    with start_server_thread(Recording(_echo), max_batch_size=8, batch_wait_ms=20) as s:
        c = _client(s)

        def ask(i):
            r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}])
            return r.choices[0].message.content

        with ThreadPoolExecutor(20) as pool:
            out = list(pool.map(ask, range(20)))
    assert out == [f"q{i} | images=0 | raw=False" for i in range(20)]
    assert sum(batches) == 20 and max(batches) > 1


def test_local_model_refuses_a_prompt_over_its_context(hf_server):
    """The issue's repro: ~9,000 tokens into SmolLM2's 8,192-token context used to return 200 with garbage."""
    c = _client(hf_server)
    t0 = time.perf_counter()
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": "effusion " * 9000}])
    assert err.value.code == "context_length_exceeded" and "8192" in err.value.message
    assert time.perf_counter() - t0 < 20  # refused before any generation
    r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "Say yes."}], max_tokens=3,
                                  temperature=0, stream=True, stream_options={"include_usage": True})  # fmt: skip
    chunks = list(r)
    assert chunks[-1].usage.completion_tokens <= 3 and "".join(
        ch.choices[0].delta.content or "" for ch in chunks if ch.choices
    )


def test_local_model_usage_counts_the_tokens_generated_before_an_early_stop(hf_server, hf_backend):
    question = "What is 2+2? Answer with a number only."  # SmolLM2 answers in a few tokens, then stops
    r = _client(hf_server).chat.completions.create(model="m", messages=[{"role": "user", "content": question}],
                                                   max_tokens=64, temperature=0)  # fmt: skip
    choice = r.choices[0]
    assert choice.finish_reason == "stop"
    n = len(hf_backend.tokenizer(choice.message.content, add_special_tokens=False)["input_ids"])
    assert r.usage.completion_tokens < 64 and abs(r.usage.completion_tokens - n) <= 1
