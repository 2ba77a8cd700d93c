from __future__ import annotations

import json

import pytest

from medfm.backends import make_backend
from medfm.backends.base import (
    Capabilities,
    ChatMessage,
    GenerationRequest,
    GenerationResponse,
    TokenLogprob,
    Usage,
    image_from_data_url,
    image_to_data_url,
    parse_json_response,
    require_capabilities,
)
from medfm.backends.scripted import ScriptedBackend
from medfm.core.errors import UsageError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1, "b": "x"}', {"a": 1, "b": "x"}),
        ('```json\n{"a": 1, "b": "x"}\n```', {"a": 1, "b": "x"}),
        ('Sure! Here it is: {"a": 1, "b": "x"} Hope this helps.', {"a": 1, "b": "x"}),
        ('{"a": 1, "b": "x",}', {"a": 1, "b": "x"}),
        ('{"a": [1, 2,], "b": "x"}', {"a": [1, 2], "b": "x"}),
        ('{"a": 1, "b": "a {brace} inside"}', {"a": 1, "b": "a {brace} inside"}),
        ('```\n{"a": {"n": 2}, "b": "x",}\n```', {"a": {"n": 2}, "b": "x"}),
    ],
)
def test_parse_json_repairs_unambiguous_cases(text, expected):
    obj, err = parse_json_response(text, ["a", "b"])
    assert err is None
    assert obj == expected


@pytest.mark.parametrize(
    ("text", "error_part"),
    [
        ("", "empty"),
        ("no json here", "no complete JSON object"),
        ('{"a": 1, "b": ', "no complete JSON object"),
        ("[1, 2, 3]", "expected a JSON object"),
        ('{"a": 1}', "missing fields: b"),
        ("{'a': 1, 'b': 2}", "invalid JSON"),
    ],
)
def test_parse_json_reports_what_it_cannot_repair(text, error_part):
    obj, err = parse_json_response(text, ["a", "b"])
    assert obj is None
    assert error_part in err
    assert "\n" not in err


def test_require_capabilities_fails_at_once_with_one_line():
    backend = ScriptedBackend({}, capabilities=Capabilities(chat=True, logprobs=True))
    require_capabilities(backend, {"chat", "logprobs"})
    with pytest.raises(UsageError) as exc:
        require_capabilities(backend, {"attentions", "logprobs"}, purpose="headentropy")
    msg = str(exc.value)
    assert "attentions" in msg and "headentropy" in msg and "hf:default" in msg
    assert "\n" not in msg
    with pytest.raises(ValueError):
        require_capabilities(backend, {"telepathy"})


def test_request_key_is_stable_and_sensitive(tmp_path):
    from PIL import Image

    from medfm.backends.cache import request_key

    img = Image.new("RGB", (4, 4), (255, 0, 0))
    path = tmp_path / "x.png"
    img.save(path)
    a = GenerationRequest([ChatMessage("user", "hi", [img])], max_tokens=5)
    b = GenerationRequest([ChatMessage("user", "hi", [Image.new("RGB", (4, 4), (255, 0, 0))])], max_tokens=5)
    assert request_key("m", a) == request_key("m", b)  # same content -> same key
    assert request_key("m", a) != request_key("m2", a)
    assert request_key("m", a) != request_key("m", GenerationRequest.of("hi", max_tokens=6))
    c = GenerationRequest([ChatMessage("user", "hi", [Image.new("RGB", (4, 4), (0, 0, 255))])], max_tokens=5)
    assert request_key("m", a) != request_key("m", c)
    json.dumps(a.key_dict())  # JSON-able


def test_image_data_url_roundtrip(tmp_path):
    from PIL import Image

    img = Image.new("RGB", (3, 2), (10, 20, 30))
    url = image_to_data_url(img)
    assert url.startswith("data:image/png;base64,")
    back = image_from_data_url(url)
    assert back.size == (3, 2) and back.getpixel((1, 1)) == (10, 20, 30)
    p = tmp_path / "im.jpg"
    img.save(p)
    assert image_to_data_url(p).startswith("data:image/jpeg;base64,")
    with pytest.raises(ValueError):
        image_from_data_url("http://example.com/x.png")


def test_response_roundtrip():
    r = GenerationResponse("x y", "length", [TokenLogprob("x", -0.5, [("x", -0.5), ("z", -1.0)])], Usage(3, 2), "m")
    back = GenerationResponse.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r


def test_make_backend_specs(tmp_path):
    script = tmp_path / "s.jsonl"
    script.write_text(json.dumps({"prompt": "hi", "response": "hello"}) + "\n")
    b = make_backend(f"scripted:{script}")
    assert b.chat("hi").text == "hello"
    cached = make_backend(f"scripted:{script}", cache=str(tmp_path / "c.sqlite"))
    assert cached.chat("hi").text == "hello" and cached.chat("hi").cached
    for bad in ["nope:x", "default", "openai:", "scripted:"]:
        with pytest.raises(UsageError):
            make_backend(bad)
    with pytest.raises(UsageError):
        make_backend("hf:/does/not/exist")
