"""A deterministic backend for tests: answers come from a mapping, a JSONL file or a function.

The key of a scripted answer is the text of the last user message. A JSONL file holds one object per
line: ``{"prompt": "...", "response": "..."}`` (optionally ``"logprobs": [[token, logprob], ...]``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medfm.backends.base import (
    Backend,
    Capabilities,
    ChatMessage,
    GenerationRequest,
    GenerationResponse,
    ScoreResult,
    TokenLogprob,
    Usage,
    as_messages,
)
from medfm.core.errors import DataError

log = logging.getLogger(__name__)

Responder = Callable[[GenerationRequest], "str | GenerationResponse"]
Scorer = Callable[[list[ChatMessage], str], float]


def last_user_text(messages: Sequence[ChatMessage]) -> str:
    return next((m.content for m in reversed(messages) if m.role == "user"), "")


def load_script(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a JSONL script into ``{prompt: {"response": ..., "logprobs": ...}}``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"scripted backend file {path} does not exist (expected JSONL with prompt/response)")
    out: dict[str, dict[str, Any]] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(
                f"{path}:{i} is not valid JSON; each line needs {{'prompt': ..., 'response': ...}}"
            ) from None
        if not isinstance(row, dict) or "prompt" not in row or "response" not in row:
            raise DataError(f"{path}:{i} needs the fields 'prompt' and 'response'")
        out[str(row["prompt"])] = row
    return out


class ScriptedBackend(Backend):
    """Deterministic answers for tests.

    Args:
        script: ``{last user message: answer}``, a path to a JSONL script, or a function of the request
            returning the answer text or a full :class:`GenerationResponse`.
        default: answer for prompts the script does not know; None makes them per-item errors.
        scorer: optional ``f(messages, continuation) -> logprob`` that enables :meth:`score`.
        capabilities: override the declared capabilities (e.g. to test capability checks).
        model: the model name reported in responses.

    Every request is recorded in ``calls`` (thread-safe), so tests can count backend calls.
    """

    def __init__(
        self,
        script: Mapping[str, str] | str | Path | Responder,
        default: str | None = None,
        scorer: Scorer | None = None,
        capabilities: Capabilities | None = None,
        model: str = "scripted",
        context_length: int | None = None,
    ):
        self._fn: Responder | None = None
        self.context_length = context_length  # in words (a scripted "token" is a word)
        self._table: dict[str, dict[str, Any]] = {}
        if callable(script):
            self._fn = script
            self.spec = "scripted:<function>"
        elif isinstance(script, str | Path):
            self._table = load_script(script)
            self.spec = f"scripted:{script}"
        else:
            self._table = {str(k): {"response": v} for k, v in script.items()}
            self.spec = "scripted:<mapping>"
        self.default = default
        self.scorer = scorer
        self.model_name = model
        self.capabilities = capabilities or Capabilities(
            chat=True, images=True, json_mode=True, logprobs=True, scoring=scorer is not None, attentions=False
        )
        self.calls: list[GenerationRequest] = []
        self._lock = threading.Lock()

    def _answer(self, req: GenerationRequest) -> GenerationResponse:
        if self._fn is not None:
            out = self._fn(req)
            if isinstance(out, GenerationResponse):
                return out
            text, lps = str(out), None
        else:
            key = last_user_text(req.messages)
            row = self._table.get(key)
            if row is None:
                if self.default is None:
                    return GenerationResponse.failed(f"no scripted answer for prompt {key[:60]!r}", self.model_name)
                row = {"response": self.default}
            text, lps = str(row["response"]), row.get("logprobs")
        words = text.split()
        if req.logprobs and lps is None:
            lps = [[w, 0.0] for w in words]
        finish = "stop"
        if len(words) > req.max_tokens:
            text, finish = " ".join(words[: req.max_tokens]), "length"
        for s in req.stop:
            if s and s in text:
                text, finish = text[: text.index(s)], "stop"
        prompt_tokens = sum(len(m.content.split()) for m in req.messages)
        return GenerationResponse(
            text=text,
            finish_reason=finish,
            model=self.model_name,
            logprobs=[TokenLogprob(str(t), float(lp)) for t, lp in lps] if req.logprobs and lps else None,
            usage=Usage(prompt_tokens, len(text.split())),  # what is returned (after a stop string), in words
        )

    def prompt_tokens(self, request: GenerationRequest) -> int | None:
        """Prompt length in words (the scripted backend's tokens)."""
        return sum(len(m.content.split()) for m in request.messages)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResponse]:
        out = []
        for req in requests:
            with self._lock:
                self.calls.append(req)
            try:
                out.append(self._answer(req))
            except Exception as exc:  # a scripted function failing for one item must not abort the batch
                log.warning("scripted backend failed for one request: %s", exc)
                out.append(GenerationResponse.failed(f"{type(exc).__name__}: {exc}", self.model_name))
        return out

    def score(self, prompts: Sequence[str | Sequence[ChatMessage]], continuations: Sequence[str]) -> list[ScoreResult]:
        if self.scorer is None:
            return super().score(prompts, continuations)
        return [ScoreResult(float(self.scorer(as_messages(p), c))) for p, c in zip(prompts, continuations)]
