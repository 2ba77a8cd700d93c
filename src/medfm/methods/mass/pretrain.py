"""Pretraining (spec A4): MASS in-context segmentation of automatic masks, and two SSL baselines on the same
network and data at equal steps — SimCLR-style contrastive learning on the two views (pooled deepest features,
MLP projector, NT-Xent) and masked-image modelling (random cubes zeroed in the target view, reconstructed from the
final decoder map by a 1x1 conv, L1 on the masked voxels).

The loop is written against Hugging Face Accelerate (device placement, mixed precision, gradient accumulation),
uses LAMB (timm) or AdamW, a one-cycle schedule, gradient clipping and an EMA of the weights (the EMA weights are
saved and evaluated). Every ``checkpoint_every`` steps the full state (model, auxiliary heads, optimizer, scheduler,
EMA, sampler RNG, step) is written atomically to ``<run>/checkpoints/last``; rerunning with the same
``--output_dir`` resumes from it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medfm.core.files import atomic_dir
from medfm.methods.mass.losses import mass_loss, nt_xent
from medfm.methods.mass.model import IrisNet, build_model
from medfm.methods.mass.sampling import TwoViewSampler, random_cube_mask

log = logging.getLogger(__name__)


def make_optimizer(params: Any, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """LAMB (timm; the paper's optimiser) or AdamW."""
    if name == "lamb":
        from medfm.core.errors import require

        timm_optim = require("timm.optim", extra="vision", package="timm")
        return timm_optim.Lamb(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999), eps=1e-6)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def make_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


class AuxHeads(nn.Module):
    """Baseline heads: SimCLR projector on pooled deepest features; MIM 1x1-conv reconstruction head."""

    def __init__(self, channels: list[int], proj_dim: int = 64):
        super().__init__()
        c = channels[-1]
        self.projector = nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Linear(c, proj_dim))
        self.reconstruct = nn.Conv3d(channels[0], 1, 1)


def pretext_loss(model: IrisNet, aux: AuxHeads, batch: dict[str, torch.Tensor], task: Any,
                 rng: np.random.Generator) -> torch.Tensor:  # fmt: skip
    """Loss of one batch for ``task.objective`` in {mass, simclr, mim}."""
    if task.objective == "mass":
        logits = model(batch["target_image"], batch["ref_image"], batch["ref_masks"])
        return mass_loss(logits, batch["target_masks"])
    if task.objective == "simclr":
        z = [aux.projector(model.encode(batch[k])[-1].mean(dim=(2, 3, 4))) for k in ("ref_image", "target_image")]
        return nt_xent(z[0], z[1], task.temperature)
    if task.objective == "mim":
        x = batch["target_image"]
        hole = torch.stack([random_cube_mask(x.shape[2:], task.mim_patch, task.mim_ratio, rng) for _ in x]).to(x)
        final, _ = model.decode(model.encode(x * (1 - hole)), None)
        err = (aux.reconstruct(final) - x).abs() * hole
        return err.sum() / hole.sum().clamp_min(1.0)
    raise ValueError(f"unknown objective {task.objective!r}")


def save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_dir(path) as tmp:
        torch.save(state, tmp / "state.pt")


def load_state(path: Path) -> dict[str, Any] | None:
    f = path / "state.pt"
    return torch.load(f, map_location="cpu", weights_only=True) if f.is_file() else None


def pretrain(cases: list, cfg: Any, run_dir: Path, device: str = "cpu") -> dict[str, Any]:
    """Run pretraining; returns ``{"model": EMA IrisNet, "steps", "steps_run", "samples_seen", "seconds", "loss_last",
    "sample_seconds", "step_seconds", "k"}``. ``steps`` and ``samples_seen`` count the whole run (a resumed part
    included); ``steps_run``, ``seconds`` and the sample/step seconds only this call (for rates and the sampling
    share)."""
    from accelerate import Accelerator

    from medfm.core.results import MetricsLog
    from medfm.core.runs import progress

    tr, task = cfg.train, cfg.task
    sampler = TwoViewSampler(cases, task.crop, task.crop_margin, task.num_masks, task.min_overlap,
                             task.all_ones_task, task.augment)  # fmt: skip
    model = build_model(cfg.model)
    model.check_size((task.crop,) * 3)
    aux = AuxHeads(list(cfg.model.channels))
    params = [p for p in list(model.parameters()) + list(aux.parameters())]
    opt = make_optimizer(params, tr.optimizer, tr.lr, tr.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tr.lr, total_steps=max(tr.steps, 1),
                                                pct_start=tr.pct_start, div_factor=25, final_div_factor=1000)  # fmt: skip
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=tr.mixed_precision,
                              gradient_accumulation_steps=tr.grad_accum)  # fmt: skip
    model, aux, opt, sched = accelerator.prepare(model, aux, opt, sched)
    raw_model = accelerator.unwrap_model(model)
    ema = make_ema(raw_model, tr.ema_decay)
    rng = np.random.default_rng(int(getattr(cfg, "seed", 0)))
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    last = run_dir / "checkpoints" / "last"
    step, samples = 0, 0
    state = load_state(last)
    if state is not None:
        raw_model.load_state_dict(state["model"])
        accelerator.unwrap_model(aux).load_state_dict(state["aux"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        ema.load_state_dict(state["ema"])
        rng.bit_generator.state = state["rng"]
        step, samples = int(state["step"]), int(state["samples"])
        metrics.truncate_after(step)
        log.info("resumed pretraining from %s at step %d", last, step)
    t_sample = 0.0
    loss_val = float("nan")
    model.train()
    start = time.perf_counter()
    first = step
    for step in progress(range(first, tr.steps), desc=f"pretrain[{task.objective}]", total=tr.steps, initial=first):
        t0 = time.perf_counter()
        for _ in range(tr.grad_accum):
            batch = {k: v.to(accelerator.device) for k, v in sampler.sample(rng, tr.batch_size).items()}
            t_sample += time.perf_counter() - t0
            with accelerator.accumulate(model):
                loss = pretext_loss(model, aux, batch, task, rng)
                accelerator.backward(loss)
                if accelerator.sync_gradients and tr.grad_clip > 0:
                    accelerator.clip_grad_norm_(params, tr.grad_clip)
                opt.step()
                if accelerator.sync_gradients:
                    sched.step()
                opt.zero_grad()
            samples += tr.batch_size
            t0 = time.perf_counter()
        ema.update_parameters(raw_model)
        loss_val = float(loss.detach())
        if (step + 1) % tr.log_every == 0 or step + 1 == tr.steps:
            metrics.log(step + 1, loss=loss_val, lr=sched.get_last_lr()[0])
        if tr.checkpoint_every and (step + 1) % tr.checkpoint_every == 0 and step + 1 < tr.steps:
            save_state(last, {
                "model": raw_model.state_dict(), "aux": accelerator.unwrap_model(aux).state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "ema": ema.state_dict(),
                "rng": rng.bit_generator.state, "step": step + 1, "samples": samples,
            })  # fmt: skip
    seconds = time.perf_counter() - start
    final = ema.module
    final.eval()
    return {"model": final, "steps": tr.steps, "steps_run": tr.steps - first, "samples_seen": samples,
            "seconds": seconds, "loss_last": loss_val, "sample_seconds": t_sample, "step_seconds": seconds,
            "k": sampler.k}  # fmt: skip
