"""Captioners: one text per image for the proposer.

- :class:`BackendCaptioner`: any backend that accepts images (our VLM through ``hf:/path/to/vlm``, a
  CheXagent-class model behind ``openai:http://.../v1#model``), prompt "Describe this image in detail.".
  Wrap the backend with a response cache (``cache=``) so captions are reused across iterations and runs.
- :class:`ReportCaptioner`: the study's report (the paper's ground-truth-report upper bound), optionally with
  each sentence dropped with probability ``dropout`` (seeded per image) to mimic an imperfect captioner.
"""

from __future__ import annotations

import logging
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from medfm.backends.base import Backend, ChatMessage, GenerationRequest, require_capabilities
from medfm.core.errors import DataError, UsageError
from medfm.methods.raddiff.data import ImageItem

log = logging.getLogger(__name__)

CAPTION_PROMPT = "Describe this image in detail."


class Captioner(ABC):
    name: str = ""

    @abstractmethod
    def captions(self, items: Sequence[ImageItem]) -> list[str]:
        """One caption per item."""


class ReportCaptioner(Captioner):
    """Captions from reports (see module docstring)."""

    def __init__(self, dropout: float = 0.0, seed: int = 0):
        if not 0.0 <= dropout < 1.0:
            raise UsageError(f"report caption dropout must be in [0, 1), got {dropout}")
        self.dropout = dropout
        self.seed = seed
        self.name = "reports" if dropout == 0 else f"reports:{dropout:g}"

    def captions(self, items: Sequence[ImageItem]) -> list[str]:
        missing = [it.path.name for it in items if not (it.report or "").strip()]
        if missing:
            raise DataError(f"{len(missing)} image(s) have no report (e.g. {missing[0]}); add a 'report' column or "
                            "use a captioning backend (--captioner.source hf:/path/to/vlm)")  # fmt: skip
        out = []
        for it in items:
            text = re.sub(r"^\s*(FINDINGS|IMPRESSION):\s*", "", it.report or "", flags=re.M)
            sents = [s.strip() for s in re.split(r"(?<=[.])\s+|\n", text) if s.strip()]
            if self.dropout > 0:
                rng = random.Random(f"{self.seed}|{it.id}")
                sents = [s for s in sents if rng.random() >= self.dropout]
            out.append(" ".join(sents))
        return out


class BackendCaptioner(Captioner):
    """Captions from any image-capable backend; failed items get an empty caption (logged)."""

    def __init__(self, backend: Backend, prompt: str = CAPTION_PROMPT, max_tokens: int = 128, batch_size: int = 16):
        require_capabilities(backend, {"images"}, purpose="the RadDiff captioner")
        self.backend = backend
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.name = backend.spec
        self._memo: dict[Path, str] = {}

    def captions(self, items: Sequence[ImageItem]) -> list[str]:
        todo = [it for it in dict.fromkeys(it.path for it in items) if it not in self._memo]
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i : i + self.batch_size]
            reqs = [GenerationRequest([ChatMessage("user", self.prompt, [p])], max_tokens=self.max_tokens)
                    for p in chunk]  # fmt: skip
            for p, r in zip(chunk, self.backend.generate(reqs)):
                if not r.ok:
                    log.warning("captioner failed for %s: %s", p, r.error)
                self._memo[p] = r.text.strip() if r.ok else ""
        return [self._memo[it.path] for it in items]


def make_captioner(source: str, *, seed: int = 0, dropout: float = 0.0, cache: str | None = None,
                   device: str = "cpu", prompt: str = CAPTION_PROMPT, max_tokens: int = 128) -> Captioner:  # fmt: skip
    """``reports`` (report text, optional ``dropout``) or a backend spec (``hf:...``, ``openai:...``, ``scripted:...``).

    ``cache`` (a response-cache sqlite path), ``device``, ``prompt`` and ``max_tokens`` apply to backend captioners.
    """
    if source == "reports":
        return ReportCaptioner(dropout=dropout, seed=seed)
    from medfm.backends import make_backend

    kwargs = {"device": device} if source.startswith("hf:") else {}
    return BackendCaptioner(make_backend(source, cache=cache, **kwargs), prompt=prompt, max_tokens=max_tokens)
