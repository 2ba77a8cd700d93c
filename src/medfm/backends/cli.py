"""``medfm serve``: declaration and config (torch-free; the server module is imported only to run)."""

from __future__ import annotations

from dataclasses import dataclass

from medfm.core.commands import Command, Group
from medfm.core.config import option


@dataclass
class ServeConfig:
    """Options of ``medfm serve``."""

    model: str = option(
        "hf:default",
        help="Backend spec to serve: hf:default, hf:/path/model(.gguf), hf:hf-hub:org/name, scripted:answers.jsonl.",
    )
    host: str = option("127.0.0.1", help="Interface to bind; keep the loopback default unless you mean to share.")
    port: int = option(8000, help="TCP port.", ge=0, le=65535)
    served_model_name: str = option("", help="Model id reported by /v1/models (default: the model's name).")
    device: str = option("auto", help="auto, cpu, cuda, cuda:N or mps (hf models).")
    attn_implementation: str = option("", help="eager, sdpa, ... (hf models; empty: transformers' choice).")
    threads: int = option(0, help="CPU threads for torch (0: torch's default; 1 is fastest on a busy CPU).")
    max_batch_size: int = option(8, help="Most concurrent requests decoded together.", ge=1)
    batch_wait_ms: float = option(5.0, help="How long a request waits for others to batch with (ms).")
    api_key_env: str = option(
        "", help="Require 'Authorization: Bearer $VAR' where VAR is this environment variable (empty: no key)."
    )
    max_body_mb: float = option(32.0, help="Largest request body in MiB (images travel base64-encoded); larger: 413.",
                                gt=0)  # fmt: skip
    request_timeout_s: float = option(300.0, help="Longest wait for one generation in seconds; longer: 504.", gt=0)
    default_max_tokens: int = option(256, help="Completion budget of a chat request that sets no max_tokens.", ge=1)
    max_connections: int = option(0, help="Refuse connections beyond this many with 503 (0: no limit).", ge=0)
    dry_run: bool = option(False, help="Print what would be served and exit 0.")


SERVE = Group(
    "serve",
    "Serve a local model as an OpenAI-compatible endpoint.",
    (
        Command(
            "serve",
            "Serve a backend (default: the local SmolLM2 model) at http://HOST:PORT/v1 (OpenAI API).",
            "medfm.backends.cli:ServeConfig",
            "medfm.backends.server:run_serve",
        ),
    ),
    single=True,
)
