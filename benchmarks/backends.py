"""Benchmark: throughput of the openai backend against `medfm serve` at concurrency 1, 4 and 16, and the
response-cache hit path against a miss, measured side by side in one run.

Usage: ``.venv/bin/python benchmarks/backends.py [--requests 16] [--max_tokens 16] [--rounds 2]``.
Writes ``benchmarks/results/backends.json``. Starts ``medfm serve --model hf:default`` on 127.0.0.1 (free
port) in a subprocess, so client and server do not share a Python interpreter (as in real use).
"""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from medfm.backends.base import GenerationRequest
from medfm.backends.cache import CachedBackend
from medfm.backends.openai import OpenAIBackend
from medfm.backends.server import free_port
from medfm.core.bench import Benchmark

log = logging.getLogger("benchmarks.backends")
ROOT = Path(__file__).resolve().parents[1]
TOPICS = [
    "the heart",
    "the lungs",
    "a rib fracture",
    "pleural effusion",
    "pneumothorax",
    "cardiomegaly",
    "a chest X-ray",
    "a CT scan",
    "an MRI scan",
    "ultrasound",
    "the liver",
    "the kidneys",
    "the spleen",
    "the aorta",
    "the diaphragm",
    "atelectasis",
]


def prompts(n: int, tag: str, max_tokens: int) -> list[GenerationRequest]:
    """``n`` distinct short questions (``tag`` makes sets distinct, so no answer is reused)."""
    return [
        GenerationRequest.of(f"In one sentence, what is {TOPICS[i % len(TOPICS)]}? ({tag} {i})", max_tokens=max_tokens)
        for i in range(n)
    ]


def throughput(url: str, concurrency: int, reqs: list[GenerationRequest]) -> tuple[float, int]:
    """Requests per second of ``reqs`` sent with ``concurrency`` in flight; and how many succeeded."""
    client = OpenAIBackend(url, max_concurrency=concurrency, max_retries=0, timeout=600)
    t0 = time.perf_counter()
    out = client.generate(reqs)
    secs = time.perf_counter() - t0
    client.close()
    return len(reqs) / secs, sum(o.ok for o in out)


def main() -> int:
    bench = Benchmark("backends", __doc__, default_seeds=1)
    ap = bench.parser
    ap.add_argument("--requests", type=int, default=16, help="requests per concurrency level and round")
    ap.add_argument("--max_tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of the three levels")
    args = bench.parse()
    if bench.quick:
        args.requests, args.rounds = 4, 1
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medfm.cli",
            "serve",
            "--model",
            "hf:default",
            "--port",
            str(port),
            "--device",
            "cpu",
            "--max_batch_size",
            "16",
            "--threads",
            "1",
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        t0 = time.perf_counter()
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.perf_counter() - t0 > 300:
                raise SystemExit("medfm serve did not start")
            time.sleep(0.5)
        log.info("server up after %.1f s", time.perf_counter() - t0)

        def make(n: int, tag: str) -> list[GenerationRequest]:
            return prompts(n, tag, args.max_tokens)

        throughput(url, 4, make(4, "warm-up"))
        levels = (1, 4, 16)
        rps: dict[int, list[float]] = {c: [] for c in levels}
        failures = 0
        for rnd in range(args.rounds):
            for c in levels:
                value, ok = throughput(url, c, make(args.requests, f"r{rnd}"))
                failures += args.requests - ok
                rps[c].append(value)
                log.info("round %d concurrency %2d: %.2f requests/s", rnd, c, value)

        # Cache: the same distinct requests, first as misses (they reach the server), then as hits.
        with tempfile.TemporaryDirectory() as tmp:
            cached = CachedBackend(OpenAIBackend(url, max_concurrency=1, timeout=600), Path(tmp) / "cache.sqlite")
            reqs = make(args.requests, "cache")
            miss_t, hit_t = [], []
            for r in reqs:
                t = time.perf_counter()
                a = cached.generate([r])[0]
                miss_t.append(time.perf_counter() - t)
                assert a.ok and not a.cached, a.error
            for r in reqs:
                t = time.perf_counter()
                a = cached.generate([r])[0]
                hit_t.append(time.perf_counter() - t)
                assert a.cached
            cached.close()
    finally:
        proc.terminate()
        proc.wait(30)

    med = {c: statistics.median(v) for c, v in rps.items()}
    miss_ms, hit_ms = 1000 * statistics.median(miss_t), 1000 * statistics.median(hit_t)
    speedup = miss_ms / hit_ms
    r4, r16 = med[4] / med[1], med[16] / med[4]
    per_round = {c: [round(x, 3) for x in v] for c, v in rps.items()}
    claims = [
        bench.claim(
            "concurrency-4-vs-1",
            round(r4, 3),
            n=args.rounds,
            note=f"median over {args.rounds} interleaved rounds; per round {per_round}",
        ),
        bench.claim(
            "concurrency-16-vs-4",
            round(r16, 3),
            n=args.rounds,
            note="2 shared CPU cores: batching 16 saturates the CPU sooner than 4" if r16 <= 1 else "",
        ),
        bench.claim(
            "cache-hit-vs-miss",
            round(speedup, 1),
            n=len(reqs),
            note=f"miss {miss_ms:.1f} ms (HTTP + generation), hit {hit_ms:.3f} ms",
        ),
    ]
    metrics = {
        "requests_per_s": {str(c): round(v, 3) for c, v in med.items()},
        "requests_per_s_per_round": {str(c): v for c, v in per_round.items()},
        "cache_miss_ms_median": round(miss_ms, 2),
        "cache_hit_ms_median": round(hit_ms, 4),
        "requests_per_level": args.requests,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "failed_requests": failures,
        "model": "SmolLM2-135M-Instruct (hf:default, float32, CPU, 1 torch thread)",
    }
    path = bench.write(metrics)
    for c in claims:
        log.info("%-22s %-40s ours=%s holds=%s", c.id, c.metric, c.ours, c.holds)
    log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
