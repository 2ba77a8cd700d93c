"""Demo step: serve the local SmolLM2 model on loopback and drive it through the OpenAI-compatible client."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from medfm.demo import Headline, StepOutcome

log = logging.getLogger(__name__)

PROMPTS = [
    ("What is the capital of France? Answer in one sentence.", False),
    ("Name one organ that a chest X-ray shows. Answer in one sentence.", False),
    ('Return a JSON object {"finding": ..., "present": true|false} for the report: "Mild cardiomegaly."', True),
]


def run_demo(out_dir: Path, seed: int) -> StepOutcome:
    """Start ``medfm serve``'s app on 127.0.0.1 (free port) with hf:default, send chat requests through the
    openai backend with a response cache, repeat one to show a cache hit, and write report.html."""
    from medfm.backends.base import GenerationRequest, parse_json_response
    from medfm.backends.cache import CachedBackend
    from medfm.backends.hf import shared_backend
    from medfm.backends.openai import OpenAIBackend
    from medfm.backends.server import start_server_thread
    from medfm.core.files import atomic_write_text
    from medfm.core.report import Report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    local = shared_backend("default", threads=1)  # 1 thread: robust on a CPU shared with other jobs
    load_s = time.perf_counter() - t0
    db = out_dir / "responses.sqlite"
    if db.exists():  # a fresh cache each demo run, so the first pass really is a miss
        for p in out_dir.glob("responses.sqlite*"):
            p.unlink()
    rows = []
    with start_server_thread(local) as server:
        client = CachedBackend(OpenAIBackend(server.url, max_concurrency=4), db)
        reqs = [GenerationRequest.of(p, max_tokens=40, json_mode=j, seed=seed, logprobs=True) for p, j in PROMPTS]
        t1 = time.perf_counter()
        first = client.generate(reqs)
        miss_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        again = client.generate(reqs[:1])[0]
        hit_s = time.perf_counter() - t2
        for (prompt, is_json), resp in zip(PROMPTS, first):
            parsed = ""
            if is_json:
                obj, err = parse_json_response(resp.text)
                parsed = str(obj) if obj is not None else f"error: {err}"
            mean_lp = sum(t.logprob for t in resp.logprobs) / len(resp.logprobs) if resp.logprobs else None
            rows.append(
                {
                    "prompt": prompt,
                    "answer": resp.text or resp.error,
                    "finish": resp.finish_reason,
                    "tokens": resp.usage.completion_tokens,
                    "mean logprob": mean_lp,
                    "JSON": parsed,
                }
            )
        client.close()
        url = server.url
    n_ok = sum(r.ok for r in first)
    speedup = (miss_s / len(reqs)) / max(hit_s, 1e-9)
    rep = Report("Model backends", subtitle=f"SmolLM2-135M-Instruct served at {url} (OpenAI API), seed {seed}")
    rep.add_table("Chat completions through medfm serve", rows)
    rep.add_table(
        "Timing",
        [
            {"step": "load model (cached safetensors)", "value": load_s, "unit": "s"},
            {"step": f"{len(reqs)} requests, cache miss (concurrent)", "value": miss_s, "unit": "s"},
            {"step": "1 repeated request, cache hit", "value": hit_s, "unit": "s"},
            {"step": "cache hit speed-up per request", "value": speedup, "unit": "x"},
        ],
    )
    rep.add_text(
        "How to reproduce",
        "medfm serve --model hf:default --port 8000, then use the backend spec "
        "openai:http://127.0.0.1:8000/v1#SmolLM2-135M-Instruct in any method.",
    )
    path = rep.save(out_dir / "report.html")
    atomic_write_text(out_dir / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    summary = (
        f"{n_ok}/{len(reqs)} answers via {url}; repeated request served from cache "
        f"(hit={again.cached}, {speedup:.0f}x faster than a miss)"
    )
    return StepOutcome(path, summary, headline=Headline("answers served over the OpenAI API", n_ok,
                                                        compare=f"of {len(reqs)} requests"))  # fmt: skip
