"""`medfm serve` driven by the openai backend over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from medfm.backends.base import ChatMessage, GenerationRequest
from medfm.backends.openai import OpenAIBackend
from medfm.backends.scripted import ScriptedBackend
from medfm.backends.server import free_port, start_server_thread


def test_http_path_reproduces_the_local_model_exactly(hf_backend, hf_server):
    """Same greedy text and per-token logprobs through HTTP as from the in-process model."""
    client = OpenAIBackend(hf_server.url, max_concurrency=4)
    reqs = [
        GenerationRequest.of(p, max_tokens=8, logprobs=True)
        for p in ["What is the capital of France?", "Say hello.", "What is 2+2?"]
    ]
    remote = client.generate(reqs)
    local = hf_backend.generate(reqs)
    for r, lo in zip(remote, local):
        assert r.ok, r.error
        assert r.text == lo.text and r.finish_reason == lo.finish_reason
        assert [t.token for t in r.logprobs] == [t.token for t in lo.logprobs]
        assert max(abs(a.logprob - b.logprob) for a, b in zip(r.logprobs, lo.logprobs)) < 1e-3
    assert max(hf_server.app.state.batcher.batches) > 1  # concurrent requests were decoded together
    models = httpx.get(hf_server.url + "/models").json()
    assert models["data"][0]["id"] == "SmolLM2-135M-Instruct"
    assert httpx.get(hf_server.url.removesuffix("/v1") + "/health").json()["status"] == "ok"
    client.close()


def test_openai_wire_format_n_seed_json_and_errors():
    seen = []

    def answer(req):
        seen.append(req)
        return f"seed={req.seed} json={req.json_mode}"

    with start_server_thread(ScriptedBackend(answer), model_name="toy") as srv:
        r = httpx.post(
            srv.url + "/chat/completions",
            json={
                "model": "toy",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "n": 3,
                "temperature": 0.7,
                "seed": 10,
                "max_tokens": 5,
                "logprobs": True,
                "response_format": {"type": "json_object"},
            },
        ).json()
        assert r["object"] == "chat.completion" and len(r["choices"]) == 3
        assert [c["message"]["content"] for c in r["choices"]] == [f"seed={s} json=True" for s in (10, 11, 12)]
        assert r["choices"][0]["logprobs"]["content"][0]["token"] == "seed=10"
        assert r["usage"]["completion_tokens"] == 6
        bad = httpx.post(srv.url + "/chat/completions", json={"messages": [], "max_tokens": 3})
        assert bad.status_code == 400
        bad = httpx.post(
            srv.url + "/chat/completions",
            json={"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}},
        )
        assert bad.status_code == 400 and "json_schema" in bad.json()["error"]["message"]
        missing = httpx.post(srv.url + "/chat/completions", json={"max_tokens": 3})
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "messages"
        # unknown prompt -> backend error -> 500, reported per item by the client without retrying forever
        client = OpenAIBackend(srv.url, max_retries=1, backoff=0.001)
        assert client.model_name == "toy"
    failing = ScriptedBackend({"known": "yes"})
    with start_server_thread(failing) as srv:
        client = OpenAIBackend(srv.url, max_retries=1, backoff=0.001)
        out = client.generate([GenerationRequest.of("known"), GenerationRequest.of("unknown")])
        assert out[0].text == "yes" and not out[1].ok and "no scripted answer" in out[1].error
        client.close()


def test_images_travel_as_data_urls():
    from PIL import Image

    sizes = []

    def answer(req):
        sizes.extend(im.size for m in req.messages for im in m.images)
        return "seen"

    with start_server_thread(ScriptedBackend(answer)) as srv:
        client = OpenAIBackend(srv.url)
        r = client.generate([GenerationRequest([ChatMessage("user", "look", [Image.new("RGB", (5, 7))])])])[0]
        assert r.text == "seen" and sizes == [(5, 7)]


def test_server_requires_the_api_key_when_configured(monkeypatch):
    secret = "sk-serve-SECRET-42"
    monkeypatch.setenv("MEDFM_SERVE_TEST_KEY", secret)
    with start_server_thread(ScriptedBackend({"q": "a"}), api_key=secret) as srv:
        assert httpx.get(srv.url + "/models").status_code == 401
        ok = OpenAIBackend(srv.url, api_key_env="MEDFM_SERVE_TEST_KEY")
        assert ok.chat("q").text == "a"
        wrong = OpenAIBackend(srv.url, model="x", api_key_env="NOT_SET_ANYWHERE_VAR", max_retries=0)
        r = wrong.chat("q")
        assert not r.ok and "401" in r.error


def test_medfm_serve_cli_end_to_end(tmp_path):
    """`medfm serve` in a subprocess (scripted model: no weights to load), driven over HTTP; key never logged."""
    script = tmp_path / "answers.jsonl"
    script.write_text(json.dumps({"prompt": "ping", "response": "pong"}) + "\n")
    port = free_port()
    secret = "sk-cli-SECRET-777"
    env = {**os.environ, "MEDFM_CLI_KEY": secret, "OPENAI_API_KEY": secret}
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log_fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "medfm.cli",
                "-v",
                "serve",
                "--model",
                f"scripted:{script}",
                "--port",
                str(port),
                "--api_key_env",
                "MEDFM_CLI_KEY",
            ],
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            url = f"http://127.0.0.1:{port}/v1"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url.removesuffix("/v1") + "/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
            os.environ["OPENAI_API_KEY"] = secret
            try:
                client = OpenAIBackend(url)
                out = client.generate([GenerationRequest.of("ping"), GenerationRequest.of("ping", max_tokens=1)])
            finally:
                del os.environ["OPENAI_API_KEY"]
            assert [o.text for o in out] == ["pong", "pong"]
        finally:
            proc.terminate()
            proc.wait(20)
    assert "serving scripted:" in log_path.read_text()
    assert secret not in log_path.read_text()


def test_medfm_serve_cli_usage_errors(capsys):
    from medfm.cli import main

    assert main(["serve", "--dry_run", "--port", "9999"]) == 0
    assert "would serve hf:default at http://127.0.0.1:9999/v1" in capsys.readouterr().out
    assert main(["serve", "--api_key_env", "SURELY_UNSET_VAR_123", "--model", "scripted:x.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "SURELY_UNSET_VAR_123" in err and len(err.strip().splitlines()) == 1
    assert main(["serve", "--model", "nope:x"]) == 2


@pytest.mark.parametrize("name", ["demo"])
def test_demo_step_writes_report_and_keeps_the_key_out(hf_backend, tmp_path, monkeypatch, name):
    from medfm.backends.demo import run_demo

    secret = "sk-demo-SECRET-31337"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    outcome = run_demo(tmp_path / name, seed=0)
    assert outcome.report.is_file() and "hit=True" in outcome.summary and "3/3" in outcome.summary
    rows = [json.loads(x) for x in (tmp_path / name / "samples.jsonl").read_text().splitlines()]
    assert "Paris" in rows[0]["answer"]
    for p in Path(tmp_path).rglob("*"):
        if p.is_file():
            assert secret.encode() not in p.read_bytes(), p
