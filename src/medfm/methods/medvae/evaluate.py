"""``medfm medvae evaluate``: reconstruction fidelity vs bicubic/trilinear downsampling to the latent size.

For every held-out image: PSNR (dB, data range 1 on [0, 1]), SSIM and MS-SSIM of (a) the MedVAE reconstruction
of the posterior mean and (b) the image downsampled by the model's factor per axis (bicubic 2D, antialiased;
trilinear 3D) and upsampled back — the same number of spatial elements as a 1-channel latent. Means with
bootstrap CIs over images, and paired differences MedVAE - baseline with CIs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from medfm.core.errors import DataError
from medfm.core.results import Results
from medfm.core.runs import Run
from medfm.methods.medvae.config import EvaluateConfig
from medfm.methods.medvae.data import Item, fit_to, load_items, pad_to_multiple, split_items

log = logging.getLogger(__name__)


def _batches(items: list[Item], model: Any, batch_size: int):
    """Groups of same-shape padded tensors ``(B, C, *S)`` with their items."""
    groups: dict[tuple[int, ...], list[tuple[Item, np.ndarray]]] = {}
    for it in items:
        arr, _ = pad_to_multiple(it.array, model.factor)
        groups.setdefault(arr.shape, []).append((it, arr))
    in_ch = model.init_kwargs["in_channels"]
    for members in groups.values():
        for i in range(0, len(members), batch_size):
            chunk = members[i : i + batch_size]
            x = torch.from_numpy(np.stack([a for _, a in chunk]))[:, None]
            yield [it for it, _ in chunk], x.expand(-1, in_ch, *x.shape[2:]).contiguous()


@torch.no_grad()
def reconstruct(model: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction in [-1, 1], latent mean) of a batch."""
    z = model.encode(x)
    return model.decode(z).clamp(-1.0, 1.0), z


@torch.no_grad()
def fidelity(model: Any, items: list[Item], batch_size: int = 8) -> dict[str, np.ndarray]:
    """Per-item metrics ``{"psnr", "ssim", "ms_ssim", "psnr_baseline", ...}`` as arrays over ``items``."""
    from medfm.methods.medvae.losses import downsample_baseline, ms_ssim, psnr, ssim, to_unit

    out: dict[str, list[float]] = {}
    device = next(model.parameters()).device
    for _, x in _batches(items, model, batch_size):
        x = x.to(device)
        rec, _ = reconstruct(model, x)
        _, base = downsample_baseline(x, model.factor)
        xu = to_unit(x)
        for tag, y in (("", rec), ("_baseline", base)):
            yu = to_unit(y)
            out.setdefault("psnr" + tag, []).extend(psnr(yu, xu).tolist())
            out.setdefault("ssim" + tag, []).extend(ssim(yu, xu).tolist())
            out.setdefault("ms_ssim" + tag, []).extend(ms_ssim(yu, xu).tolist())
    return {k: np.asarray(v) for k, v in out.items()}


def reconstruction_results(model: Any, items: list[Item], results: Results, batch_size: int = 8) -> dict[str, Any]:
    """Add fidelity metrics (MedVAE, baseline, paired difference; CIs) to ``results``; return the arrays."""
    from medfm.core.metrics import difference_ci, mean_ci

    if not items:
        raise DataError("no images to evaluate")
    vals = fidelity(model, items, batch_size)
    base = "bicubic" if model.spatial_dims == 2 else "trilinear"
    for m in ("psnr", "ssim", "ms_ssim"):
        unit = " (dB, data range 1)" if m == "psnr" else ""
        results.add(m, mean_ci(vals[m], note=f"MedVAE reconstruction{unit}"))
        results.add(f"{m}_{base}", mean_ci(vals[m + "_baseline"], note=f"{base} down/up by the latent factor{unit}"))
        results.add(f"{m}_gain_vs_{base}", difference_ci(vals[m], vals[m + "_baseline"], paired=True,
                                                         note="paired difference MedVAE - baseline"))  # fmt: skip
    results.tables["per_item"] = [
        {"id": it.id, **{k: round(float(v[i]), 4) for k, v in vals.items()}} for i, it in enumerate(items)
    ]
    return vals


def comparison_figure(model: Any, items: list[Item], n: int = 4):
    """Grid of original / reconstruction / bicubic / |error| maps (rows = items; 3D: centre slice along Z)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from medfm.methods.medvae.losses import downsample_baseline

    chosen = items[:n]
    fig, axes = plt.subplots(len(chosen), 5, figsize=(10, 2.1 * len(chosen)), squeeze=False)
    device = next(model.parameters()).device
    for r, it in enumerate(chosen):
        arr, _ = pad_to_multiple(it.array, model.factor)
        x = torch.from_numpy(arr)[None, None].to(device)
        x = x.expand(-1, model.init_kwargs["in_channels"], *x.shape[2:])
        rec, _ = reconstruct(model, x)
        _, base = downsample_baseline(x, model.factor)

        def sl(t: torch.Tensor) -> np.ndarray:
            a = t[0, 0].cpu().numpy()
            return a[:, :, a.shape[2] // 2] if a.ndim == 3 else a

        o, rr, bb = sl(x), sl(rec), sl(base)
        panels = [
            (o, "original", "gray"),
            (rr, "MedVAE", "gray"),
            (bb, "bicubic", "gray"),
            (np.abs(rr - o), "|MedVAE - orig|", "magma"),
            (np.abs(bb - o), "|bicubic - orig|", "magma"),
        ]
        for c, (img, title, cmap) in enumerate(panels):
            ax = axes[r][c]
            kw = {"vmin": -1, "vmax": 1} if cmap == "gray" else {"vmin": 0, "vmax": 0.5}
            ax.imshow(img.T if it.array.ndim == 3 else img, cmap=cmap, **kw)
            ax.set_axis_off()
            if r == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def run_evaluate(cfg: EvaluateConfig) -> int:
    from medfm.methods.medvae.model import load_model

    run = Run("medvae", "evaluate", cfg)
    if cfg.dry_run:
        return run.plan([f"model {cfg.model}", f"data {cfg.data.source} (held-out split)",
                         "metrics: PSNR, SSIM, MS-SSIM vs bicubic/trilinear at the latent size"])  # fmt: skip
    with run:
        from medfm.core.runs import resolve_device

        model = load_model(cfg.model, device=resolve_device(cfg.device))
        d = cfg.data
        items = load_items(d.source, model.spatial_dims, n=d.n, size=d.size, phantom_shape=d.phantom_shape,
                           modality=d.modality, window=tuple(d.ct_window), seed=cfg.seed,
                           val_fraction=d.val_fraction, label=d.label, limit=cfg.limit)  # fmt: skip
        if model.spatial_dims == 3:
            items = [Item(it.id, fit_to(it.array, tuple(max(s, d.patch) for s in it.array.shape)), it.labels,
                          it.split, it.meta) for it in items]  # fmt: skip
        val = split_items(items, "val")
        t0 = time.perf_counter()
        results = run.new_results()
        reconstruction_results(model, val, results, cfg.batch_size)
        results.meta.update({"model": cfg.model, "items": len(val), "factor": model.factor,
                             "seconds": round(time.perf_counter() - t0, 2)})  # fmt: skip
        run.save_results(results)
        from medfm.core.report import render_run_report

        run.save_figure("reconstructions", comparison_figure(model, val), (
            f"Held-out images: original, MedVAE reconstruction, bicubic up-sampling from the latent's size "
            f"({model.factor}x per axis) and absolute error maps, all on the model's [-1, 1] scale "
            "(3D: middle axial slice)."))  # fmt: skip
        render_run_report(run.dir, title="MedVAE reconstruction fidelity")
        m = results.metrics
        base = next(k for k in m if k.startswith("psnr_") and "gain" not in k)
        log.info("PSNR %.2f dB (baseline %.2f), MS-SSIM %.4f", m["psnr"].value, m[base].value, m["ms_ssim"].value)
    return 0
