"""CheXficient: CLIP-style chest X-ray image–report pretraining with online prototype curation.

Paper: Wang et al., "A data- and compute-efficient chest X-ray foundation model beyond aggressive scaling"
(arXiv 2602.22843); spec: shared/specs/chexficient_ravl.md part A. CLI: ``medfm chexficient train|curate|
evaluate|embed|report``.

Public API (importing this package stays torch-free; attributes load lazily)::

    from medfm.methods.chexficient import CheXficientModel
    model = CheXficientModel.from_pretrained("runs/chexficient/<run>/checkpoints/final")  # or "hf-hub:org/name"
    z_img = model.encode_images(images)        # (N, 1|3, H, W) tensor / (N, H, W) / list of PIL -> (N, D), unit rows
    z_txt = model.encode_texts(["No pleural effusion."])                    # list[str] -> (N, D), unit rows
    W = model.zero_shot_classifier(["cardiomegaly", "pneumothorax"], ["{}", "there is {}"])   # (D, C)
    p = model.zero_shot(images, ["cardiomegaly", "pneumothorax"])           # (N, C) softmax probabilities
    p = model.zero_shot_findings(images, ["cardiomegaly"])                  # (N, F) "f" vs "no f" (paper)
    model.save_pretrained(dir, card=...)                                    # safetensors + config.json + card

Lower-level pieces, each a small tested function or class:

- :mod:`.curator`: ``PrototypeCurator`` (k-means init with FAISS on joint [image; text] features, percentile
  bands, farthest-point thinning, Sinkhorn-balanced EMA prototype updates, exact state_dict),
  ``select_samples``, ``farthest_point_sampling``, ``sinkhorn_knopp``, ``ema_update_prototypes``,
  ``expected_keep_fraction``, ``GatheredBatch`` (micro-batch/process gathering before selection).
- :mod:`.losses`: ``clip_loss(z_img, z_txt, logit_scale, keep)`` (open_clip ClipLoss on kept pairs).
- :mod:`.engine`: ``Trainer`` (Accelerate, resumable; arms curated / full / random_online / random_static,
  compute counters) and ``curate_stream`` (bounded-memory curation of embedding streams).
- :mod:`.evaluation`: ``evaluate_model`` (zero-shot per-finding AUROC, retrieval Recall@K, linear probe, CIs).
- :mod:`.data`: ``PairData``, ``load_pairs``, ``phantom_pairs``, ``manifest_pairs``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CheXficientModel", "PrototypeCurator", "clip_loss", "curate_stream", "evaluate_model"]

_LAZY = {
    "CheXficientModel": "medfm.methods.chexficient.model",
    "PrototypeCurator": "medfm.methods.chexficient.curator",
    "clip_loss": "medfm.methods.chexficient.losses",
    "curate_stream": "medfm.methods.chexficient.engine",
    "evaluate_model": "medfm.methods.chexficient.evaluation",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medfm.methods.chexficient' has no attribute {name!r}")
