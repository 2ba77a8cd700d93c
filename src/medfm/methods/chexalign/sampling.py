"""Sampling N candidate reports per study from the SFT policy (CheXalign ``get_completions.py``).

Two paths give the same record per study:

* the medfm VLM directly (:func:`sample_vlm`): each study's prompt is repeated N times in one ``generate`` call
  with ``do_sample=True``, ``temperature`` (default 1) and no top-k/top-p truncation;
* any backend (:func:`sample_backend`: ``hf:``, ``openai:``, ``scripted:``): N requests per study with seeds
  ``seed * 1000 + k``; with a response cache, re-sampling is free.

Resumable and cached: studies are processed in fixed chunks; each finished chunk is appended to
``candidates.partial.jsonl`` (flushed line by line, a torn last line is ignored), and a rerun into the same run
directory skips studies already there. Sampling RNG is seeded per chunk from ``(seed, chunk index)``, so a resumed
run produces exactly what an uninterrupted one would. The final ``candidates.jsonl`` is written atomically.

Record per study: ``id``, ``images`` (absolute paths), ``prompt``, ``reference``, ``labels``, ``candidates`` (N texts,
possibly empty), ``tokens`` (generated tokens per candidate), ``errors`` (per candidate, None when fine).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from medfm.methods.vlm.data import Example

log = logging.getLogger(__name__)


def study_record(ex: Example) -> dict[str, Any]:
    """The study fields every later stage carries along."""
    return {
        "id": ex.id,
        "images": [str(Path(p).resolve()) for p in ex.images],
        "prompt": ex.prompt,
        "reference": ex.answer,
        "labels": ex.labels,
        "split": ex.split,
    }


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a torn (unparseable) last line from an interrupted write is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                continue
            from medfm.core.errors import DataError

            raise DataError(f"{path}:{i + 1} is not valid JSON; delete the file to start over") from None
    return rows


def chunks(n: int, size: int) -> Iterator[tuple[int, range]]:
    size = max(1, size)
    for c, start in enumerate(range(0, n, size)):
        yield c, range(start, min(n, start + size))


def run_resumable(
    examples: Sequence[Example],
    partial: Path,
    batch_size: int,
    sample_chunk: Callable[[list[Example], int], list[tuple[list[str], list[int], list[str | None]]]],
    progress: Callable[..., Any] | None = None,
) -> list[dict[str, Any]]:
    """Sample every study not yet in ``partial``; returns all records in ``examples`` order.

    Args:
        sample_chunk: ``(studies, chunk index) -> [(candidates, tokens, errors) per study]``.
    """
    done = {r["id"]: r for r in read_jsonl(partial)}
    todo = [(c, idx) for c, idx in chunks(len(examples), batch_size) if any(examples[i].id not in done for i in idx)]
    if done:
        log.info("resuming: %d of %d studies already sampled", len(done), len(examples))
    it = progress(todo, desc="sampling") if progress else todo
    with open(partial, "a", encoding="utf-8") as fh:
        for c, idx in it:
            studies = [examples[i] for i in idx]
            outs = sample_chunk(studies, c)
            for ex, (cands, toks, errs) in zip(studies, outs):
                rec = {**study_record(ex), "candidates": cands, "tokens": toks, "errors": errs}
                done[ex.id] = rec
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
    return [done[ex.id] for ex in examples]


def vlm_sampler(
    model: Any, processor: Any, n: int, temperature: float, max_new_tokens: int, seed: int
) -> Callable[[list[Example], int], list[tuple[list[str], list[int], list[str | None]]]]:
    """Chunk sampler with the medfm VLM (``generate`` with ``temperature`` > 0, greedy at 0)."""
    import torch

    from medfm.methods.vlm.config import GenerationOptions
    from medfm.methods.vlm.infer import generate

    def fn(studies: list[Example], chunk: int) -> list[tuple[list[str], list[int], list[str | None]]]:
        torch.manual_seed(int(seed) * 1_000_003 + int(chunk))
        reps = [ex for ex in studies for _ in range(n)]
        opts = GenerationOptions(max_new_tokens=max_new_tokens, batch_size=len(reps), temperature=temperature)
        g = generate(model, processor, reps, opts=opts)
        out = []
        for j in range(len(studies)):
            out.append((g.texts[j * n : (j + 1) * n], g.new_tokens[j * n : (j + 1) * n], [None] * n))
        return out

    return fn


def backend_sampler(
    backend: Any, n: int, temperature: float, max_new_tokens: int, seed: int
) -> Callable[[list[Example], int], list[tuple[list[str], list[int], list[str | None]]]]:
    """Chunk sampler through a :class:`medfm.backends.Backend` (one request per candidate, seeds ``seed*1000+k``)."""
    from medfm.backends import ChatMessage, GenerationRequest

    def fn(studies: list[Example], chunk: int) -> list[tuple[list[str], list[int], list[str | None]]]:
        del chunk
        reqs = [
            GenerationRequest(
                [ChatMessage("user", ex.prompt, images=[str(p) for p in ex.images])],
                max_tokens=max_new_tokens,
                temperature=temperature,
                seed=int(seed) * 1000 + k,
            )
            for ex in studies
            for k in range(n)
        ]
        resps = backend.generate(reqs)
        out = []
        for j in range(len(studies)):
            rs = resps[j * n : (j + 1) * n]
            out.append(
                (
                    [r.text.strip() if r.ok else "" for r in rs],
                    [r.usage.completion_tokens for r in rs],
                    [r.error for r in rs],
                )
            )
        return out

    return fn
