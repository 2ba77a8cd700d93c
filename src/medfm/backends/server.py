"""``medfm serve``: any backend (usually a local hf model) as an OpenAI-compatible HTTP endpoint.

Endpoints: ``POST /v1/chat/completions`` (messages with text and data-URL images, ``max_tokens``,
``temperature``, ``top_p``, ``seed``, ``n``, ``stop``, ``logprobs``/``top_logprobs``,
``response_format={"type": "json_object"}``), ``GET /v1/models`` and ``GET /health``.

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


class ChatCompletionRequest(BaseModel):
    """Body of POST /v1/chat/completions (OpenAI fields medfm understands; others are ignored)."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[dict[str, Any]]
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=16)
    seed: int | None = None
    stop: str | list[str] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: dict[str, Any] | None = None


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

    def submit(self, requests: list[GenerationRequest]) -> list[GenerationResponse]:
        futures: list[Future] = []
        for r in requests:
            fut: Future = Future()
            self._queue.put((r, fut))
            futures.append(fut)
        return [f.result() for f in futures]

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


def create_app(
    backend: Backend,
    model_name: str | None = None,
    max_batch_size: int = 8,
    batch_wait_ms: float = 5.0,
    api_key: str | None = None,
) -> Any:
    """The FastAPI application serving ``backend``.

    Args:
        backend: any :class:`Backend`.
        model_name: the id reported by ``/v1/models`` (default: the backend's model name).
        max_batch_size, batch_wait_ms: micro-batching (see :class:`MicroBatcher`).
        api_key: when given, requests must carry ``Authorization: Bearer <api_key>``.
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    name = model_name or backend.model_name or "model"
    batcher = MicroBatcher(backend, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms)

    app = FastAPI(title="medfm serve", version="1")
    app.state.batcher = batcher
    app.state.backend = backend

    def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind}})

    @app.middleware("http")
    async def _auth(request: Request, call_next: Any) -> Any:
        if api_key and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return _error(401, "missing or wrong API key", "authentication_error")
        return await call_next(request)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": name}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "medfm"}]}

    @app.post("/v1/chat/completions")
    def chat_completions(body: ChatCompletionRequest) -> Any:
        try:
            messages = _parse_messages(body.messages)
        except (ValueError, OSError) as exc:
            return _error(400, f"bad messages: {exc}")
        if not messages:
            return _error(400, "messages must not be empty")
        if any(m.images for m in messages) and not backend.capabilities.images:
            return _error(400, f"model {name} does not accept images")
        fmt = (body.response_format or {}).get("type", "text")
        if fmt not in ("text", "json_object"):
            return _error(400, f"response_format type {fmt!r} is not supported (use text or json_object)")
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        base = {
            "max_tokens": body.max_tokens or body.max_completion_tokens or 256,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "json_mode": fmt == "json_object",
            "logprobs": body.logprobs,
            "top_logprobs": body.top_logprobs or 0,
            "stop": stop,
        }
        if body.n > 1 and body.temperature == 0:
            reqs = [GenerationRequest(messages, seed=body.seed, **base)] * body.n
        else:
            reqs = [
                GenerationRequest(messages, seed=None if body.seed is None else body.seed + i, **base)
                for i in range(body.n)
            ]
        answers = batcher.submit(reqs)
        failed = [a for a in answers if not a.ok]
        if failed:
            return _error(500, failed[0].error or "generation failed", "server_error")
        choices = []
        for i, a in enumerate(answers):
            choice: dict[str, Any] = {
                "index": i,
                "message": {"role": "assistant", "content": a.text},
                "finish_reason": a.finish_reason,
                "logprobs": None,
            }
            if body.logprobs and a.logprobs is not None:
                choice["logprobs"] = {
                    "content": [
                        {
                            "token": t.token,
                            "logprob": t.logprob,
                            "bytes": list(t.token.encode("utf-8")),
                            "top_logprobs": [
                                {"token": k, "logprob": v, "bytes": list(k.encode("utf-8"))} for k, v in t.top
                            ],
                        }
                        for t in a.logprobs
                    ]
                }
            choices.append(choice)
        prompt_tokens = answers[0].usage.prompt_tokens
        completion = sum(a.usage.completion_tokens for a in answers)
        return {
            "id": f"chatcmpl-{secrets.token_hex(8)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion,
            },
        }

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
) -> RunningServer:
    """Serve ``backend`` from a daemon thread; ``port=0`` picks a free port. Returns once it accepts requests."""
    import uvicorn

    app = create_app(backend, model_name, max_batch_size, batch_wait_ms, api_key)
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
    app = create_app(backend, cfg.served_model_name or None, cfg.max_batch_size, cfg.batch_wait_ms, api_key)
    log.info(
        "serving %s as %s at http://%s:%d/v1%s",
        cfg.model,
        cfg.served_model_name or backend.model_name,
        cfg.host,
        cfg.port,
        " (API key required)" if api_key else "",
    )
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False)
    return 0
