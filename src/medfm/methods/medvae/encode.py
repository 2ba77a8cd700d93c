"""``encode`` / ``decode`` / ``export`` / ``report`` verbs and memory-bounded tiled 3D encoding.

Latent files (``<run>/latents/<id>.latent.npz``) hold ``latent`` ``(C, *S/f)`` float32 (the posterior mean by
default), optionally ``projected`` (stage-2 latent used downstream), and what decoding needs to restore the
input geometry: ``pads`` (per-axis [before, after] padding to a multiple of f), ``shape`` (original size),
``modality``, ``spacing``, ``affine`` (3D) and the model's ``factor``. ``latents.csv`` lists them with labels.

Tiled encoding (:func:`encode_tiled`) runs the encoder on overlapping ``tile``^3 windows with MONAI's
``sliding_window_inference`` (Gaussian blending, the latent grid is the input grid / f) so memory is bounded by the
tile size; :func:`seam_error` measures how far the stitched latent is from a whole-volume encoding.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfm.core.errors import DataError, UsageError
from medfm.core.files import atomic_path, atomic_write_text
from medfm.core.runs import Run, progress, resolve_device
from medfm.methods.medvae.config import DecodeConfig, EncodeConfig, ExportConfig
from medfm.methods.medvae.data import Item, crop_padding, load_items, model_to_unit, pad_to_multiple, volume_to_hu

log = logging.getLogger(__name__)


@torch.no_grad()
def encode_tiled(model: Any, x: torch.Tensor, tile: int, overlap: float = 0.5, mode: str = "gaussian",
                 sample: bool = False) -> torch.Tensor:  # fmt: skip
    """Encode ``x`` ``(B, C, X, Y, Z)`` in overlapping ``tile``^3 windows; returns the latent ``(B, C_lat, *S/f)``.

    ``tile`` must be a multiple of the model factor. Windows are blended with ``mode`` weights (gaussian or
    constant) by ``monai.inferers.sliding_window_inference``, which maps the window grid to the latent grid.
    """
    from monai.inferers import sliding_window_inference

    if tile % model.factor:
        raise UsageError(f"--tile {tile} must be a multiple of the model factor {model.factor}")
    roi = [min(tile, s) for s in x.shape[2:]]
    return sliding_window_inference(x, roi, sw_batch_size=1, predictor=lambda t: model.encode(t, sample=sample),
                                    overlap=overlap, mode=mode, progress=False)  # fmt: skip


@torch.no_grad()
def seam_error(model: Any, x: torch.Tensor, tile: int, overlap: float = 0.5) -> dict[str, float]:
    """Relative L2 error and max abs error of tiled vs whole-volume latents (gaussian and constant blending)."""
    full = model.encode(x)
    out = {}
    for mode in ("gaussian", "constant"):
        tiled = encode_tiled(model, x, tile, overlap, mode)
        out[f"rel_error_{mode}"] = float((tiled - full).norm() / full.norm().clamp_min(1e-12))
        out[f"max_abs_error_{mode}"] = float((tiled - full).abs().max())
    scale = float(full.std())
    out["latent_std"] = scale
    return out


def _to_model(arr: np.ndarray, model: Any) -> tuple[torch.Tensor, list[list[int]]]:
    padded, pads = pad_to_multiple(arr, model.factor)
    x = torch.from_numpy(np.ascontiguousarray(padded))[None, None]
    return x.expand(-1, model.init_kwargs["in_channels"], *x.shape[2:]).contiguous(), pads


def latent_record(item: Item, latent: np.ndarray, pads: list[list[int]], model: Any,
                  projected: np.ndarray | None) -> dict[str, Any]:  # fmt: skip
    rec: dict[str, Any] = {
        "latent": latent.astype(np.float32),
        "pads": np.asarray(pads, dtype=np.int64),
        "shape": np.asarray(item.array.shape, dtype=np.int64),
        "factor": np.asarray(model.factor),
        "meta": np.asarray(json.dumps({k: v for k, v in item.meta.items() if k != "affine"}, default=str)),
    }
    if projected is not None:
        rec["projected"] = projected.astype(np.float32)
    if "affine" in item.meta:
        rec["affine"] = np.asarray(item.meta["affine"], dtype=np.float64)
    return rec


def save_npz(path: Path, arrays: dict[str, Any]) -> Path:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return path


def run_encode(cfg: EncodeConfig) -> int:
    from medfm.methods.medvae.model import load_model

    run = Run("medvae", "encode", cfg)
    if cfg.dry_run:
        return run.plan([f"model {cfg.model}", f"input {cfg.input}",
                         f"latents: {'sampled' if cfg.sample else 'posterior mean'}"
                         + (" + projected" if cfg.projected else ""), f"-> {run.dir / 'latents'}"])  # fmt: skip
    with run:
        model = load_model(cfg.model, device=resolve_device(cfg.device))
        d = cfg.data
        items = load_items(cfg.input, model.spatial_dims, n=d.n, size=d.size, phantom_shape=d.phantom_shape,
                           modality=d.modality, window=tuple(d.ct_window), seed=cfg.seed, val_fraction=0.0,
                           label=d.label, limit=cfg.limit, resize=False)  # fmt: skip
        device = next(model.parameters()).device
        out_dir = run.dir / "latents"
        rows, seconds, n_pixels, n_latent = [], 0.0, 0, 0
        shown: list[list[tuple[Any, ...]]] = []  # first items' inputs and latent channels, for the report
        groups: dict[tuple[int, ...], list[Item]] = {}
        for it in items:
            groups.setdefault(pad_to_multiple(it.array, model.factor)[0].shape, []).append(it)
        bs = cfg.batch_size if model.spatial_dims == 2 else 1
        for members in groups.values():
            for i in progress(range(0, len(members), bs), desc="encode", total=(len(members) + bs - 1) // bs):
                chunk = members[i : i + bs]
                tensors = [_to_model(it.array, model) for it in chunk]
                x = torch.cat([t for t, _ in tensors]).to(device)
                t0 = time.perf_counter()
                with torch.no_grad():
                    if model.spatial_dims == 3 and cfg.tile and max(x.shape[2:]) > cfg.tile:
                        z = encode_tiled(model, x, cfg.tile, cfg.overlap, sample=cfg.sample)
                    else:
                        z = model.encode(x, sample=cfg.sample)
                    proj = model.project(z).cpu() if cfg.projected else None
                    z = z.cpu()  # inside the timed region: waits for asynchronous (GPU) kernels
                seconds += time.perf_counter() - t0
                for j, it in enumerate(chunk):
                    path = out_dir / f"{it.id}.latent.npz"
                    save_npz(path, latent_record(it, z[j].numpy(), tensors[j][1], model,
                                                 None if proj is None else proj[j].numpy()))  # fmt: skip
                    rows.append({"id": it.id, "latent": str(path.relative_to(run.dir)), **it.labels})
                    if len(shown) < 4:
                        lat = z[j].numpy()
                        shown.append([(f"{it.id} input {tuple(it.array.shape)}", it.array),
                                      *[(f"latent channel {c} {tuple(lat.shape[1:])}", lat[c], {"cmap": "viridis"})
                                        for c in range(min(3, lat.shape[0]))]])  # fmt: skip
                    n_pixels += int(np.prod(it.array.shape))
                    n_latent += int(z[j].numel())
        cols: list[str] = []
        for r in rows:
            cols += [c for c in r if c not in cols]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(run.dir / "latents.csv", text.getvalue())
        results = run.new_results()
        unit = "volumes" if model.spatial_dims == 3 else "images"
        results.add(f"{unit}_per_second", len(items) / max(seconds, 1e-9), n=len(items),
                    note=f"encoder forward only, batch {bs}, device {device}")  # fmt: skip
        results.add("compression_ratio", n_pixels / max(n_latent, 1), n=len(items),
                    note="input elements / latent elements")  # fmt: skip
        results.meta.update({"model": cfg.model, "items": len(items), "latents": "latents.csv",
                             "sampled": cfg.sample, "projected": cfg.projected})  # fmt: skip
        run.save_results(results)
        from medfm.core.report import image_grid_figure, render_run_report

        if shown:
            run.save_figure("inputs_and_latents", image_grid_figure(shown), (
                f"First {len(shown)} inputs (model scale [-1, 1]; 3D: middle axial slice) and their first latent "
                f"channels ({'sampled' if cfg.sample else 'posterior mean'}, {model.factor}x smaller per axis)."))  # fmt: skip
        render_run_report(run.dir, title="MedVAE encode")
    return 0


def read_latent(path: Path) -> dict[str, Any]:
    """Load a ``.latent.npz`` written by ``encode``."""
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable latent file ({exc})") from None
    if "latent" not in data:
        raise DataError(f"{path}: no 'latent' array; was it written by medfm medvae encode?")
    data["meta"] = json.loads(str(data["meta"])) if "meta" in data else {}
    return data


def latent_files(source: str) -> list[Path]:
    path = Path(source)
    if path.is_file() and path.suffix == ".csv":
        with open(path, newline="") as fh:
            return [(path.parent / r["latent"]).resolve() for r in csv.DictReader(fh)]
    if path.is_dir():
        files = sorted(path.rglob("*.latent.npz"))
        if files:
            return files
    raise DataError(f"{source}: no .latent.npz files (give a latents folder or the latents.csv of an encode run)")


def run_decode(cfg: DecodeConfig) -> int:
    from medfm.data.io import save_nifti, save_png
    from medfm.methods.medvae.model import load_model

    run = Run("medvae", "decode", cfg)
    files = latent_files(cfg.input)
    if cfg.dry_run:
        return run.plan([f"model {cfg.model}", f"{len(files)} latent files from {cfg.input}", f"-> {run.dir}"])
    with run:
        model = load_model(cfg.model, device=resolve_device(cfg.device))
        device = next(model.parameters()).device
        out_dir = run.dir / "images"
        written: list[dict[str, Any]] = []
        shown: list[tuple[Any, ...]] = []
        for path in progress(files[: cfg.limit] if cfg.limit else files, desc="decode"):
            rec = read_latent(path)
            z = torch.from_numpy(rec["latent"])[None].to(device)
            if z.shape[1] != model.latent_channels or z.ndim != model.spatial_dims + 2:
                raise DataError(f"{path}: latent of shape {tuple(rec['latent'].shape)} does not fit this model "
                                f"(latent channels {model.latent_channels}, {model.spatial_dims}D)")  # fmt: skip
            with torch.no_grad():
                img = model.decode(z).clamp(-1, 1)[0].mean(0).cpu().numpy()
            img = crop_padding(img, rec["pads"].tolist())
            name = path.name.removesuffix(".latent.npz")
            fmt = cfg.format
            if fmt == "auto":
                fmt = "png" if img.ndim == 2 else "nifti"
            if fmt == "png":
                out = save_png(out_dir / f"{name}.png", model_to_unit(img), bits=16)
            elif fmt == "nifti":
                meta = rec["meta"]
                vol = volume_to_hu(img) if meta.get("modality") == "ct" else model_to_unit(img)
                spacing = tuple(meta.get("spacing") or (1.0,) * img.ndim)[: img.ndim]
                out = save_nifti(out_dir / f"{name}.nii.gz", vol.astype(np.float32), spacing,
                                 rec.get("affine"))  # fmt: skip
            else:
                out = out_dir / f"{name}.npy"
                with atomic_path(out) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, img)
            written.append({"id": name, "image": str(out.relative_to(run.dir)), "shape": list(img.shape)})
            if len(written) <= 8:
                shown.append((f"{name} {tuple(img.shape)}", img, {"vmin": -1, "vmax": 1}))
        run.write_samples(written)
        results = run.new_results()
        results.add("decoded", float(len(written)), n=len(written), note="images written")
        results.meta.update({"model": cfg.model, "format": cfg.format})
        run.save_results(results)
        from medfm.core.report import image_grid_figure, render_run_report

        if shown:
            run.save_figure("decoded", image_grid_figure([shown[:4], shown[4:8]] if len(shown) > 4 else [shown]), (
                f"First {len(shown)} decoded images of {len(written)} (model scale [-1, 1]; 3D: middle axial slice), "
                f"as written to images/ ({cfg.format})."))  # fmt: skip
        render_run_report(run.dir, title="MedVAE decode")
    return 0


def run_export(cfg: ExportConfig) -> int:
    """Original checkpoint (or medfm model) -> medfm model directory ``<run>/checkpoints/final`` with a card."""
    from medfm.core.cards import Capabilities, Training, TrainingData, card_from_run, method_facts
    from medfm.methods.medvae.convert import load_weights_into
    from medfm.methods.medvae.model import build_model, count_parameters, get_preset

    preset = get_preset(cfg.preset)
    run = Run("medvae", "export", cfg)
    if cfg.dry_run:
        return run.plan([f"convert {cfg.source} into preset {preset.name}", f"-> {run.dir / 'checkpoints/final'}"])
    with run:
        model = build_model(preset)
        load_weights_into(model, cfg.source)
        results = run.new_results()
        results.add("parameters", float(count_parameters(model)), n=1)
        results.meta.update({"source": cfg.source, "preset": preset.name})
        run.save_results(results)
        card = card_from_run(
            run.dir, name=f"medvae-{preset.name}-converted", method="medvae",
            data=TrainingData(size=1052730, unit="images and volumes", modalities=["CXR", "mammography", "CT", "MR"],
                              annotation="none", sources=["MedVAE training set (Varma et al. 2025), as published"]),
            training=Training(paradigm=["self-supervised-generative"], objective="converted original MedVAE weights",
                              architecture=f"MedVAE {preset.name}", base_model=cfg.source, steps=0),
            capabilities=Capabilities(supported=["reconstruction", "generation"], inputs="images in [-1, 1]",
                                      outputs="latents and reconstructions"),
            **method_facts(__package__, "converted"), model=model,
        )  # fmt: skip
        model.save_pretrained(run.dir / "checkpoints" / "final", card=card)
        from medfm.core.report import render_run_report

        render_run_report(run.dir, title="MedVAE export")
    return 0
