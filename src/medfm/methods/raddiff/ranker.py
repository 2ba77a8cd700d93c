"""The VisDiff/RadDiff ranker: image–text similarity AUROC of each hypothesis over all images of both sets.

For hypothesis ``y`` and image ``x``, ``v(x, y)`` is the cosine similarity of the L2-normalised image and text
embeddings of a CLIP model. The score of ``y`` is the AUROC of ``v`` with labels A = 1, B = 0; hypotheses are
sorted by it, descending. Mean similarity per set, their difference, the Welch t-test p-value and
``correct_delta`` (fraction of A above a threshold minus fraction of B above it) are recorded too; the paper
filters hypotheses with p >= alpha, the released code does not (``filter_pvalue`` chooses).

Image embeddings are computed once per (model, image content) and kept in an on-disk store
(:class:`EmbeddingStore`), so later rounds, iterations and runs never recompute them.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------------
# Scores (pure functions)


def auroc_rows(scores_a: np.ndarray, scores_b: np.ndarray) -> np.ndarray:
    """AUROC of every row: P(a > b) + 0.5 P(a = b), with set A positive.

    Args:
        scores_a: (H, Na) similarities of the A images, one row per hypothesis.
        scores_b: (H, Nb) similarities of the B images.

    Returns:
        (H,) float64 AUROC per row (Mann–Whitney U / (Na Nb)), ties counted one half like sklearn.

    Both sets are sorted per row (one vectorised sort each), then each row's U is two ``searchsorted`` calls
    of sorted queries into a cache-sized array: O(H N log N) with a small constant.
    """
    a = np.sort(np.asarray(scores_a), axis=1)
    b = np.sort(np.asarray(scores_b), axis=1)
    h, na = a.shape
    nb = b.shape[1]
    if na == 0 or nb == 0:
        raise ValueError("AUROC needs at least one image in each set")
    u = np.empty(h, dtype=np.float64)
    for i in range(h):
        less = np.searchsorted(b[i], a[i], side="left")
        leq = np.searchsorted(b[i], a[i], side="right")
        u[i] = less.sum(dtype=np.int64) + 0.5 * (leq - less).sum(dtype=np.int64)
    return u / float(na * nb)


def welch_pvalues(scores_a: np.ndarray, scores_b: np.ndarray) -> np.ndarray:
    """Two-sided Welch t-test p-value per row (as ``scipy.stats.ttest_ind(equal_var=False)``); NaN if undefined."""
    from scipy import stats

    na, nb = scores_a.shape[1], scores_b.shape[1]
    if na < 2 or nb < 2:
        return np.full(scores_a.shape[0], np.nan)
    ma, mb = scores_a.mean(1, dtype=np.float64), scores_b.mean(1, dtype=np.float64)
    va = scores_a.var(1, ddof=1, dtype=np.float64) / na
    vb = scores_b.var(1, ddof=1, dtype=np.float64) / nb
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (ma - mb) / np.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
        return 2.0 * stats.t.sf(np.abs(t), df)


@dataclass
class RankedHypothesis:
    """One hypothesis with its ranker statistics.

    Attributes:
        text: the hypothesis.
        auroc: AUROC of the similarities with A = 1, B = 0 (0.5 = no difference).
        mean_a, mean_b: mean cosine similarity over the A and B images.
        diff: ``mean_a - mean_b``.
        p_value: Welch t-test p-value (NaN when a set has < 2 images).
        correct_delta: fraction of A above ``threshold`` minus fraction of B above it.
        significant: ``p_value < alpha``.
    """

    text: str
    auroc: float
    mean_a: float
    mean_b: float
    diff: float
    p_value: float
    correct_delta: float
    significant: bool

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def rank_hypotheses(
    texts: Sequence[str],
    image_emb_a: np.ndarray,
    image_emb_b: np.ndarray,
    text_emb: np.ndarray,
    *,
    alpha: float = 0.05,
    threshold: float = 0.3,
    filter_pvalue: bool = False,
) -> list[RankedHypothesis]:
    """Score and sort hypotheses by AUROC, descending (ties keep the input order).

    Args:
        texts: H hypotheses.
        image_emb_a: (Na, D) L2-normalised image embeddings of set A.
        image_emb_b: (Nb, D) of set B.
        text_emb: (H, D) L2-normalised text embeddings of ``texts``.
        alpha: significance level of the Welch t-test.
        threshold: similarity threshold of ``correct_delta`` (VisDiff's ``classify_threshold``).
        filter_pvalue: drop hypotheses with p >= alpha (the paper) instead of only recording p (the code).
    """
    if len(texts) == 0:
        return []
    t = np.asarray(text_emb, dtype=np.float32)
    sa = t @ np.asarray(image_emb_a, dtype=np.float32).T
    sb = t @ np.asarray(image_emb_b, dtype=np.float32).T
    auc = auroc_rows(sa, sb)
    p = welch_pvalues(sa, sb)
    ma, mb = sa.mean(1), sb.mean(1)
    delta = (sa > threshold).mean(1) - (sb > threshold).mean(1)
    out = [
        RankedHypothesis(str(texts[i]), float(auc[i]), float(ma[i]), float(mb[i]), float(ma[i] - mb[i]),
                         float(p[i]), float(delta[i]), bool(p[i] < alpha))
        for i in range(len(texts))
    ]  # fmt: skip
    if filter_pvalue:
        out = [r for r in out if r.significant]
    order = sorted(range(len(out)), key=lambda i: (-out[i].auroc, i))
    return [out[i] for i in order]


# ----------------------------------------------------------------------------------------------------------------------
# Embedders


def file_digest(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes: the cache key of an image, independent of where it lives."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class Embedder(ABC):
    """A CLIP-style dual encoder: images and texts into one space, rows L2-normalised.

    Subclasses set ``id`` (identifies the model and its weights; part of the cache key) and implement
    :meth:`embed_image_files` and :meth:`embed_texts`.
    """

    id: str = ""

    @abstractmethod
    def embed_image_files(self, paths: Sequence[Path]) -> np.ndarray:
        """(N, D) float32 unit rows for N image files."""

    @abstractmethod
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32 unit rows for N texts."""


def read_pil_gray(path: str | Path) -> Any:
    """A greyscale PIL image from any radiograph file medfm reads (PNG/JPEG/DICOM); DataError if unreadable."""
    from PIL import Image

    from medfm.data.io import read_radiograph

    arr = read_radiograph(path).array
    return Image.fromarray(np.rint(np.clip(arr, 0, 1) * 255).astype(np.uint8), mode="L")


class CheXficientEmbedder(Embedder):
    """A CheXficient CLIP (``medfm chexficient train``) through its public API.

    Args:
        source: model directory (``.../checkpoints/final``) or ``hf-hub:org/name``.
        device: torch device.
        batch_size: images per forward pass.
    """

    def __init__(self, source: str, device: str = "cpu", batch_size: int = 256):
        from medfm.methods.chexficient import CheXficientModel

        self.model = CheXficientModel.from_pretrained(source, device=device)
        self.batch_size = batch_size
        self.id = f"chexficient:{_source_id(source)}"

    def embed_image_files(self, paths: Sequence[Path]) -> np.ndarray:
        import torch

        out = []
        for i in range(0, len(paths), self.batch_size):
            ims = [read_pil_gray(p) for p in paths[i : i + self.batch_size]]
            with torch.no_grad():
                out.append(self.model.encode_images(ims).float().cpu().numpy())
        return l2_normalise(np.concatenate(out)) if out else np.zeros((0, 0), np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            return l2_normalise(self.model.encode_texts(list(texts)).float().cpu().numpy())


class OpenCLIPEmbedder(Embedder):
    """Any open_clip model (e.g. CheXzero = ``ViT-B-32`` with its checkpoint, or ``ViT-bigG-14``).

    Args:
        model: open_clip architecture name.
        pretrained: local checkpoint file or an open_clip pretrained tag available in the local cache
            (nothing is downloaded when ``HF_HUB_OFFLINE=1``); empty = random weights (tests only).
        device: torch device.
    """

    def __init__(self, model: str, pretrained: str = "", device: str = "cpu", batch_size: int = 64):
        from medfm.core.errors import require

        open_clip = require("open_clip", extra="clip", package="open_clip_torch")
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            model, pretrained=pretrained or None, device=device
        )
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self.device = device
        self.batch_size = batch_size
        self.id = f"open_clip:{model}@{_source_id(pretrained) if pretrained else 'random'}"

    def embed_image_files(self, paths: Sequence[Path]) -> np.ndarray:
        import torch

        out = []
        for i in range(0, len(paths), self.batch_size):
            batch = torch.stack(
                [self.preprocess(read_pil_gray(p).convert("RGB")) for p in paths[i : i + self.batch_size]]
            )
            with torch.no_grad():
                out.append(self.model.encode_image(batch.to(self.device)).float().cpu().numpy())
        return l2_normalise(np.concatenate(out))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            z = self.model.encode_text(self.tokenizer(list(texts)).to(self.device))
        return l2_normalise(z.float().cpu().numpy())


def _source_id(source: str) -> str:
    """Identity of a model source for cache keys: the path plus its weight files' sizes and mtimes."""
    p = Path(source)
    if p.exists():
        files = sorted(f for f in (p.rglob("*") if p.is_dir() else [p]) if f.is_file() and f.suffix != ".md")
        h = hashlib.sha256(str(p.resolve()).encode())
        for f in files:
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
        return f"{p.name}-{h.hexdigest()[:12]}"
    return source


def make_embedder(spec: str, device: str = "cpu") -> Embedder:
    """Build an embedder from ``chexficient:DIR``, ``open_clip:ARCH[@CHECKPOINT]`` or ``concept:DIR``."""
    from medfm.core.errors import UsageError

    kind, sep, target = spec.partition(":")
    if not sep or not target:
        raise UsageError(f"ranker model {spec!r} must be chexficient:DIR, open_clip:ARCH[@CHECKPOINT] or concept:DIR")
    if kind == "chexficient":
        return CheXficientEmbedder(target, device=device)
    if kind == "open_clip":
        arch, _, ckpt = target.partition("@")
        return OpenCLIPEmbedder(arch, ckpt, device=device)
    if kind == "concept":
        from medfm.methods.raddiff.concept import ConceptEmbedder

        return ConceptEmbedder.load(target)
    raise UsageError(f"unknown ranker model kind {kind!r} in {spec!r}; use chexficient:, open_clip: or concept:")


# ----------------------------------------------------------------------------------------------------------------------
# Embedding store


class EmbeddingStore:
    """On-disk cache of embeddings keyed by (embedder id, image content digest) or (embedder id, text).

    Args:
        path: sqlite file; None keeps the cache in memory only (for one process).

    ``computed_images`` / ``cached_images`` count how many image embeddings were computed or served from
    the cache over this object's life.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path) if self.path else ":memory:", check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, dim INTEGER, vec BLOB)")
        self._db.commit()
        self._lock = threading.Lock()
        self._digests: dict[str, str] = {}
        self.computed_images = 0
        self.cached_images = 0
        self.computed_texts = 0

    def _get(self, keys: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                q = f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(chunk))})"
                for k, blob in self._db.execute(q, chunk):
                    out[k] = np.frombuffer(blob, dtype=np.float32)
        return out

    def _put(self, keys: list[str], vecs: np.ndarray) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO emb VALUES (?, ?, ?)",
                [(k, int(v.shape[0]), np.asarray(v, np.float32).tobytes()) for k, v in zip(keys, vecs)],
            )
            self._db.commit()

    def digest(self, path: Path) -> str:
        key = str(path)
        if key not in self._digests:
            self._digests[key] = file_digest(path)
        return self._digests[key]

    def _cached(self, keys: list[str], compute: Callable[[list[int]], np.ndarray]) -> tuple[np.ndarray, int]:
        found = self._get(list(dict.fromkeys(keys)))
        missing = [i for i, k in enumerate(keys) if k not in found]
        first_missing: dict[str, int] = {}
        for i in missing:
            first_missing.setdefault(keys[i], i)
        if first_missing:
            todo = list(first_missing.values())
            vecs = compute(todo)
            self._put([keys[i] for i in todo], vecs)
            for i, v in zip(todo, vecs):
                found[keys[i]] = np.asarray(v, np.float32)
        return np.stack([found[k] for k in keys]) if keys else np.zeros((0, 0), np.float32), len(first_missing)

    def images(self, embedder: Embedder, paths: Sequence[Path]) -> np.ndarray:
        """(N, D) embeddings of image files, computing only those not cached."""
        paths = [Path(p) for p in paths]
        keys = [f"img|{embedder.id}|{self.digest(p)}" for p in paths]
        out, n_new = self._cached(keys, lambda idx: embedder.embed_image_files([paths[i] for i in idx]))
        self.computed_images += n_new
        self.cached_images += len(paths) - n_new
        return out

    def texts(self, embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
        """(N, D) embeddings of texts, computing only those not cached."""
        texts = list(texts)
        keys = [f"txt|{embedder.id}|{hashlib.sha256(t.encode()).hexdigest()}" for t in texts]
        out, n_new = self._cached(keys, lambda idx: embedder.embed_texts([texts[i] for i in idx]))
        self.computed_texts += n_new
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()
