"""``medfm serve``: any backend (usually a local hf model) as an OpenAI-compatible HTTP endpoint.

Endpoints: ``POST /v1/chat/completions`` (messages with text and data-URL images, ``max_tokens``,
``temperature``, ``top_p``, ``seed``, ``n``, ``stop``, ``logprobs``/``top_logprobs``,
``response_format={"type": "json_object"}``, ``stream`` with ``stream_options.include_usage``),
``POST /v1/completions`` (text completions, no chat template), ``GET /v1/models`` and ``GET /health``.
Errors are OpenAI-shaped (``{"error": {"message", "type", "param", "code"}}``): malformed JSON and invalid
fields 400, a prompt over the model's context 400 ``context_length_exceeded``, a body over ``max_body_bytes``
413, a generation over ``request_timeout_s`` 504 (:class:`ServerLimits`).

Concurrent requests are gathered by a micro-batcher (up to ``max_batch_size`` requests, waiting at most
``batch_wait_ms`` for company) and handed to the backend together, so the model decodes them as one
batch: one loaded model serves many clients, and throughput rises with client concurrency.
The server binds 127.0.0.1 unless told otherwise; when ``api_key_env`` names a set environment variable
the server requires ``Authorization: Bearer <that value>``.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from medfm.backends.base import Backend, ChatMessage, GenerationRequest, GenerationResponse, image_from_data_url

log = logging.getLogger(__name__)


class _Sampling(BaseModel):
    """Fields chat and text completions share (OpenAI names; fields medfm does not know are ignored)."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=16)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None


class ChatCompletionRequest(_Sampling):
    """Body of POST /v1/chat/completions."""

    messages: list[dict[str, Any]]
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: dict[str, Any] | None = None


class CompletionRequest(_Sampling):
    """Body of POST /v1/completions (legacy text completions: the prompt as is, no chat template)."""

    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for text completions
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None


@dataclass
class ServerLimits:
    """What one request may ask of the server.

    Attributes:
        max_body_bytes: largest request body (images travel base64-encoded inside it); larger gets 413.
        request_timeout_s: longest wait for a generation; longer gets 504 (the batch still finishes).
        default_max_tokens: completion budget of a chat request that names none (clamped to the context).
    """

    max_body_bytes: int = 32 * 2**20
    request_timeout_s: float = 300.0
    default_max_tokens: int = 256


class RequestError(Exception):
    """A request the server refuses: becomes an OpenAI-shaped error body with this status."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class MicroBatcher:
    """Collect requests from many threads and pass them to ``backend.generate`` in batches.

    Args:
        backend: the backend to call (from one worker thread only, so it needs no locking of its own).
        max_batch_size: most requests per backend call.
        batch_wait_ms: how long the first request of a batch waits for others.
    """

    def __init__(self, backend: Backend, max_batch_size: int = 8, batch_wait_ms: float = 5.0):
        self.backend = backend
        self.max_batch_size = max(1, max_batch_size)
        self.batch_wait = batch_wait_ms / 1000.0
        self._queue: queue.Queue[tuple[GenerationRequest, Future] | None] = queue.Queue()
        self.batches: list[int] = []  # sizes of the batches run (for tests and stats)
        self._thread = threading.Thread(target=self._loop, name="medfm-batcher", daemon=True)
        self._thread.start()

    def submit(self, requests: list[GenerationRequest], timeout: float | None = None) -> list[GenerationResponse]:
        """Answers of ``requests`` (in order); ``concurrent.futures.TimeoutError`` after ``timeout`` seconds."""
        futures: list[Future] = []
        for r in requests:
            fut: Future = Future()
            self._queue.put((r, fut))
            futures.append(fut)
        deadline = None if timeout is None else time.monotonic() + timeout
        return [f.result(None if deadline is None else max(0.0, deadline - time.monotonic())) for f in futures]

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            deadline = time.monotonic() + self.batch_wait
            while len(batch) < self.max_batch_size:
                timeout = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=max(0.0, timeout)) if timeout > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            self.batches.append(len(batch))
            try:
                answers = self.backend.generate([r for r, _ in batch])
            except Exception as exc:  # a backend bug must not kill the worker thread
                log.exception("backend failed on a batch")
                answers = [GenerationResponse.failed(f"{type(exc).__name__}: {exc}") for _ in batch]
            for (_, fut), ans in zip(batch, answers):
                fut.set_result(ans)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)


def _parse_messages(raw: list[dict[str, Any]]) -> list[ChatMessage]:
    out = []
    for m in raw:
        content = m.get("content")
        images: list[Any] = []
        if isinstance(content, list):
            texts = []
            for part in content:
                kind = part.get("type")
                if kind == "text":
                    texts.append(str(part.get("text", "")))
                elif kind == "image_url":
                    url = part.get("image_url")
                    url = url.get("url") if isinstance(url, dict) else url
                    images.append(image_from_data_url(str(url)))
                else:
                    raise ValueError(f"unsupported content part type {kind!r}")
            content = "\n".join(texts)
        out.append(ChatMessage(str(m.get("role", "user")), "" if content is None else str(content), images))
    return out


def _stops(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


def _budget(backend: Backend, req: GenerationRequest, asked: int | None, limits: ServerLimits) -> int:
    """The completion budget of ``req`` within the model's context; RequestError when it cannot fit."""
    ctx = backend.context_length
    n_prompt = backend.prompt_tokens(req) if ctx else None
    want = asked or limits.default_max_tokens
    if ctx is None or n_prompt is None:
        return want
    if n_prompt >= ctx or (asked is not None and n_prompt + asked > ctx):
        raise RequestError(400, f"This model's maximum context length is {ctx} tokens. However, you requested "
                           f"{n_prompt + (asked or 0)} tokens ({n_prompt} in the messages, {asked or 0} in the "
                           "completion). Please reduce the length of the messages or completion.",
                           code="context_length_exceeded", param="messages")  # fmt: skip
    return min(want, ctx - n_prompt)


def _sse(events: list[dict[str, Any]]) -> Any:
    """A ``text/event-stream`` response of ``events`` then ``[DONE]`` (OpenAI's streaming wire format)."""
    import json

    from fastapi.responses import StreamingResponse

    def gen() -> Any:
        for e in events:
            yield f"data: {json.dumps(e)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(gen(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _usage(answers: list[GenerationResponse], per_prompt: int) -> dict[str, int]:
    prompt = sum(a.usage.prompt_tokens for a in answers[::per_prompt])
    completion = sum(a.usage.completion_tokens for a in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def create_app(
    backend: Backend,
    model_name: str | None = None,
    max_batch_size: int = 8,
    batch_wait_ms: float = 5.0,
    api_key: str | None = None,
    limits: ServerLimits | None = None,
) -> Any:
    """The FastAPI application serving ``backend``.

    Args:
        backend: any :class:`Backend`.
        model_name: the id reported by ``/v1/models`` (default: the backend's model name).
        max_batch_size, batch_wait_ms: micro-batching (see :class:`MicroBatcher`).
        api_key: when given, requests must carry ``Authorization: Bearer <api_key>``.
        limits: body size, timeout and default budget (:class:`ServerLimits`).

    Streaming (``stream: true``) answers in OpenAI's server-sent-event format; the content arrives in one delta
    chunk once generation has finished (the backends decode whole batches, not token by token).
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    limits = limits or ServerLimits()
    name = model_name or backend.model_name or "model"
    batcher = MicroBatcher(backend, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms)

    app = FastAPI(title="medfm serve", version="1")
    app.state.batcher = batcher
    app.state.backend = backend
    app.state.limits = limits

    def _error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> JSONResponse:  # fmt: skip
        return JSONResponse(status_code=status, content=RequestError(status, message, kind, code, param).body())

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {}
        loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        if first.get("type") == "json_invalid":
            return _error(400, "the request body is not valid JSON", code="invalid_json")
        return _error(400, f"{loc or 'body'}: {first.get('msg', 'invalid request')}", param=loc or None)

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error(exc.status_code, str(exc.detail), kind)

    @app.exception_handler(RequestError)
    async def _refused(_request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content=exc.body())

    @app.middleware("http")
    async def _guard(request: Request, call_next: Any) -> Any:
        if api_key and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return _error(401, "missing or wrong API key", "authentication_error")
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None:
                return _error(411, "send the request body with a Content-Length header")
            if not length.isdigit() or int(length) > limits.max_body_bytes:
                return _error(413, f"request body larger than {limits.max_body_bytes} bytes (the server's "
                              "max_body_bytes)", code="request_too_large")  # fmt: skip
        return await call_next(request)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": name}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "medfm"}]}

    def _run(reqs: list[GenerationRequest]) -> list[GenerationResponse]:
        from concurrent.futures import TimeoutError as FutureTimeout

        try:
            answers = batcher.submit(reqs, timeout=limits.request_timeout_s)
        except FutureTimeout:
            raise RequestError(504, f"generation took longer than {limits.request_timeout_s:g} s (the server's "
                               "request_timeout_s)", "timeout", code="timeout") from None  # fmt: skip
        failed = [a for a in answers if not a.ok]
        if failed:
            raise RequestError(500, failed[0].error or "generation failed", "server_error")
        return answers

    def _samples(req: GenerationRequest, body: _Sampling) -> list[GenerationRequest]:
        """``n`` requests: distinct seeds when sampling, one shared request when greedy."""
        from dataclasses import replace

        if body.n > 1 and body.temperature == 0:
            return [req] * body.n
        return [replace(req, seed=None if body.seed is None else body.seed + i) for i in range(body.n)]

    @app.post("/v1/chat/completions")
    def chat_completions(body: ChatCompletionRequest) -> Any:
        try:
            messages = _parse_messages(body.messages)
        except (ValueError, OSError) as exc:
            raise RequestError(400, f"bad messages: {exc}", param="messages") from None
        if not messages:
            raise RequestError(400, "messages must not be empty", param="messages")
        if any(m.images for m in messages) and not backend.capabilities.images:
            raise RequestError(400, f"model {name} does not accept images", param="messages")
        fmt = (body.response_format or {}).get("type", "text")
        if fmt not in ("text", "json_object"):
            raise RequestError(400, f"response_format type {fmt!r} is not supported (use text or json_object)",
                               param="response_format")  # fmt: skip
        req = GenerationRequest(messages, temperature=body.temperature, top_p=body.top_p, seed=body.seed,
                                json_mode=fmt == "json_object", logprobs=body.logprobs,
                                top_logprobs=body.top_logprobs or 0, stop=_stops(body.stop))  # fmt: skip
        req.max_tokens = _budget(backend, req, body.max_tokens or body.max_completion_tokens, limits)
        answers = _run(_samples(req, body))
        cid, created = f"chatcmpl-{secrets.token_hex(8)}", int(time.time())
        choices = []
        for i, a in enumerate(answers):
            choice: dict[str, Any] = {"index": i, "message": {"role": "assistant", "content": a.text},
                                      "finish_reason": a.finish_reason, "logprobs": None}  # fmt: skip
            if body.logprobs and a.logprobs is not None:
                choice["logprobs"] = {"content": [
                    {"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode("utf-8")),
                     "top_logprobs": [{"token": k, "logprob": v, "bytes": list(k.encode("utf-8"))} for k, v in t.top]}
                    for t in a.logprobs]}  # fmt: skip
            choices.append(choice)
        usage = _usage(answers, body.n)
        if body.stream:
            head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": name}
            events = []
            for c in choices:
                events.append({**head, "choices": [{"index": c["index"], "delta": {"role": "assistant", "content": ""},
                                                    "logprobs": None, "finish_reason": None}]})  # fmt: skip
                events.append({**head, "choices": [{"index": c["index"], "delta": {"content": c["message"]["content"]},
                                                    "logprobs": c["logprobs"], "finish_reason": None}]})  # fmt: skip
                events.append({**head, "choices": [{"index": c["index"], "delta": {}, "logprobs": None,
                                                    "finish_reason": c["finish_reason"]}]})  # fmt: skip
            if (body.stream_options or {}).get("include_usage"):
                events.append({**head, "choices": [], "usage": usage})
            return _sse(events)
        return {"id": cid, "object": "chat.completion", "created": created, "model": name, "choices": choices,
                "usage": usage}  # fmt: skip

    @app.post("/v1/completions")
    def completions(body: CompletionRequest) -> Any:
        if body.echo or body.suffix:
            raise RequestError(400, "echo and suffix are not supported", param="echo" if body.echo else "suffix")
        prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if not prompts:
            raise RequestError(400, "prompt must not be empty", param="prompt")
        reqs: list[GenerationRequest] = []
        for p in prompts:
            req = GenerationRequest([ChatMessage("user", p)], temperature=body.temperature, top_p=body.top_p,
                                    seed=body.seed, logprobs=body.logprobs is not None,
                                    top_logprobs=body.logprobs or 0, stop=_stops(body.stop), raw=True)  # fmt: skip
            req.max_tokens = _budget(backend, req, body.max_tokens, limits)
            reqs += _samples(req, body)
        answers = _run(reqs)
        cid, created = f"cmpl-{secrets.token_hex(8)}", int(time.time())
        choices = []
        for i, a in enumerate(answers):
            lp = None
            if body.logprobs is not None and a.logprobs is not None:
                lp = {"tokens": [t.token for t in a.logprobs], "token_logprobs": [t.logprob for t in a.logprobs],
                      "top_logprobs": [dict(t.top) for t in a.logprobs] if body.logprobs else None,
                      "text_offset": None}  # fmt: skip
            choices.append({"index": i, "text": a.text, "logprobs": lp, "finish_reason": a.finish_reason})
        usage = _usage(answers, body.n)
        if body.stream:
            head = {"id": cid, "object": "text_completion", "created": created, "model": name}
            events = [{**head, "choices": [{**c, "finish_reason": None}]} for c in choices]
            events += [{**head, "choices": [{"index": c["index"], "text": "", "logprobs": None,
                                             "finish_reason": c["finish_reason"]}]} for c in choices]  # fmt: skip
            if (body.stream_options or {}).get("include_usage"):
                events.append({**head, "choices": [], "usage": usage})
            return _sse(events)
        return {"id": cid, "object": "text_completion", "created": created, "model": name, "choices": choices,
                "usage": usage}  # fmt: skip

    return app


# ----------------------------------------------------------------------------------------------------------------------
# Running


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    """A server running in a background thread of this process; ``url`` ends in ``/v1``."""

    url: str
    port: int
    server: Any
    thread: threading.Thread
    app: Any

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.app.state.batcher.close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_server_thread(
    backend: Backend,
    host: str = "127.0.0.1",
    port: int = 0,
    model_name: str | None = None,
    max_batch_size: int = 8,
    batch_wait_ms: float = 5.0,
    api_key: str | None = None,
    startup_timeout: float = 30.0,
    limits: ServerLimits | None = None,
) -> RunningServer:
    """Serve ``backend`` from a daemon thread; ``port=0`` picks a free port. Returns once it accepts requests."""
    import uvicorn

    app = create_app(backend, model_name, max_batch_size, batch_wait_ms, api_key, limits)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    actual = int(sock.getsockname()[1])
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="medfm-serve", daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not server.started:
        if not thread.is_alive() or time.monotonic() - t0 > startup_timeout:
            raise RuntimeError(f"server on {host}:{actual} did not start")
        time.sleep(0.02)
    return RunningServer(f"http://{host}:{actual}/v1", actual, server, thread, app)


def run_serve(cfg: Any) -> int:
    """Entry point of ``medfm serve`` (config: :class:`medfm.backends.cli.ServeConfig`)."""
    import uvicorn

    from medfm.backends import make_backend
    from medfm.core.errors import UsageError

    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: reachable from other machines; prefer 127.0.0.1", cfg.host)
    if cfg.dry_run:
        print(f"dry run: would serve {cfg.model} at http://{cfg.host}:{cfg.port}/v1")
        return 0
    api_key = None
    if cfg.api_key_env:
        api_key = os.environ.get(cfg.api_key_env)
        if not api_key:
            raise UsageError(f"--api_key_env {cfg.api_key_env} is set but that environment variable is empty")
    kwargs: dict[str, Any] = {}
    if cfg.model.startswith("hf:"):
        kwargs = {"device": cfg.device, "batch_size": cfg.max_batch_size, "threads": cfg.threads or None}
        if cfg.attn_implementation:
            kwargs["attn_implementation"] = cfg.attn_implementation
    backend = make_backend(cfg.model, **kwargs)
    limits = ServerLimits(max_body_bytes=int(cfg.max_body_mb * 2**20), request_timeout_s=cfg.request_timeout_s,
                          default_max_tokens=cfg.default_max_tokens)  # fmt: skip
    app = create_app(backend, cfg.served_model_name or None, cfg.max_batch_size, cfg.batch_wait_ms, api_key, limits)
    log.info(
        "serving %s as %s at http://%s:%d/v1%s",
        cfg.model,
        cfg.served_model_name or backend.model_name,
        cfg.host,
        cfg.port,
        " (API key required)" if api_key else "",
    )
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False,
                timeout_keep_alive=5, limit_concurrency=cfg.max_connections or None)  # fmt: skip
    return 0
