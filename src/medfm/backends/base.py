"""The backend protocol every language / vision-language model backend implements.

A method talks to a model only through :class:`Backend`: chat completion with optional images, JSON mode,
per-token log-probabilities, teacher-forced scoring of a given continuation and attention maps where the
backend can give them. What a backend can do is declared by :class:`Capabilities` and checked with
:func:`require_capabilities` before a run starts, so a method that needs attentions fails at once with one
clear line instead of after an hour.

Batch calls (:meth:`Backend.generate`, :meth:`Backend.generate_json`, :meth:`Backend.score`) never raise for
one bad item: each item carries its own ``error`` so one malformed answer never aborts a batch of a thousand.

This module is torch-free.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from medfm.core.errors import DataError, UsageError

log = logging.getLogger(__name__)

CAPABILITY_NAMES = ("chat", "images", "json_mode", "logprobs", "scoring", "attentions")


# ----------------------------------------------------------------------------------------------------------------------
# Messages, requests and responses


@dataclass
class ChatMessage:
    """One chat turn.

    Attributes:
        role: ``system``, ``user`` or ``assistant``. A final ``assistant`` message is a prefill: the model
            continues it and the response text holds only the continuation.
        content: the text of the turn.
        images: images shown with this turn, as PIL images or paths to image files.
    """

    role: str
    content: str
    images: list[Any] = field(default_factory=list)


def as_messages(prompt: str | ChatMessage | Sequence[ChatMessage | dict[str, Any]]) -> list[ChatMessage]:
    """Normalise a string (one user turn), a message, or a list of messages / ``{"role", "content"}`` dicts."""
    if isinstance(prompt, str):
        return [ChatMessage("user", prompt)]
    if isinstance(prompt, ChatMessage):
        return [prompt]
    out = []
    for m in prompt:
        if isinstance(m, ChatMessage):
            out.append(m)
        elif isinstance(m, dict):
            out.append(ChatMessage(str(m["role"]), str(m.get("content", "")), list(m.get("images", []))))
        else:
            raise TypeError(f"expected ChatMessage or dict, got {type(m).__name__}")
    return out


@dataclass
class GenerationRequest:
    """One chat completion request.

    Attributes:
        messages: the conversation; a trailing assistant message is continued (prefill).
        max_tokens: maximum number of generated tokens.
        temperature: 0 for greedy decoding, > 0 for sampling.
        top_p: nucleus sampling mass (sampling only).
        seed: seed for sampling; the same seed gives the same sample on the same backend and machine.
        json_mode: ask for a JSON object (OpenAI ``response_format={"type": "json_object"}``).
        logprobs: return the log-probability (natural log) of each generated token.
        top_logprobs: also return this many most likely alternatives per position (0 = none).
        stop: strings that end the generation (not included in the text).
        output_attentions: return attention maps (backends with the ``attentions`` capability only).
        raw: the messages' contents, concatenated, are the prompt as is: no chat template (text completions,
            ``/v1/completions``); backends without a raw mode send them as one user message.
    """

    messages: list[ChatMessage]
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    json_mode: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    stop: list[str] = field(default_factory=list)
    output_attentions: bool = False
    raw: bool = False

    @classmethod
    def of(cls, prompt: str | ChatMessage | Sequence[ChatMessage | dict[str, Any]], **kwargs: Any) -> GenerationRequest:
        """Build a request from a string or a list of messages: ``GenerationRequest.of("hi", max_tokens=8)``."""
        return cls(as_messages(prompt), **kwargs)

    @property
    def has_images(self) -> bool:
        return any(m.images for m in self.messages)

    def key_dict(self) -> dict[str, Any]:
        """A JSON-able description that identifies the request (images by content hash), for caching."""
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "messages"}
        d["messages"] = [
            {"role": m.role, "content": m.content, "images": [image_digest(im) for im in m.images]}
            for m in self.messages
        ]
        return d


@dataclass
class TokenLogprob:
    """Log-probability (natural log) of one generated token, and optionally the top alternatives."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class GenerationResponse:
    """One completion.

    Attributes:
        text: generated text (without a prefill and without stop strings).
        finish_reason: ``stop`` (end of turn or stop string), ``length`` (hit max_tokens) or ``error``.
        logprobs: per generated token, when requested and supported.
        usage: prompt and completion token counts.
        model: the model that answered.
        error: one line describing why this item failed; None when it succeeded.
        cached: True when the answer came from a response cache.
        attentions: when requested from a backend that supports it: one array per layer, each
            ``(heads, T, T)`` over the T tokens of prompt + completion (row = query, column = key), float32.
            Not serialised.
        prompt_token_count: number of prompt tokens at the start of the attention maps' T axis.
    """

    text: str
    finish_reason: str = "stop"
    logprobs: list[TokenLogprob] | None = None
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    error: str | None = None
    cached: bool = False
    attentions: Any = None
    prompt_token_count: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, error: str, model: str = "") -> GenerationResponse:
        return cls(text="", finish_reason="error", model=model, error=error)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (without attentions and the ``cached`` flag)."""
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "logprobs": None
            if self.logprobs is None
            else [{"token": t.token, "logprob": t.logprob, "top": [list(x) for x in t.top]} for t in self.logprobs],
            "usage": {"prompt_tokens": self.usage.prompt_tokens, "completion_tokens": self.usage.completion_tokens},
            "model": self.model,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenerationResponse:
        lp = d.get("logprobs")
        return cls(
            text=d.get("text", ""),
            finish_reason=d.get("finish_reason", "stop"),
            logprobs=None
            if lp is None
            else [
                TokenLogprob(t["token"], float(t["logprob"]), [(a, float(b)) for a, b in t.get("top", [])]) for t in lp
            ],
            usage=Usage(**d.get("usage", {})),
            model=d.get("model", ""),
            error=d.get("error"),
        )


@dataclass
class ScoreResult:
    """Teacher-forced log-probability of a given continuation after a prompt.

    Attributes:
        logprob: sum of the continuation tokens' log-probabilities (natural log).
        token_logprobs: one value per continuation token.
        tokens: the continuation's tokens as text pieces.
        error: one line when this item could not be scored.
    """

    logprob: float
    token_logprobs: list[float] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def mean_logprob(self) -> float:
        return self.logprob / max(1, len(self.token_logprobs))


@dataclass
class JsonResult:
    """A JSON-mode answer: the parsed object, or the error that made it unusable, and the raw response."""

    obj: dict[str, Any] | None
    error: str | None
    response: GenerationResponse
    repaired: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


# ----------------------------------------------------------------------------------------------------------------------
# Capabilities


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do. Checked before a run with :func:`require_capabilities`."""

    chat: bool = True
    images: bool = False
    json_mode: bool = False
    logprobs: bool = False
    scoring: bool = False
    attentions: bool = False

    def as_set(self) -> set[str]:
        return {name for name in CAPABILITY_NAMES if getattr(self, name)}


def require_capabilities(backend: Backend, needed: Iterable[str], purpose: str = "this method") -> None:
    """Raise :class:`UsageError` (one line) unless ``backend`` has every capability in ``needed``.

    Args:
        backend: the backend a method is about to use.
        needed: capability names from ``chat, images, json_mode, logprobs, scoring, attentions``.
        purpose: what needs them, for the message (e.g. ``"headentropy"``).
    """
    needed = set(needed)
    unknown = needed - set(CAPABILITY_NAMES)
    if unknown:
        raise ValueError(f"unknown capabilities {sorted(unknown)}; known: {', '.join(CAPABILITY_NAMES)}")
    missing = sorted(needed - backend.capabilities.as_set())
    if missing:
        hint = " (use a local model, e.g. --backend hf:default)" if {"attentions", "scoring"} & set(missing) else ""
        raise UsageError(
            f"backend {backend.spec} cannot provide {', '.join(missing)} needed by {purpose}; it supports "
            f"{', '.join(sorted(backend.capabilities.as_set())) or 'nothing'}{hint}"
        )


# ----------------------------------------------------------------------------------------------------------------------
# The protocol


class Backend(ABC):
    """Base class of model backends.

    Subclasses set ``spec`` (the string that recreates them with :func:`medfm.backends.make_backend`),
    ``model_name`` (the model's name) and ``capabilities``, and implement :meth:`generate`; backends with the
    ``scoring`` capability implement :meth:`score`.
    """

    spec: str = ""
    model_name: str = ""
    capabilities: Capabilities = Capabilities()
    #: most tokens (prompt + completion) the model takes; None when unknown (no limit is enforced)
    context_length: int | None = None

    def prompt_tokens(self, request: GenerationRequest) -> int | None:
        """How many tokens ``request``'s prompt takes for this model (None when the backend cannot tell)."""
        return None

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResponse]:
        """Complete each request. Never raises for one bad item: failures come back with ``error`` set."""

    def chat(
        self, prompt: str | ChatMessage | Sequence[ChatMessage | dict[str, Any]], **kwargs: Any
    ) -> GenerationResponse:
        """Complete one conversation (a string is one user turn). ``kwargs`` are GenerationRequest fields."""
        return self.generate([GenerationRequest.of(prompt, **kwargs)])[0]

    def generate_json(
        self, requests: Sequence[GenerationRequest], required_fields: Sequence[str] = ()
    ) -> list[JsonResult]:
        """JSON-mode generation with per-item parsing and repair (see :func:`parse_json_response`)."""
        reqs = [r if r.json_mode else _with_json_mode(r) for r in requests]
        out = []
        for resp in self.generate(reqs):
            if not resp.ok:
                out.append(JsonResult(None, resp.error, resp))
                continue
            obj, err = parse_json_response(resp.text, required_fields)
            if err and resp.finish_reason == "length":
                err += " (answer cut at max_tokens)"
            out.append(JsonResult(obj, err, resp, repaired=obj is not None and _needed_repair(resp.text)))
        return out

    def score(self, prompts: Sequence[str | Sequence[ChatMessage]], continuations: Sequence[str]) -> list[ScoreResult]:
        """Teacher-forced log-probability of each continuation as the assistant's answer to its prompt."""
        require_capabilities(self, {"scoring"}, purpose="score()")
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release resources (HTTP connections, threads)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


def _with_json_mode(req: GenerationRequest) -> GenerationRequest:
    from dataclasses import replace

    return replace(req, json_mode=True)


# ----------------------------------------------------------------------------------------------------------------------
# Images


def image_digest(image: Any) -> str:
    """Content hash of a PIL image or an image file (sha256 hex, 16 chars), for cache keys."""
    h = hashlib.sha256()
    if isinstance(image, str | Path):
        h.update(Path(image).read_bytes())
    elif hasattr(image, "tobytes"):
        h.update(f"{image.mode}{image.size}".encode())
        h.update(image.tobytes())
    else:
        raise TypeError(f"images must be PIL images or paths, got {type(image).__name__}")
    return h.hexdigest()[:16]


_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp"}


def image_to_data_url(image: Any) -> str:
    """``data:image/...;base64,...`` of a PIL image (encoded as PNG) or an image file (its own bytes)."""
    if isinstance(image, str | Path):
        path = Path(image)
        mime = _MIME.get(path.suffix.lower())
        if mime is None:
            raise DataError(f"image {path} has an unsupported type; use one of {', '.join(sorted(_MIME))}")
        data = path.read_bytes()
    else:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        mime, data = "image/png", buf.getvalue()
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_from_data_url(url: str) -> Any:
    """PIL image from a ``data:`` URL (raises ValueError for anything else)."""
    from PIL import Image

    m = re.match(r"data:image/[\w.+-]+;base64,(.*)", url, re.S)
    if not m:
        raise ValueError("only data:image/...;base64 URLs are accepted (no remote image fetching)")
    img = Image.open(io.BytesIO(base64.b64decode(m.group(1))))
    img.load()
    return img


def load_image(image: Any) -> Any:
    """A PIL image (RGB) from a PIL image or a path."""
    from PIL import Image

    if isinstance(image, str | Path):
        with Image.open(image) as im:
            return im.convert("RGB")
    return image.convert("RGB") if getattr(image, "mode", "RGB") != "RGB" else image


# ----------------------------------------------------------------------------------------------------------------------
# Malformed JSON answers


JSON_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
TRAILING_COMMA = re.compile(r",(\s*[}\]])")


def first_balanced(text: str, open_c: str = "{", close_c: str = "}") -> str | None:
    """The first balanced ``open_c ... close_c`` span in ``text`` (brackets inside strings ignored), or None."""
    start = text.find(open_c)
    while start != -1:
        depth, in_str, esc = 0, False, False
        for i in range(start, len(text)):
            c = text[i]
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c == open_c:
                depth += 1
            elif c == close_c:
                depth -= 1
                if depth == 0:
                    return text[start : i + 1]
        start = text.find(open_c, start + 1)
    return None


def _needed_repair(text: str) -> bool:
    try:
        return not isinstance(json.loads(text), dict)
    except (json.JSONDecodeError, ValueError):
        return True


def parse_json_response(text: str, required_fields: Sequence[str] = ()) -> tuple[dict[str, Any] | None, str | None]:
    """Parse a model's JSON answer, repairing it only where the repair is unambiguous.

    Repairs: surrounding Markdown code fences, prose around the object (the first balanced ``{...}`` is
    taken), trailing commas before ``}`` or ``]``. Anything else (no object, unbalanced braces, a list, a
    missing required field) is reported, not guessed.

    Returns:
        ``(obj, None)`` on success, ``(None, error)`` with a one-line error otherwise.
    """
    if text is None or not str(text).strip():
        return None, "empty answer"
    text = str(text).strip()
    candidates = [text]
    fence = JSON_FENCE.search(text)
    if fence:
        candidates.append(fence.group(1).strip())
    first = first_balanced(fence.group(1) if fence else text)
    if first is not None:
        candidates.append(first)
    obj: Any = None
    parsed = False
    for cand in candidates:
        for variant in (cand, TRAILING_COMMA.sub(r"\1", cand)):
            try:
                obj = json.loads(variant)
                parsed = True
                break
            except (json.JSONDecodeError, ValueError):
                continue
        if parsed and isinstance(obj, dict):
            break
    if not parsed:
        snippet = text[:60].replace("\n", " ")
        reason = "no complete JSON object" if first is None else "invalid JSON"
        return None, f"{reason} in answer: {snippet!r}"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    missing = [f for f in required_fields if f not in obj]
    if missing:
        return None, f"missing fields: {', '.join(missing)}"
    return obj, None
