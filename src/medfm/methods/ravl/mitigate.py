"""RaVL mitigation (spec §2.3, reconstructed) and the fine-tuning baselines, in one Accelerate loop.

Methods (``method``):

- ``standard``: symmetric CLIP loss on image-caption pairs (open_clip's ClipLoss).
- ``upsample``: the same loss, batches drawn with probability inversely proportional to the size of each
  image's group (class x discovered feature present/absent), so every group is seen equally often.
- ``gdro``: VL-GDRO: GroupDRO (Sagawa et al. 2020) over the zero-shot logits ``scale * z_img W`` (W = class prompt
  embeddings from the text tower, with gradients) with groups class x feature; group weights
  ``q_g <- q_g exp(eta L_g)`` (normalised); loss = CLIP loss + sum_g q_g L_g.
- ``ravl``: the region-aware loss ``L_img + lambda_core L_core + lambda_spur L_spur``:
  ``L_core`` is the symmetric InfoNCE between each caption and the normalised mean embedding of its image's
  non-spurious regions (pulls the text toward the relevant regions); ``L_spur`` is the caption->image InfoNCE
  with every spurious region of the batch added as an extra negative (pushes the text away from the
  discovered spurious feature).

Spurious regions of the fine-tuning set are labelled by :func:`label_spurious_regions`: a region is spurious
when its nearest discovery medoid belongs to a discovered spurious cluster. The loop trains for a fixed number
of optimiser steps with batches drawn from a generator seeded by ``(seed, step)``, checkpoints every
``save_every`` steps through :mod:`medfm.core.training` and resumes from it. ``batch_size`` is the global batch:
under N processes each embeds its share and the losses see every process's rows (gathered with gradients), so
the in-batch negatives, the GroupDRO weights and the gradients are those of one process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medfm.core.errors import UsageError
from medfm.methods.chexficient import clip_loss  # symmetric InfoNCE (open_clip ClipLoss), re-exported here
from medfm.methods.ravl.data import PROMPT_TEMPLATES, AuditSet
from medfm.methods.ravl.regions import flatten_regions, region_pixels
from medfm.methods.ravl.zeroshot import region_boxes_of

log = logging.getLogger(__name__)

METHODS = ("standard", "upsample", "gdro", "ravl")


# ----------------------------------------------------------------------------------------------------------------------
# Losses (pure functions)


def core_alignment_loss(z_core: torch.Tensor, z_txt: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """L_core: symmetric InfoNCE between pooled core-region embeddings ``(B, D)`` and captions ``(B, D)``."""
    return clip_loss(F.normalize(z_core, dim=-1), z_txt, scale)


def spurious_negative_loss(
    z_img: torch.Tensor, z_txt: torch.Tensor, z_spur: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """L_spur: caption->image cross-entropy whose candidates are the batch images plus all spurious regions.

    Args:
        z_img: (B, D) unit image embeddings (positives on the diagonal).
        z_txt: (B, D) unit caption embeddings.
        z_spur: (S, D) unit embeddings of the batch's spurious regions (S may be 0: the loss is then the plain
            caption->image InfoNCE).
        scale: 1 / temperature.
    """
    cand = torch.cat([z_img, z_spur], dim=0) if z_spur.numel() else z_img
    logits = scale * z_txt @ cand.T
    return F.cross_entropy(logits, torch.arange(z_txt.shape[0], device=z_txt.device))


def region_aware_loss(
    z_img: torch.Tensor,
    z_txt: torch.Tensor,
    z_regions: torch.Tensor,
    region_owner: torch.Tensor,
    region_spurious: torch.Tensor,
    scale: torch.Tensor,
    lambda_core: float = 1.0,
    lambda_spur: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """RaVL's region-aware loss ``L_img + lambda_core L_core + lambda_spur L_spur`` (module docstring).

    Args:
        z_img: (B, D) unit image embeddings.
        z_txt: (B, D) unit caption embeddings.
        z_regions: (R, D) unit region embeddings of the batch images.
        region_owner: (R,) long, batch position of each region's image.
        region_spurious: (R,) bool, region labelled spurious.
        scale: 1 / temperature.

    Returns:
        ``(loss, parts)`` with the float value of each term.
    """
    b = z_img.shape[0]
    core = (~region_spurious).to(z_regions.dtype)
    pooled = torch.zeros(b, z_regions.shape[1], device=z_regions.device, dtype=z_regions.dtype)
    pooled.index_add_(0, region_owner, z_regions * core[:, None])
    has_core = torch.zeros(b, device=z_regions.device, dtype=z_regions.dtype).index_add_(0, region_owner, core) > 0
    pooled = torch.where(has_core[:, None], pooled, z_img)  # all regions spurious: fall back to the image
    l_img = clip_loss(z_img, z_txt, scale)
    l_core = core_alignment_loss(pooled, z_txt, scale)
    l_spur = spurious_negative_loss(z_img, z_txt, z_regions[region_spurious], scale)
    loss = l_img + lambda_core * l_core + lambda_spur * l_spur
    parts = {
        "loss_img": float(l_img.detach()),
        "loss_core": float(l_core.detach()),
        "loss_spur": float(l_spur.detach()),
    }
    return loss, parts


def group_losses(per_sample: torch.Tensor, groups: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean loss per group (G,), present (G,) bool)`` from per-sample losses and group ids."""
    sums = torch.zeros(n_groups, device=per_sample.device, dtype=per_sample.dtype).index_add_(0, groups, per_sample)
    counts = torch.bincount(groups, minlength=n_groups).to(per_sample.dtype)
    return sums / counts.clamp(min=1), counts > 0


def gdro_update(q: torch.Tensor, group_loss: torch.Tensor, present: torch.Tensor, eta: float) -> torch.Tensor:
    """GroupDRO's exponentiated-gradient step on group weights (groups absent from the batch are unchanged)."""
    q = q * torch.exp(eta * group_loss.detach() * present.to(q.dtype))
    return q / q.sum()


def upsample_weights(groups: np.ndarray) -> np.ndarray:
    """Sampling probability per item inversely proportional to its group's size (sums to 1)."""
    counts = np.bincount(groups)
    w = 1.0 / counts[groups]
    return w / w.sum()


def label_spurious_regions(region_emb: np.ndarray, medoid_emb: np.ndarray, spurious_clusters: list[int]) -> np.ndarray:
    """(R,) bool: the region's nearest medoid (cosine) is one of ``spurious_clusters``."""
    if len(region_emb) == 0 or not spurious_clusters:
        return np.zeros(len(region_emb), bool)
    nearest = (np.asarray(region_emb, np.float32) @ np.asarray(medoid_emb, np.float32).T).argmax(1)
    return np.isin(nearest, np.asarray(spurious_clusters))


# ----------------------------------------------------------------------------------------------------------------------
# Fine-tuning loop


@dataclass
class FinetuneOptions:
    """Plain-Python mirror of the config's ``mitigation`` section (see config.MitigationOptions)."""

    method: str = "ravl"
    steps: int = 200
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.01
    lambda_core: float = 1.0
    lambda_spur: float = 1.0
    gdro_eta: float = 0.1
    grid: int = 2
    region_mode: str = "mask"
    precision: str = "no"
    grad_accum: int = 1
    save_every: int = 100
    log_every: int = 20
    train_logit_scale: bool = False


class Finetuner:
    """Fine-tunes a CLIP-style model (medfm.methods.ravl.model interface) with one of :data:`METHODS`.

    Args:
        model: the model (trained in place).
        data: fine-tuning set (images, labels, captions; regions from ``opts.grid`` when it has none).
        opts: :class:`FinetuneOptions`.
        feature: (N,) bool discovered (or oracle) spurious feature per image, for upsample/gdro groups.
        region_spurious: (R,) bool spurious label per region (flattened in image order), for ``ravl``.
        run_dir: where checkpoints/last lives (None: no checkpoints).
        seed: batch-sampling seed.
        device: torch device string.
    """

    def __init__(
        self,
        model: Any,
        data: AuditSet,
        opts: FinetuneOptions,
        feature: np.ndarray | None = None,
        region_spurious: np.ndarray | None = None,
        run_dir: str | Path | None = None,
        seed: int = 0,
        device: str = "cpu",
    ):
        from medfm.core.training import Checkpointer, make_accelerator

        if opts.method not in METHODS:
            raise UsageError(f"--mitigation.method must be one of {', '.join(METHODS)}, got {opts.method!r}")
        if opts.method in ("upsample", "gdro") and feature is None:
            raise UsageError(f"method {opts.method} needs the discovered feature per image (run discover first)")
        if opts.method == "ravl" and region_spurious is None:
            raise UsageError("method ravl needs spurious region labels (run discover first)")
        self.opts, self.data, self.seed = opts, data, seed
        self.accelerator = make_accelerator(device, opts.precision, max(1, opts.grad_accum))
        self.model = model
        h, w = data.images.shape[-2:]
        self.boxes, self.owner = flatten_regions(region_boxes_of(data, opts.grid), h, w)
        self.first_region = np.searchsorted(self.owner, np.arange(len(data) + 1))
        self.region_spurious = np.zeros(len(self.boxes), bool) if region_spurious is None else region_spurious
        if len(self.region_spurious) != len(self.boxes):
            raise UsageError(f"{len(self.region_spurious)} region labels for {len(self.boxes)} regions")
        self.feature = np.zeros(len(data), bool) if feature is None else np.asarray(feature, bool)
        self.groups = data.labels * 2 + self.feature.astype(np.int64)
        self.n_groups = 2 * len(data.classnames)
        self.sample_p = upsample_weights(self.groups) if opts.method == "upsample" else None
        self.q = torch.full((self.n_groups,), 1.0 / self.n_groups)
        params = [p for n, p in model.named_parameters() if opts.train_logit_scale or "logit_scale" not in n]
        self.optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
        # DDP wraps the objective, so its forward (the whole loss) is what gradients are synchronised for
        self.objective, self.optimizer = self.accelerator.prepare(_Objective(model, self), self.optimizer)
        self.model = model
        self.step = 0
        self.run_dir = Path(run_dir) if run_dir else None
        self.checkpointer = Checkpointer(self.run_dir, self.accelerator)
        self.images = torch.from_numpy(data.images)

    # -- checkpoints -------------------------------------------------------------------------------------------------
    def maybe_resume(self) -> bool:
        resumed = self.checkpointer.load()
        if resumed is None:
            return False
        self.step, self.q = resumed.step, torch.tensor(resumed.state["q"])
        return True

    # -- one step ----------------------------------------------------------------------------------------------------
    def _batch(self, step: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, step])
        n = len(self.data)
        b = min(self.opts.batch_size, n)
        return np.sort(rng.choice(n, size=b, replace=self.sample_p is not None, p=self.sample_p))

    def _loss(self, idx: np.ndarray, m: Any = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of the global batch ``idx``; this process embeds its shard, the loss sees every process's rows."""
        from medfm.core.training import gather_with_grad, shard

        acc = self.accelerator
        m = m if m is not None else self.model
        dev = m.device
        mine = shard(idx, acc)

        def G(t: torch.Tensor) -> torch.Tensor:
            return gather_with_grad(t, acc)

        x = self.images[mine]
        z_img = G(m.encode_image(m.preprocess(x)))
        tokens = m.tokenize([self.data.captions[i] for i in mine])
        z_txt = G(m.encode_text(tokens.to(dev)))
        scale = m.scale()
        method = self.opts.method
        if method in ("standard", "upsample"):
            loss = clip_loss(z_img, z_txt, scale)
            return loss, {"loss_img": float(loss.detach())}
        if method == "gdro":
            l_img = clip_loss(z_img, z_txt, scale)
            prompts = [t.format(c) for c in self.data.classnames for t in PROMPT_TEMPLATES]
            zt = m.encode_text(m.tokenize(prompts).to(dev)).view(len(self.data.classnames), len(PROMPT_TEMPLATES), -1)
            W = F.normalize(zt.mean(1), dim=-1)
            logits = scale * z_img @ W.T
            w = acc.num_processes
            every = np.concatenate([idx[r::w] for r in range(w)])  # the global batch in gathered (rank) order
            y = torch.as_tensor(self.data.labels[every], device=dev)  # gathered rows are in rank order
            per = F.cross_entropy(logits, y, reduction="none")
            g = torch.as_tensor(self.groups[every], device=dev)
            gl, present = group_losses(per, g, self.n_groups)
            self.q = gdro_update(self.q.to(dev), gl, present, self.opts.gdro_eta)
            l_dro = (self.q * gl).sum()
            return l_img + l_dro, {"loss_img": float(l_img.detach()), "loss_dro": float(l_dro.detach())}
        # ravl: region crops of this process's images, gathered with their owners renumbered globally
        rs = np.concatenate([np.arange(self.first_region[i], self.first_region[i + 1]) for i in mine])
        local_owner = np.searchsorted(mine, self.owner[rs])  # shard position of each region's image (mine is sorted)
        crops = region_pixels(self.data.images[mine], self.boxes[rs], local_owner, self.opts.region_mode)
        z_reg = G(m.encode_image(m.preprocess(torch.from_numpy(crops))))
        offset = (
            int(G(torch.tensor([len(mine)], device=dev))[: acc.process_index].sum()) if acc.num_processes > 1 else 0
        )
        owner = G(torch.as_tensor(local_owner + offset, device=dev))
        spur = G(torch.as_tensor(self.region_spurious[rs], device=dev).long()).bool()
        return region_aware_loss(z_img, z_txt, z_reg, owner, spur, scale, self.opts.lambda_core, self.opts.lambda_spur)

    def fit(self, metrics_log: Any = None) -> dict[str, Any]:
        """Train to ``opts.steps`` optimiser steps (resuming when a checkpoint exists). Returns a summary."""

        from medfm.core.training import fit

        self.checkpointer.metrics = metrics_log  # trimmed to the resumed step: no step is logged twice
        self.maybe_resume()
        t0 = time.perf_counter()
        first = self.step
        self.objective.train()

        def step_fn(step: int) -> dict[str, float]:
            with self.accelerator.accumulate(self.objective):
                loss, parts = self.objective(self._batch(step))
                self.accelerator.backward(loss)
                self.optimizer.step()
                self.optimizer.zero_grad()
            self.step = step + 1
            return {"loss": float(loss.detach()), **parts}

        last = fit(step_fn, steps=self.opts.steps, start=first, metrics=metrics_log, log_every=self.opts.log_every,
                   checkpointer=self.checkpointer if self.run_dir else None, checkpoint_every=self.opts.save_every,
                   state_fn=lambda: {"q": self.q.tolist()}, desc=f"ravl {self.opts.method}")  # fmt: skip
        self.model.eval()
        secs = time.perf_counter() - t0
        return {"steps": self.step, "seconds": secs, "samples_seen": self.step * self.opts.batch_size, **last}

    def unwrapped(self) -> Any:
        return self.model


class _Objective(torch.nn.Module):
    """The fine-tuning loss as a module around the model, so DDP sees the forward it synchronises."""

    def __init__(self, model: Any, finetuner: Finetuner):
        super().__init__()
        self.model = model
        self.__dict__["finetuner"] = finetuner

    def forward(self, idx: np.ndarray) -> tuple[torch.Tensor, dict[str, float]]:
        return self.finetuner._loss(idx, self.model)


def finetune(
    model: Any,
    data: AuditSet,
    method: str = "standard",
    steps: int = 200,
    seed: int = 0,
    feature: np.ndarray | None = None,
    region_spurious: np.ndarray | None = None,
    **opts: Any,
) -> Any:
    """Convenience wrapper: fine-tune ``model`` in place on ``data`` and return it (in eval mode)."""
    ft = Finetuner(model, data, FinetuneOptions(method=method, steps=steps, **opts), feature, region_spurious,
                   seed=seed)  # fmt: skip
    ft.fit()
    return ft.unwrapped().eval()


def tiny_clip(image_size: int = 64, embed_dim: int = 32, seed: int = 0) -> Any:
    """A small CheXficient dual encoder (1-layer ViT, sentence bag-of-tokens text tower) for CPU experiments."""
    from medfm.methods.chexficient import CheXficientModel

    torch.manual_seed(seed)
    return CheXficientModel(
        embed_dim=embed_dim,
        image_tower={"kind": "vit", "image_size": image_size, "patch_size": max(4, image_size // 8), "width": 64,
                     "layers": 2, "head_width": 32},
        text_tower={"kind": "bag", "width": 64, "buckets": 4096},
        init_temperature=0.07,
    )  # fmt: skip
