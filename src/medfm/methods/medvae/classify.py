"""``medfm medvae classify``: downstream classification on latents vs full-resolution and bicubic images.

The paper trains the same classifier (HRNet 2D, SEResNet-152 3D) on high-resolution images and on latents and
compares AUROC and throughput (spec B4). Here one small CNN family (:class:`SmallCNN`: conv-BN-ReLU-maxpool
stages until the side is <= 4, global pooling, linear) is trained with identical settings on each input:

- ``image``: full-resolution images (B, 1, H, W[, D]);
- ``bicubic``: images downsampled by the model factor per axis (bicubic 2D / trilinear 3D) — the same size as
  a 1-channel latent;
- ``latent``: posterior-mean latents divided by ``latent_scale``;
- ``projected``: stage-2 projected latents divided by ``latent_scale``.

AUROC on the held-out split has a bootstrap CI; training throughput (samples/s of forward+backward+step) is
measured for every input in the same run, so speed-ups are side-by-side ratios.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medfm.core.errors import UsageError
from medfm.core.runs import Run
from medfm.methods.medvae.config import ClassifierOptions, ClassifyConfig
from medfm.methods.medvae.data import Item, binary_labels, fit_to, load_items, pad_to_multiple, split_items

log = logging.getLogger(__name__)


class SmallCNN(nn.Module):
    """Conv-BN-ReLU-maxpool stages (width doubling, capped at 128) until the side is <= 4, then pool + linear.

    Args:
        in_channels: input channels.
        spatial_dims: 2 or 3.
        side: smallest input side (decides the number of stages).
        width: channels of the first stage.
    """

    def __init__(self, in_channels: int, spatial_dims: int, side: int, width: int = 32):
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        bn = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        layers: list[nn.Module] = []
        c, w, s = in_channels, width, side
        while s > 4:
            layers += [conv(c, w, 3, padding=1, bias=False), bn(w), nn.ReLU(inplace=True), pool(2)]
            c, w, s = w, min(2 * w, 128), s // 2
        layers += [conv(c, w, 3, padding=1, bias=False), bn(w), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(w, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S)`` -> logits ``(B,)``."""
        return self.head(self.features(x).flatten(2).mean(2)).squeeze(1)


def train_classifier(x_train: torch.Tensor, y_train: np.ndarray, x_test: torch.Tensor, opts: ClassifierOptions,
                     seed: int = 0) -> tuple[np.ndarray, float]:  # fmt: skip
    """Train :class:`SmallCNN` for ``opts.steps`` steps; return test scores and training samples/s.

    Throughput excludes the first 3 steps (warm-up) and counts forward + backward + optimizer step.
    """
    torch.manual_seed(seed)
    dims = x_train.ndim - 2
    net = SmallCNN(x_train.shape[1], dims, min(x_train.shape[2:]), opts.width)
    opt = torch.optim.AdamW(net.parameters(), lr=opts.lr, weight_decay=0.05)
    y = torch.from_numpy(y_train.astype(np.float32))
    pos = float(y.mean())
    pos_weight = torch.tensor((1 - pos) / max(pos, 1e-3))
    gen = torch.Generator().manual_seed(seed)
    bs = min(opts.batch_size, len(x_train))
    net.train()
    timed, seen = 0.0, 0
    for step in range(opts.steps):
        idx = torch.randint(0, len(x_train), (bs,), generator=gen)
        t0 = time.perf_counter()
        loss = F.binary_cross_entropy_with_logits(net(x_train[idx]), y[idx], pos_weight=pos_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 3:
            timed += time.perf_counter() - t0
            seen += bs
    net.eval()
    with torch.no_grad():
        scores = torch.cat([net(x_test[i : i + 64]) for i in range(0, len(x_test), 64)]).numpy()
    return scores, seen / max(timed, 1e-9)


def training_throughput(shape: tuple[int, ...], batch_size: int, steps: int = 5, width: int = 32) -> float:
    """Samples/s of forward + backward + AdamW step of :class:`SmallCNN` on random inputs of ``shape`` (C, *S)."""
    torch.manual_seed(0)
    net = SmallCNN(shape[0], len(shape) - 1, min(shape[1:]), width)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(batch_size, *shape)
    y = torch.randint(0, 2, (batch_size,)).float()
    timed = 0.0
    for step in range(steps + 1):
        t0 = time.perf_counter()
        loss = F.binary_cross_entropy_with_logits(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step:
            timed += time.perf_counter() - t0
    return steps * batch_size / timed


@torch.no_grad()
def build_inputs(items: list[Item], model: Any | None, kinds: list[str], factor: int, latent_scale: float,
                 batch_size: int = 16) -> dict[str, torch.Tensor]:  # fmt: skip
    """Tensors per input kind for ``items`` (all items must share a shape after padding to ``factor``)."""
    from medfm.methods.medvae.losses import downsample_baseline

    arrays = np.stack([pad_to_multiple(it.array, factor)[0] for it in items])
    x = torch.from_numpy(arrays)[:, None]
    out: dict[str, torch.Tensor] = {}
    if "image" in kinds:
        out["image"] = x
    if "bicubic" in kinds:
        out["bicubic"] = torch.cat([downsample_baseline(x[i : i + 64], factor)[0] for i in range(0, len(x), 64)])
    if model is not None and ({"latent", "projected"} & set(kinds)):
        device = next(model.parameters()).device
        in_ch = model.init_kwargs["in_channels"]
        zs, ps = [], []
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device)
            z = model.encode(xb.expand(-1, in_ch, *xb.shape[2:]))
            zs.append(z.cpu())
            if "projected" in kinds and model.has_projection:
                ps.append(model.project(z).cpu())
        if "latent" in kinds:
            out["latent"] = torch.cat(zs) / latent_scale
        if ps:
            out["projected"] = torch.cat(ps) / latent_scale
    return out


def compare(items_train: list[Item], items_test: list[Item], label: str, model: Any | None, kinds: list[str],
            opts: ClassifierOptions, seed: int = 0, factor: int | None = None) -> dict[str, dict[str, Any]]:  # fmt: skip
    """AUROC (with CI) and training throughput per input kind, side by side."""
    from medfm.core.metrics import auroc, with_ci

    f = model.factor if model is not None else int(factor or 4)
    y_tr, y_te = binary_labels(items_train, label), binary_labels(items_test, label)
    if len(np.unique(y_tr)) < 2:
        raise UsageError(f"label {label!r} has one class in the training split; use more data (--data.n)")
    x_tr = build_inputs(items_train, model, kinds, f, opts.latent_scale)
    x_te = build_inputs(items_test, model, kinds, f, opts.latent_scale)
    out = {}
    for kind in kinds:
        if kind not in x_tr:
            log.warning("input %s unavailable (no model or no projection head); skipped", kind)
            continue
        scores, sps = train_classifier(x_tr[kind], y_tr, x_te[kind], opts, seed)
        out[kind] = {"auroc": with_ci(auroc, y_te, scores, seed=seed, strata=y_te), "samples_per_s": sps,
                     "shape": list(x_tr[kind].shape[1:]), "scores": scores, "labels": y_te}  # fmt: skip
    return out


def run_classify(cfg: ClassifyConfig) -> int:
    from medfm.core.results import Metric

    if not cfg.data.label:
        raise UsageError("classify needs a binary label: --data.label (e.g. Cardiomegaly for phantom:cxr)")
    run = Run("medvae", "classify", cfg)
    if cfg.dry_run:
        return run.plan([f"model {cfg.model or '(none: images and bicubic only)'}", f"data {cfg.data.source}",
                         f"label {cfg.data.label}; inputs {', '.join(cfg.inputs)}"])  # fmt: skip
    with run:
        from medfm.core.runs import resolve_device
        from medfm.methods.medvae.model import load_model

        model = load_model(cfg.model, device=resolve_device(cfg.device)) if cfg.model else None
        dims = model.spatial_dims if model is not None else (3 if cfg.data.source == "phantom:ct" else 2)
        d = cfg.data
        items = load_items(d.source, dims, n=d.n, size=d.size, phantom_shape=d.phantom_shape, modality=d.modality,
                           window=tuple(d.ct_window), seed=cfg.seed, val_fraction=d.val_fraction, label=d.label,
                           limit=cfg.limit)  # fmt: skip
        if dims == 3:
            side = max(max(it.array.shape) for it in items)
            items = [Item(it.id, fit_to(it.array, (side,) * 3), it.labels, it.split, it.meta) for it in items]
        kinds = [k for k in cfg.inputs if model is not None or k in ("image", "bicubic")]
        res = compare(split_items(items, "train"), split_items(items, "val"), d.label, model, kinds, cfg.classifier,
                      cfg.seed)  # fmt: skip
        results = run.new_results()
        rows = []
        for kind, r in res.items():
            results.add(f"auroc_{kind}", r["auroc"])
            results.add(f"train_samples_per_s_{kind}", Metric(r["samples_per_s"], note=f"input {r['shape']}"))
            rows.append({"input": kind, "shape": "x".join(map(str, r["shape"])), "auroc": r["auroc"].value,
                         "samples_per_s": round(r["samples_per_s"], 1)})  # fmt: skip
        if "image" in res:
            for kind in res:
                if kind != "image":
                    results.add(f"throughput_gain_{kind}_vs_image",
                                res[kind]["samples_per_s"] / res["image"]["samples_per_s"])  # fmt: skip
        results.tables["inputs"] = rows
        results.meta.update({"label": d.label, "model": cfg.model, "train": len(split_items(items, "train")),
                             "test": len(split_items(items, "val"))})  # fmt: skip
        run.save_results(results)
        from medfm.core.report import render_run_report

        render_run_report(run.dir, title=f"MedVAE downstream classification ({d.label})")
    return 0
