"""Any OpenAI-compatible chat completions endpoint (vLLM, llama.cpp server, Ollama, OpenAI, ``medfm serve``).

Requests go over httpx with bounded concurrency (a thread pool of ``max_concurrency`` workers), a timeout
per request, and retries with exponential backoff and jitter on 429, 5xx and connection errors (a
``Retry-After`` header is honoured). Images are sent inline as data URLs; JSON mode uses
``response_format={"type": "json_object"}``.

The API key is read from the environment variable named by ``api_key_env`` at request time; it is only
put into the ``Authorization`` header, never stored on the object, logged, or written to a run directory.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from medfm.backends.base import (
    Backend,
    Capabilities,
    GenerationRequest,
    GenerationResponse,
    TokenLogprob,
    Usage,
    image_to_data_url,
)
from medfm.core.errors import MissingDependencyError, UsageError

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def request_payload(req: GenerationRequest, model: str) -> dict[str, Any]:
    """The JSON body of ``POST /chat/completions`` for one request."""
    messages = []
    for m in req.messages:
        if m.images:
            parts: list[dict[str, Any]] = [{"type": "text", "text": m.content}]
            parts += [{"type": "image_url", "image_url": {"url": image_to_data_url(im)}} for im in m.images]
            messages.append({"role": m.role, "content": parts})
        else:
            messages.append({"role": m.role, "content": m.content})
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": req.max_tokens,
        "temperature": req.temperature,
        "n": 1,
    }
    if req.temperature > 0 and req.top_p < 1.0:
        body["top_p"] = req.top_p
    if req.seed is not None:
        body["seed"] = req.seed
    if req.json_mode:
        body["response_format"] = {"type": "json_object"}
    if req.logprobs:
        body["logprobs"] = True
        if req.top_logprobs:
            body["top_logprobs"] = req.top_logprobs
    if req.stop:
        body["stop"] = list(req.stop)
    return body


def parse_completion(data: dict[str, Any], model: str) -> GenerationResponse:
    """A :class:`GenerationResponse` from an OpenAI chat completion JSON (its first choice)."""
    choices = data.get("choices") or []
    if not choices:
        return GenerationResponse.failed("endpoint returned no choices", model)
    ch = choices[0]
    msg = ch.get("message") or {}
    lps = None
    content_lps = (ch.get("logprobs") or {}).get("content")
    if content_lps is not None:
        lps = [
            TokenLogprob(
                str(t.get("token", "")),
                float(t.get("logprob", 0.0)),
                [(str(a.get("token", "")), float(a.get("logprob", 0.0))) for a in t.get("top_logprobs") or []],
            )
            for t in content_lps
        ]
    usage = data.get("usage") or {}
    return GenerationResponse(
        text=msg.get("content") or "",
        finish_reason=ch.get("finish_reason") or "stop",
        logprobs=lps,
        usage=Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)),
        model=str(data.get("model") or model),
    )


class OpenAIBackend(Backend):
    """Client of an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1``.
        model: model name sent with each request; None asks ``GET /models`` for the first one.
        api_key_env: name of the environment variable holding the API key (unset: no Authorization header).
        max_concurrency: most requests in flight at once.
        timeout: seconds per HTTP request (connect, read and write each).
        max_retries: retries after the first attempt on 429/5xx/connection errors.
        backoff: first retry delay in seconds; doubles each retry (with jitter), capped at ``max_backoff``.
        capabilities: what the endpoint supports (default: chat, images, JSON mode, logprobs).
        transport: an httpx transport (tests use ``httpx.MockTransport``).
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 4,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        capabilities: Capabilities | None = None,
        transport: Any = None,
    ):
        try:
            import httpx
        except ImportError as exc:
            raise MissingDependencyError(
                "httpx is needed for openai: backends; install it with: pip install 'medfm[serve]'"
            ) from exc
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.max_concurrency = max(1, int(max_concurrency))
        self.max_retries = max(0, int(max_retries))
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.capabilities = capabilities or Capabilities(chat=True, images=True, json_mode=True, logprobs=True)
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        self._client = httpx.Client(timeout=httpx.Timeout(timeout), limits=limits, transport=transport)
        self._pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="medfm-openai")
        self._stats_lock = threading.Lock()
        self.attempts = 0  # HTTP attempts made (including retries)
        self.model_name = model or self._first_model()
        self.spec = f"openai:{self.base_url}#{self.model_name}"

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _first_model(self) -> str:
        resp = self._request("GET", "/models")
        if isinstance(resp, str):
            raise UsageError(f"cannot list models at {self.base_url}/models ({resp}); name one: openai:URL#model")
        data = resp.json().get("data") or []
        if not data:
            raise UsageError(f"{self.base_url}/models lists no model; name one: openai:URL#model")
        return str(data[0]["id"])

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(self.max_backoff, max(0.0, float(retry_after)))
            except ValueError:
                pass
        return min(self.max_backoff, self.backoff * 2**attempt) * (0.5 + random.random() / 2)

    def _request(self, method: str, path: str, json: dict[str, Any] | None = None) -> Any:
        """The httpx response of a successful call, or a one-line error string after the retries."""
        import httpx

        url = f"{self.base_url}{path}"
        error = "no attempt made"
        for attempt in range(self.max_retries + 1):
            with self._stats_lock:
                self.attempts += 1
            retry_after = None
            try:
                resp = self._client.request(method, url, json=json, headers=self._headers())
            except httpx.TransportError as exc:  # connection refused/reset, timeouts
                error = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code < 400:
                    return resp
                error = f"HTTP {resp.status_code}: {_error_message(resp)}"
                if resp.status_code not in RETRY_STATUS:
                    return error
                retry_after = resp.headers.get("retry-after")
            if attempt < self.max_retries:
                delay = self._delay(attempt, retry_after)
                log.debug(
                    "%s %s failed (%s); retry %d/%d in %.2f s",
                    method,
                    path,
                    error,
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                time.sleep(delay)
        return f"{error} (after {self.max_retries + 1} attempts)"

    def _one(self, req: GenerationRequest) -> GenerationResponse:
        try:
            body = request_payload(req, self.model_name)
        except Exception as exc:  # e.g. an unreadable image: fail this item only
            return GenerationResponse.failed(f"{type(exc).__name__}: {exc}", self.model_name)
        resp = self._request("POST", "/chat/completions", json=body)
        if isinstance(resp, str):
            return GenerationResponse.failed(resp, self.model_name)
        try:
            return parse_completion(resp.json(), self.model_name)
        except (ValueError, KeyError, TypeError) as exc:
            return GenerationResponse.failed(f"malformed completion from endpoint: {exc}", self.model_name)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResponse]:
        """Send the requests with at most ``max_concurrency`` in flight; results keep the input order."""
        if len(requests) == 1:
            return [self._one(requests[0])]
        return list(self._pool.map(self._one, requests))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend({self.base_url!r}, model={self.model_name!r}, api_key_env={self.api_key_env!r})"


def _error_message(resp: Any) -> str:
    try:
        data = resp.json()
        err = data.get("error") if isinstance(data, dict) else None
        msg = err.get("message") if isinstance(err, dict) else (err or data.get("detail"))
        return str(msg)[:200]
    except Exception:
        return resp.text[:200].replace("\n", " ")
