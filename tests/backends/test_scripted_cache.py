from __future__ import annotations

import json
import multiprocessing as mp
import threading

import pytest

from medfm.backends.base import GenerationRequest
from medfm.backends.cache import CachedBackend, ResponseCache, request_key
from medfm.backends.scripted import ScriptedBackend
from medfm.core.errors import DataError, UsageError


def test_scripted_mapping_function_and_jsonl(tmp_path):
    b = ScriptedBackend({"a": "one two three"}, default=None)
    r = b.generate([GenerationRequest.of("a", max_tokens=2), GenerationRequest.of("unknown")])
    assert r[0].text == "one two" and r[0].finish_reason == "length"
    assert r[1].error and "unknown" in r[1].error
    f = ScriptedBackend(lambda req: req.messages[-1].content.upper())
    assert f.chat("abc").text == "ABC"
    p = tmp_path / "s.jsonl"
    p.write_text(json.dumps({"prompt": "q", "response": "ans", "logprobs": [["ans", -0.25]]}) + "\n\n")
    j = ScriptedBackend(p)
    out = j.chat("q", logprobs=True)
    assert out.text == "ans" and out.logprobs[0].logprob == -0.25
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:1"):
        ScriptedBackend(bad)


def test_batch_of_thousand_with_bad_answers_reports_per_item():
    """One malformed answer never aborts a batch: bad items carry errors, repairable ones are repaired."""

    def answer(req):
        i = int(req.messages[-1].content)
        if i % 10 == 3:
            return "not json at all"
        if i % 10 == 5:
            return f'```json\n{{"id": {i}, "label": "x",}}\n```'  # fenced + trailing comma: repairable
        if i % 10 == 7:
            return f'{{"id": {i}}}'  # missing field
        if i == 999:
            raise RuntimeError("backend hiccup")
        return f'{{"id": {i}, "label": "ok"}}'

    b = ScriptedBackend(answer)
    results = b.generate_json([GenerationRequest.of(str(i)) for i in range(1000)], required_fields=["id", "label"])
    assert len(results) == 1000
    bad = {i for i, r in enumerate(results) if not r.ok}
    expected_bad = {i for i in range(1000) if i % 10 in (3, 7)} | {999}
    assert bad == expected_bad
    assert all(results[i].obj["id"] == i for i in range(1000) if i not in expected_bad)
    assert sum(r.repaired for r in results) == 100
    assert "missing fields: label" in results[7].error
    assert "RuntimeError" in results[999].error


def test_cache_modes(tmp_path):
    inner = ScriptedBackend(lambda r: "answer " + r.messages[-1].content)
    cb = CachedBackend(inner, tmp_path / "c.sqlite")
    reqs = [GenerationRequest.of(f"q{i}") for i in range(5)]
    first = cb.generate(reqs)
    assert len(inner.calls) == 5 and not any(r.cached for r in first)
    second = cb.generate(reqs)
    assert len(inner.calls) == 5 and all(r.cached for r in second)
    assert [r.text for r in first] == [r.text for r in second]
    replay = CachedBackend(ScriptedBackend({}), tmp_path / "c.sqlite", mode="replay")
    out = replay.generate([*reqs[:2], GenerationRequest.of("new")])
    assert out[0].text == "answer q0" and out[2].error and "replay" in out[2].error
    rec_inner = ScriptedBackend(lambda r: "fresh")
    rec = CachedBackend(rec_inner, tmp_path / "c.sqlite", mode="record")
    assert rec.generate(reqs[:1])[0].text == "fresh" and len(rec_inner.calls) == 1
    assert cb.generate(reqs[:1])[0].text == "fresh"  # record overwrote the entry
    # failures are not stored
    failing = CachedBackend(ScriptedBackend({}), tmp_path / "c.sqlite")
    assert not failing.generate([GenerationRequest.of("zzz")])[0].ok
    assert len(ResponseCache(tmp_path / "c.sqlite")) == 5
    with pytest.raises(UsageError):
        CachedBackend(inner, tmp_path / "c.sqlite", mode="sometimes")


def _worker(path: str, start: int, n: int) -> None:
    from medfm.backends.cache import CachedBackend as CB
    from medfm.backends.scripted import ScriptedBackend as SB

    cb = CB(SB(lambda r: "v" + r.messages[-1].content), path)
    for i in range(start, start + n):
        cb.generate([GenerationRequest.of(str(i % 60))])


def test_cache_is_safe_across_threads_and_processes(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(path, k * 17, 40)) for k in range(2)]
    for p in procs:
        p.start()
    threads = [threading.Thread(target=_worker, args=(path, k * 7, 40)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = ResponseCache(path)
    assert len(cache) == 60
    for i in range(60):
        got = cache.get(request_key("scripted", GenerationRequest.of(str(i))))
        assert got is not None and got.text == f"v{i}"
