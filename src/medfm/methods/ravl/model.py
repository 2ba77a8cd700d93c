"""The model under audit: a CheXficient CLIP (medfm chexficient) or any open_clip model, behind one interface.

Both expose the open_clip-style methods RaVL needs: ``preprocess(images) -> pixels``, ``tokenize(texts)``,
``encode_image(pixels)`` / ``encode_text(tokens)`` (differentiable, for fine-tuning), ``scale()`` (1 /
temperature), the batched no-grad ``encode_images`` / ``encode_texts``, ``zero_shot_classifier`` and
``save_pretrained``. :class:`OpenClipVLM` wraps an open_clip model to give it that interface.

Sources accepted by :func:`load_vlm`:

- a medfm model directory (``local-dir:/path``, a path, or ``hf-hub:org/name``) written by ``medfm chexficient
  train`` or by ``medfm ravl mitigate`` (its ``config.json`` names the class);
- ``open_clip:NAME`` (random init, e.g. for tests) or ``open_clip:NAME@/path/to/weights.bin`` (local weights).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medfm.core.errors import UsageError
from medfm.core.hub import PretrainedMixin

log = logging.getLogger(__name__)


class OpenClipVLM(nn.Module, PretrainedMixin):
    """An open_clip CLIP with the CheXficientModel interface.

    Args:
        name: open_clip model name (``RN50``, ``ViT-B-32``, ...).
        pretrained: a local weights file (or an open_clip pretrained tag when the cache has it); None = random.
    """

    def __init__(self, name: str, pretrained: str | None = None):
        super().__init__()
        import open_clip

        self.init_kwargs = {"name": name, "pretrained": None}
        try:
            self.clip = open_clip.create_model(name, pretrained=pretrained)
        except RuntimeError as exc:
            raise UsageError(
                f"open_clip model {name!r} could not be built ({exc}); see open_clip.list_models()"
            ) from None
        self._tokenizer = open_clip.get_tokenizer(name)
        size = self.clip.visual.image_size
        self.image_size = int(size[0] if isinstance(size, tuple | list) else size)
        mean = getattr(self.clip.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        std = getattr(self.clip.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
        self.register_buffer("image_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.embed_dim = int(self.clip.text_projection.shape[-1]) if hasattr(self.clip, "text_projection") else None

    @property
    def device(self) -> torch.device:
        return self.clip.logit_scale.device

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self._tokenizer([str(t) for t in texts])

    def preprocess(self, images: Any) -> torch.Tensor:
        x = as_image_tensor(images).to(self.device)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.image_mean) / self.image_std

    def encode_image(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.clip.encode_image(pixels, normalize=normalize)

    def encode_text(self, tokens: Any, normalize: bool = True) -> torch.Tensor:
        return self.clip.encode_text(tokens.to(self.device), normalize=normalize)

    def scale(self) -> torch.Tensor:
        return self.clip.logit_scale.exp().clamp(max=100.0)

    @torch.no_grad()
    def encode_images(self, images: Any, batch_size: int = 256) -> torch.Tensor:
        was = self.training
        self.eval()
        x = as_image_tensor(images)
        out = [self.encode_image(self.preprocess(x[i : i + batch_size])).float().cpu()
               for i in range(0, x.shape[0], batch_size)]  # fmt: skip
        self.train(was)
        return torch.cat(out)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        was = self.training
        self.eval()
        texts = list(texts)
        out = [self.encode_text(self.tokenize(texts[i : i + batch_size])).float().cpu()
               for i in range(0, len(texts), batch_size)]  # fmt: skip
        self.train(was)
        return torch.cat(out)

    def zero_shot_classifier(self, classnames: Sequence[str], templates: Sequence[str] = ("{}",)) -> torch.Tensor:
        """Class weights ``(D, C)`` on CPU: normalised mean of the normalised template embeddings (open_clip's)."""
        from open_clip.zero_shot_classifier import build_zero_shot_classifier

        was = self.training
        self.eval()
        w = build_zero_shot_classifier(self.clip, self._tokenizer, list(classnames), list(templates),
                                       num_classes_per_batch=None, device=self.device)  # fmt: skip
        self.train(was)
        return w.float().cpu()

    def save_pretrained(self, directory: str | Path, card: Any = None, **extra: Any) -> Path:
        from medfm.core.hub import save_pretrained

        cls = type(self)
        config = {"medfm_class": f"{cls.__module__}:{cls.__qualname__}", **self.init_kwargs, **extra}
        return save_pretrained(directory, self.state_dict(), config, card=card)


def as_image_tensor(images: Any) -> torch.Tensor:
    """``(N, C, H, W)`` float tensor in [0, 1] from a tensor or array of that layout (or ``(N, H, W)``)."""
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x[:, None]
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    return x.float()


def load_vlm(source: str, device: str = "cpu") -> Any:
    """The model under audit from a medfm model directory or ``open_clip:NAME[@weights]``, in eval mode."""
    if source.startswith("open_clip:"):
        spec = source.split(":", 1)[1]
        name, _, weights = spec.partition("@")
        return OpenClipVLM(name, weights or None).to(device).eval()
    from medfm.core.hub import from_pretrained

    return from_pretrained(source, device=device).eval()


def model_class_name(model: Any) -> str:
    return f"{type(model).__module__}:{type(model).__qualname__}"
