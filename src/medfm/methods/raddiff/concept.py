"""An offline concept-bottleneck CLIP for chest X-ray phantoms: a ranker that needs no pretrained weights.

Image tower: one logistic-regression probe per concept on down-sampled pixels, trained on labelled
radiographs (phantoms or any labelled manifest) disjoint from the sets being compared. Probe probability
``p_d`` of concept dimension ``d`` becomes the unit 2-vector ``(cos(p_d pi/2), sin(p_d pi/2))``, so every image
embedding has the same norm and cosine similarity is exactly monotone in the probabilities.
Text tower: the concept vocabulary (:mod:`.vocab`): an affirmed concept points at ``(0, 1)`` of its pair, a
negated one at ``(1, 0)``; side and severity address their own dimensions; unknown words contribute nothing.

It stands in for CheXzero / CheXficient in offline tests and benchmarks (spec 5.1, "attribute embedder",
but learned from pixels rather than read from ground truth, so it makes real mistakes on subtle findings).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfm.methods.raddiff.ranker import Embedder, l2_normalise
from medfm.methods.raddiff.vocab import CONCEPTS, LATERALISED, mentions

log = logging.getLogger(__name__)


def _record_value(rec: dict[str, Any], dim: str) -> int:
    """0/1 target of concept dimension ``dim`` (``concept``, ``concept|left``, ``concept|large``) for a record."""
    concept, _, attr = dim.partition("|")
    source = CONCEPTS[concept][0]
    if source == "marker":
        return int(bool(rec.get("spurious")))
    if source == "AP view":
        return int(rec.get("view") == "AP")
    if source == "female":
        return int(rec.get("sex") == "F")
    present = rec.get("labels", {}).get(source) in (1, -1)
    if not attr:
        return int(present)
    if attr in ("left", "right"):
        side = rec.get("sides", {}).get(source)
        return int(present and side in (attr, "bilateral"))
    if attr == "large":
        box = rec.get("boxes", {}).get(source)
        return int(present and box is not None and rec.get("labels", {}).get(source) == 1
                   and (box[3] - box[1]) >= rec.get("_large_cut", {}).get(source, np.inf))  # fmt: skip
    raise ValueError(f"unknown concept attribute {attr!r}")


def default_dims() -> list[str]:
    dims = list(CONCEPTS)
    dims += [f"{c}|{s}" for c in CONCEPTS if c in LATERALISED for s in ("left", "right")]
    dims.append("pleural effusion|large")
    return dims


def image_features(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) float [0, 1] -> (N, size*size) area-downsampled pixels, float32."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.asarray(images, np.float32))[:, None]
    return F.adaptive_avg_pool2d(t, size).flatten(1).numpy()


class ConceptEmbedder(Embedder):
    """Concept-bottleneck dual encoder (see module docstring).

    Attributes:
        dims: concept dimensions (``concept`` or ``concept|attribute``).
        coef: (K, F) probe weights on standardised features; ``intercept`` (K,); ``mean``/``scale`` (F,).
        feature_size: images are pooled to feature_size x feature_size pixels.
    """

    def __init__(self, dims: list[str], coef: np.ndarray, intercept: np.ndarray, mean: np.ndarray,
                 scale: np.ndarray, feature_size: int, meta: dict[str, Any] | None = None):  # fmt: skip
        self.dims = list(dims)
        self.coef = np.asarray(coef, np.float32)
        self.intercept = np.asarray(intercept, np.float32)
        self.mean = np.asarray(mean, np.float32)
        self.scale = np.asarray(scale, np.float32)
        self.feature_size = int(feature_size)
        self.meta = dict(meta or {})
        h = hashlib.sha256(self.coef.tobytes() + self.intercept.tobytes() + "|".join(self.dims).encode())
        self.id = f"concept:{h.hexdigest()[:16]}"

    # -- training ------------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, images: np.ndarray, records: list[dict[str, Any]], feature_size: int = 24, c: float = 0.05,
            dims: list[str] | None = None, min_positives: int = 8) -> ConceptEmbedder:  # fmt: skip
        """Train one probe per concept dimension.

        Args:
            images: (N, H, W) float [0, 1] training radiographs.
            records: per image, a phantom record (``labels``, ``sides``, ``boxes``, ``spurious``, ``view``, ``sex``).
            feature_size: pooled image side in pixels.
            c: inverse L2 regularisation of the logistic regressions.
            dims: concept dimensions (default: every concept, sides of lateralised ones, large effusion).
            min_positives: dimensions with fewer positives (or negatives) are dropped.
        """
        from sklearn.linear_model import LogisticRegression

        dims = dims or default_dims()
        heights = [r["boxes"]["Pleural Effusion"][3] - r["boxes"]["Pleural Effusion"][1]
                   for r in records if r.get("labels", {}).get("Pleural Effusion") == 1
                   and r.get("boxes", {}).get("Pleural Effusion")]  # fmt: skip
        cut = {"Pleural Effusion": float(np.median(heights)) if heights else np.inf}
        recs = [{**r, "_large_cut": cut} for r in records]
        x = image_features(images, feature_size)
        mean, scale = x.mean(0), x.std(0) + 1e-6
        xs = (x - mean) / scale
        kept, coefs, bias = [], [], []
        for d in dims:
            y = np.array([_record_value(r, d) for r in recs])
            if y.sum() < min_positives or (len(y) - y.sum()) < min_positives:
                log.info("concept ranker: dropping %s (%d positives of %d)", d, int(y.sum()), len(y))
                continue
            clf = LogisticRegression(C=c, max_iter=500, class_weight="balanced")
            clf.fit(xs, y)
            kept.append(d)
            coefs.append(clf.coef_[0])
            bias.append(clf.intercept_[0])
        meta = {"n_train": len(records), "large_effusion_height_px": cut["Pleural Effusion"]}
        return cls(kept, np.stack(coefs), np.array(bias), mean, scale, feature_size, meta)

    # -- persistence ---------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        from medfm.core.files import atomic_dir

        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            np.savez(tmp / "probes.npz", coef=self.coef, intercept=self.intercept, mean=self.mean, scale=self.scale)
            (tmp / "config.json").write_text(json.dumps(
                {"kind": "raddiff-concept-ranker", "dims": self.dims, "feature_size": self.feature_size,
                 "meta": self.meta}, indent=2))  # fmt: skip
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ConceptEmbedder:
        from medfm.core.errors import DataError

        directory = Path(directory)
        cfg_path, npz = directory / "config.json", directory / "probes.npz"
        if not cfg_path.is_file() or not npz.is_file():
            raise DataError(f"{directory} is not a concept ranker (needs config.json and probes.npz; "
                            "build one with 'medfm raddiff prepare')")  # fmt: skip
        cfg = json.loads(cfg_path.read_text())
        z = np.load(npz)
        return cls(cfg["dims"], z["coef"], z["intercept"], z["mean"], z["scale"], cfg["feature_size"], cfg.get("meta"))

    # -- encoding ------------------------------------------------------------------------------------------------
    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W) images -> (N, K) probe probabilities."""
        return self._probabilities(image_features(images, self.feature_size))

    def _probabilities(self, features: np.ndarray) -> np.ndarray:
        xs = (features - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-(xs @ self.coef.T + self.intercept)))

    def _embed_probabilities(self, p: np.ndarray) -> np.ndarray:
        theta = p * (np.pi / 2)
        return l2_normalise(np.stack([np.cos(theta), np.sin(theta)], axis=-1).reshape(len(theta), -1))

    def embed_arrays(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W) float [0, 1] images -> (N, 2K) unit rows."""
        return self._embed_probabilities(self.probabilities(images))

    def embed_image_files(self, paths: Sequence[Path]) -> np.ndarray:
        from medfm.data.io import read_radiograph

        if not paths:
            return np.zeros((0, 2 * len(self.dims)), np.float32)
        feats = np.stack([image_features(read_radiograph(p).array[None], self.feature_size)[0] for p in paths])
        return self._embed_probabilities(self._probabilities(feats))

    def text_vector(self, text: str) -> np.ndarray:
        """(2K,) un-normalised concept vector of one text (zeros when it names no known concept)."""
        v = np.zeros((len(self.dims), 2), np.float32)
        index = {d: i for i, d in enumerate(self.dims)}
        for m in mentions(text):
            slot = 0 if m.negated else 1
            if m.concept in index:
                v[index[m.concept], slot] += 1.0
            sides = ("left", "right") if m.side == "bilateral" else (m.side,) if m.side else ()
            for s in sides:
                if f"{m.concept}|{s}" in index:
                    v[index[f"{m.concept}|{s}"], slot] += 1.0
            if m.severity and f"{m.concept}|large" in index and not m.negated:
                v[index[f"{m.concept}|large"], 1 if m.severity == "large" else 0] += 1.0
        return v.reshape(-1)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 2 * len(self.dims)), np.float32)
        return l2_normalise(np.stack([self.text_vector(t) for t in texts]))
