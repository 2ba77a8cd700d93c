"""The OpenAI-compatible client against httpx mock transports: payloads, retries, concurrency, API key."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time

import httpx
import pytest

from medfm.backends.base import ChatMessage, GenerationRequest
from medfm.backends.openai import OpenAIBackend


def _completion(text: str, model: str = "m") -> dict:
    return {
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": {
                    "content": [{"token": text, "logprob": -0.5, "top_logprobs": [{"token": text, "logprob": -0.5}]}]
                },
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }


def _backend(handler, **kw) -> OpenAIBackend:
    kw.setdefault("backoff", 0.001)
    return OpenAIBackend("http://127.0.0.1:9/v1", model="m", transport=httpx.MockTransport(handler), **kw)


def test_payload_images_json_mode_and_parsing(tmp_path):
    from PIL import Image

    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=_completion("ok"))

    b = _backend(handler)
    img = Image.new("RGB", (2, 2), (1, 2, 3))
    req = GenerationRequest(
        [ChatMessage("system", "be brief"), ChatMessage("user", "describe", [img])],
        max_tokens=7,
        temperature=0.5,
        seed=3,
        json_mode=True,
        logprobs=True,
        top_logprobs=1,
        stop=["\n"],
    )
    r = b.generate([req])[0]
    body = seen[0]
    assert body["model"] == "m" and body["max_tokens"] == 7 and body["seed"] == 3 and body["temperature"] == 0.5
    assert body["response_format"] == {"type": "json_object"} and body["logprobs"] is True and body["stop"] == ["\n"]
    parts = body["messages"][1]["content"]
    assert parts[0] == {"type": "text", "text": "describe"}
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert r.ok and r.text == "ok" and r.logprobs[0].logprob == -0.5 and r.logprobs[0].top == [("ok", -0.5)]
    assert r.usage.prompt_tokens == 3 and r.usage.completion_tokens == 1


def test_retries_with_backoff_on_429_and_5xx_then_succeeds():
    codes = iter([429, 503, 200])
    times = []

    def handler(request):
        times.append(time.monotonic())
        code = next(codes)
        return httpx.Response(code, json=_completion("done") if code == 200 else {"error": {"message": "busy"}})

    b = _backend(handler, backoff=0.05)
    r = b.chat("x")
    assert r.ok and r.text == "done" and b.attempts == 3
    gaps = [t1 - t0 for t0, t1 in itertools.pairwise(times)]
    assert gaps[0] >= 0.05 * 0.5 and gaps[1] >= 0.1 * 0.5  # exponential: base, then 2x base (jitter 0.5-1)


def test_retry_after_header_and_connection_errors():
    calls = {"n": 0}

    def handler(request):
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.ConnectError("refused", request=request)
        if calls["n"] == 2:
            return httpx.Response(429, headers={"retry-after": "0.01"}, json={"error": {"message": "slow down"}})
        return httpx.Response(200, json=_completion("fine"))

    assert _backend(handler).chat("x").text == "fine" and calls["n"] == 3


def test_client_errors_are_not_retried_and_exhausted_retries_are_per_item():
    def handler(request):
        body = json.loads(request.content)
        if body["messages"][-1]["content"] == "bad":
            return httpx.Response(400, json={"error": {"message": "bad request"}})
        if body["messages"][-1]["content"] == "down":
            return httpx.Response(500, json={"error": {"message": "boom"}})
        return httpx.Response(200, json=_completion("good"))

    b = _backend(handler, max_retries=2)
    out = b.generate([GenerationRequest.of(p) for p in ["a", "bad", "down", "b"]])
    assert [o.ok for o in out] == [True, False, False, True]
    assert "HTTP 400: bad request" in out[1].error and "attempts" not in out[1].error
    assert "HTTP 500: boom" in out[2].error and "after 3 attempts" in out[2].error
    assert b.attempts == 2 + 1 + 3


def test_timeout_is_reported_per_item():
    def handler(request):
        raise httpx.ReadTimeout("timed out", request=request)

    r = _backend(handler, max_retries=1).chat("x")
    assert not r.ok and "ReadTimeout" in r.error and r.finish_reason == "error"


def test_bounded_concurrency_and_order():
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def handler(request):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.02)
        with lock:
            state["now"] -= 1
        return httpx.Response(200, json=_completion(json.loads(request.content)["messages"][0]["content"]))

    b = _backend(handler, max_concurrency=3)
    out = b.generate([GenerationRequest.of(str(i)) for i in range(24)])
    assert [o.text for o in out] == [str(i) for i in range(24)]
    assert state["max"] == 3


def test_api_key_is_sent_but_never_logged_or_shown(monkeypatch, caplog):
    secret = "sk-test-SECRET-0123456789"
    monkeypatch.setenv("MEDFM_TEST_KEY", secret)
    seen = []

    def handler(request):
        seen.append(request.headers.get("authorization"))
        if len(seen) == 1:
            return httpx.Response(503, json={"error": {"message": "retry me"}})
        return httpx.Response(200, json=_completion("ok"))

    with caplog.at_level(logging.DEBUG):
        b = _backend(handler, api_key_env="MEDFM_TEST_KEY")
        assert b.chat("x").ok
    assert seen == [f"Bearer {secret}"] * 2
    assert secret not in caplog.text and secret not in repr(b) and secret not in b.spec
    assert secret not in json.dumps({k: str(v) for k, v in vars(b).items()})
    monkeypatch.delenv("MEDFM_TEST_KEY")
    assert b.chat("y").ok and seen[-1] is None  # unset variable: no Authorization header


def test_model_discovery_from_models_endpoint():
    def handler(request):
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "served-model"}]})
        return httpx.Response(200, json=_completion("x", model="served-model"))

    b = OpenAIBackend("http://127.0.0.1:9/v1", transport=httpx.MockTransport(handler))
    assert b.model_name == "served-model" and b.spec.endswith("#served-model")


@pytest.mark.parametrize("payload", [{"choices": []}, {"nothing": 1}])
def test_malformed_completion_is_a_per_item_error(payload):
    r = _backend(lambda req: httpx.Response(200, json=payload)).chat("x")
    assert not r.ok and "no choices" in r.error
