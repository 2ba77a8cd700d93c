"""A sqlite response cache keyed by (model, request), with record/replay modes.

The cache is safe under concurrent use by threads (one connection per thread) and processes (sqlite WAL
journal, a busy timeout and a retry loop on ``database is locked``). Keys are the sha256 of the canonical
JSON of ``{"model", "request"}``; images enter the key by content hash. Requests that ask for attention
maps bypass the cache (attentions are not stored).

Modes:
    ``readwrite``: answer from the cache when possible, otherwise call the backend and store the answer.
    ``record``: always call the backend and (over)write the stored answer.
    ``replay``: answer only from the cache; a miss is a per-item error (nothing is called): for offline,
    bit-for-bit reruns of an experiment.
    ``off``: pass everything through.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from medfm.backends.base import Backend, GenerationRequest, GenerationResponse, ScoreResult
from medfm.core.errors import UsageError

log = logging.getLogger(__name__)
T = TypeVar("T")
CacheMode = Literal["readwrite", "record", "replay", "off"]
MODES = ("readwrite", "record", "replay", "off")


def request_key(model: str, request: GenerationRequest) -> str:
    """sha256 hex of the canonical JSON of ``{"model": model, "request": request.key_dict()}``."""
    doc = json.dumps({"model": model, "request": request.key_dict()}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(doc.encode("utf-8")).hexdigest()


class ResponseCache:
    """sqlite key -> response store shared by threads and processes.

    Args:
        path: database file (created with its parent folder).
        timeout: seconds a writer waits for a lock before retrying.
    """

    def __init__(self, path: str | Path, timeout: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._retry(
            lambda c: c.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, request TEXT, "
                "response TEXT, created REAL)"
            )
        )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            self._retry_on(conn, lambda c: c.execute("PRAGMA journal_mode=WAL"))
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @staticmethod
    def _retry_on(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], attempts: int = 20) -> T:
        for i in range(attempts):
            try:
                return fn(conn)
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or i == attempts - 1:
                    raise
                time.sleep(min(1.0, 0.01 * 2**i) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def _retry(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._retry_on(self._conn(), fn)

    def get(self, key: str) -> GenerationResponse | None:
        row = self._retry(lambda c: c.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone())
        with self._lock:
            if row is None:
                self.misses += 1
            else:
                self.hits += 1
        if row is None:
            return None
        resp = GenerationResponse.from_dict(json.loads(row[0]))
        resp.cached = True
        return resp

    def put(self, key: str, model: str, request: GenerationRequest, response: GenerationResponse) -> None:
        payload = (
            key,
            model,
            json.dumps(request.key_dict(), sort_keys=True),
            json.dumps(response.to_dict()),
            time.time(),
        )
        self._retry(lambda c: c.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)", payload))

    def __len__(self) -> int:
        return int(self._retry(lambda c: c.execute("SELECT COUNT(*) FROM responses").fetchone()[0]))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class CachedBackend(Backend):
    """Wrap a backend with a :class:`ResponseCache`.

    Args:
        inner: the backend that answers cache misses.
        cache: a ResponseCache or a path to its database.
        mode: ``readwrite``, ``record``, ``replay`` or ``off`` (see module docstring).

    Failed answers are never stored, so a transient error is retried on the next run.
    """

    def __init__(self, inner: Backend, cache: ResponseCache | str | Path, mode: CacheMode = "readwrite"):
        if mode not in MODES:
            raise UsageError(f"cache mode {mode!r} is not one of {', '.join(MODES)}")
        self.inner = inner
        self.cache = cache if isinstance(cache, ResponseCache) else ResponseCache(cache)
        self.mode = mode
        self.spec = inner.spec
        self.model_name = inner.model_name
        self.capabilities = inner.capabilities

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResponse]:
        out: list[GenerationResponse | None] = [None] * len(requests)
        todo: list[int] = []
        keys: dict[int, str] = {}  # only requests the cache handles are keyed (keys hash every image)
        for i, req in enumerate(requests):
            if self.mode == "off" or req.output_attentions:
                todo.append(i)
                continue
            keys[i] = request_key(self.model_name, req)
            hit = self.cache.get(keys[i]) if self.mode in ("readwrite", "replay") else None
            if hit is not None:
                out[i] = hit
            elif self.mode == "replay":
                out[i] = GenerationResponse.failed("not in the response cache (replay mode)", self.model_name)
            else:
                todo.append(i)
        if todo:
            answers = self.inner.generate([requests[i] for i in todo])
            for i, resp in zip(todo, answers):
                out[i] = resp
                if resp.ok and i in keys:
                    self.cache.put(keys[i], self.model_name, requests[i], resp)
        return out  # type: ignore[return-value]

    def score(self, prompts: Sequence[Any], continuations: Sequence[str]) -> list[ScoreResult]:
        return self.inner.score(prompts, continuations)

    def close(self) -> None:
        self.cache.close()
        self.inner.close()
