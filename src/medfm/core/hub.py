"""Models as directories: ``model.safetensors`` + ``config.json`` + ``README.md`` (the model card).

``config.json`` records ``medfm_class`` (``"module:Class"``), so :func:`from_pretrained` can rebuild any
medfm model from its directory alone. Directories are written atomically: a crash mid-save leaves the
previous checkpoint intact. Sources accepted by :func:`resolve_source`::

    "local-dir:/path/to/dir"   a directory on disk
    "/path/to/dir"             same
    "hf-hub:org/name"          a Hugging Face hub repo (needs network or a populated HF cache)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medfm.core.errors import DataError, UsageError
from medfm.core.files import atomic_dir

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"


def resolve_source(source: str | Path) -> Path:
    """A local directory for ``source`` (see module docstring); hub repos go through the HF cache."""
    text = str(source)
    if text.startswith("hf-hub:"):
        repo = text.split(":", 1)[1]
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(repo_id=repo))
        except Exception as exc:  # offline, missing repo, auth
            raise UsageError(
                f"could not get {repo} from the Hugging Face hub ({type(exc).__name__}); without network, "
                "download it elsewhere and pass local-dir:/path"
            ) from None
    path = Path(text.split(":", 1)[1] if text.startswith("local-dir:") else text)
    if not path.is_dir():
        raise DataError(f"model directory {path} does not exist")
    return path


def write_card(folder: str | Path, card: Any) -> None:
    """Write a model card into ``folder`` (being assembled inside an atomic write): ``README.md`` and, for a
    :class:`medfm.core.cards.ModelCard` (not plain markdown text), ``card.json``."""
    folder = Path(folder)
    (folder / CARD).write_text(card if isinstance(card, str) else card.to_markdown())
    if not isinstance(card, str):
        (folder / "card.json").write_text(json.dumps(card.to_json(), indent=2, default=str) + "\n")


def save_pretrained(
    directory: str | Path,
    state_dict: Mapping[str, Any],
    config: Mapping[str, Any],
    card: Any = None,
    extra_files: Mapping[str, bytes | str] | None = None,
) -> Path:
    """Write a model directory atomically.

    Args:
        directory: target directory (replaced whole if it exists).
        state_dict: name -> tensor; tensors are made contiguous and de-aliased for safetensors.
        config: JSON-serialisable constructor arguments; should include ``medfm_class``.
        card: a :class:`medfm.core.cards.ModelCard` or Markdown text written as README.md.
        extra_files: more files (tokenizer, label names) as name -> bytes/str.
    """
    from safetensors.torch import save_file

    tensors = {}
    seen: dict[int, str] = {}
    for k, v in state_dict.items():
        t = v.detach().cpu().contiguous()
        ptr = t.data_ptr()
        if ptr in seen and t.numel() > 0:  # tied weights: safetensors refuses shared storage
            t = t.clone()
        seen[ptr] = k
        tensors[k] = t
    with atomic_dir(directory) as tmp:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(dict(config), indent=2, default=str) + "\n")
        if card is not None:
            write_card(tmp, card)
        for name, data in (extra_files or {}).items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, bytes):
                (tmp / name).write_bytes(data)
            else:
                (tmp / name).write_text(data)
    log.info("saved model to %s", directory)
    return Path(directory)


def load_config(source: str | Path) -> dict[str, Any]:
    path = resolve_source(source) / CONFIG
    if not path.is_file():
        raise DataError(f"{path.parent} is not a medfm model directory: {CONFIG} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is corrupt ({exc.msg}); re-save the model") from None


def load_state_dict(source: str | Path, device: str = "cpu") -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = resolve_source(source) / WEIGHTS
    if not path.is_file():
        raise DataError(f"{path.parent} has no {WEIGHTS}")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{path} is corrupt or truncated ({exc}); re-save the model") from None


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for an ``nn.Module`` built from JSON-able kwargs.

    Subclasses store their constructor kwargs in ``self.init_kwargs`` (a dict); ``from_pretrained``
    calls ``cls(**init_kwargs)`` and loads the weights strictly.
    """

    init_kwargs: dict[str, Any]

    def save_pretrained(self, directory: str | Path, card: Any = None, **extra: Any) -> Path:
        cls = type(self)
        config = {"medfm_class": f"{cls.__module__}:{cls.__qualname__}", **self.init_kwargs, **extra}
        return save_pretrained(directory, self.state_dict(), config, card=card)  # type: ignore[attr-defined]

    @classmethod
    def from_pretrained(cls, source: str | Path, device: str = "cpu") -> Any:
        config = load_config(source)
        config.pop("medfm_class", None)
        sig_params = _init_params(cls)
        kwargs = {k: v for k, v in config.items() if k in sig_params}
        model = cls(**kwargs)
        model.load_state_dict(load_state_dict(source, device=device), strict=True)  # type: ignore[attr-defined]
        return model.to(device).eval()  # type: ignore[attr-defined]


def _init_params(cls: type) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def from_pretrained(source: str | Path, device: str = "cpu") -> Any:
    """Rebuild any medfm model from its directory using ``config.json``'s ``medfm_class``."""
    from medfm.core.commands import load_object

    config = load_config(source)
    target = config.get("medfm_class")
    if not target:
        raise DataError(f"{source}: config.json has no 'medfm_class'; load it with the model's own class")
    return load_object(target).from_pretrained(source, device=device)
