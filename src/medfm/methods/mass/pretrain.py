"""Pretraining (spec A4): MASS in-context segmentation of automatic masks, and two SSL baselines on the same
network and data at equal steps — SimCLR-style contrastive learning on the two views (pooled deepest features,
MLP projector, NT-Xent) and masked-image modelling (random cubes zeroed in the target view, reconstructed from the
final decoder map by a 1x1 conv, L1 on the masked voxels).

The loop is written against Hugging Face Accelerate (device placement, mixed precision, gradient accumulation),
uses LAMB (timm) or AdamW, a one-cycle schedule, gradient clipping and an EMA of the weights (the EMA weights are
saved and evaluated). Every ``checkpoint_every`` steps the full state (model, auxiliary heads, optimizer, scheduler,
EMA, sampler RNG, step) is saved through :mod:`medfm.core.training`; rerunning with the same ``--output_dir``
resumes from it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

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


class PretextObjective(nn.Module):
    """The pretext loss of ``task.objective`` as one module: the network plus the one head that objective uses.

    Distributed data parallelism wraps this module, so it holds exactly the parameters that get gradients (the
    SimCLR projector is not part of the MASS or MIM objective, nor the MIM head of the others).
    """

    def __init__(self, model: IrisNet, aux: AuxHeads, task: Any):
        super().__init__()
        self.model, self.objective, self.temperature = model, task.objective, task.temperature
        if task.objective == "simclr":
            self.projector = aux.projector
        elif task.objective == "mim":
            self.reconstruct = aux.reconstruct
        elif task.objective != "mass":
            raise ValueError(f"unknown objective {task.objective!r}")

    def forward(self, batch: dict[str, torch.Tensor], hole: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of a batch (``target_image``/``ref_image`` ``(B, 1, X, Y, Z)``, masks ``(B, K, X, Y, Z)``); ``hole``
        ``(B, 1, X, Y, Z)`` is MIM's mask of zeroed cubes."""
        if self.objective == "mass":
            logits = self.model(batch["target_image"], batch["ref_image"], batch["ref_masks"])
            return mass_loss(logits, batch["target_masks"])
        if self.objective == "simclr":
            z = [self.projector(self.model.encode(batch[k])[-1].mean(dim=(2, 3, 4))) for k in ("ref_image", "target_image")]  # fmt: skip
            return nt_xent(z[0], z[1], self.temperature)
        x = batch["target_image"]
        assert hole is not None
        final, _ = self.model.decode(self.model.encode(x * (1 - hole)), None)
        err = (self.reconstruct(final) - x).abs() * hole
        return err.sum() / hole.sum().clamp_min(1.0)


def mim_holes(batch: dict[str, torch.Tensor], task: Any, rng: np.random.Generator) -> torch.Tensor | None:
    """MIM's random cube masks for the batch's target views (None for the other objectives)."""
    if task.objective != "mim":
        return None
    x = batch["target_image"]
    return torch.stack([random_cube_mask(x.shape[2:], task.mim_patch, task.mim_ratio, rng) for _ in x]).to(x)


def pretrain(cases: list, cfg: Any, run_dir: Path, device: str = "cpu") -> dict[str, Any]:
    """Run pretraining; returns ``{"model": EMA IrisNet, "steps", "steps_run", "samples_seen", "seconds", "loss_last",
    "sample_seconds", "step_seconds", "k"}``. ``steps`` and ``samples_seen`` count the whole run (a resumed part
    included); ``steps_run``, ``seconds`` and the sample/step seconds only this call (for rates and the sampling
    share).

    ``train.batch_size`` is the global batch: every process draws the same batch from the shared sampler RNG
    and trains on its share of it, so N processes see the same samples per step as one.
    """
    from medfm.core.results import MetricsLog
    from medfm.core.training import Checkpointer, fit, make_accelerator, shard

    tr, task = cfg.train, cfg.task
    sampler = TwoViewSampler(cases, task.crop, task.crop_margin, task.num_masks, task.min_overlap,
                             task.all_ones_task, task.augment)  # fmt: skip
    model = build_model(cfg.model)
    model.check_size((task.crop,) * 3)
    objective = PretextObjective(model, AuxHeads(list(cfg.model.channels)), task)
    params = list(objective.parameters())
    opt = make_optimizer(params, tr.optimizer, tr.lr, tr.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tr.lr, total_steps=max(tr.steps, 1),
                                                pct_start=tr.pct_start, div_factor=25, final_div_factor=1000)  # fmt: skip
    accelerator = make_accelerator(device, tr.mixed_precision, tr.grad_accum, global_batch=tr.batch_size)
    wrapped, opt, sched = accelerator.prepare(objective, opt, sched)
    ema = make_ema(model, tr.ema_decay)
    rng = np.random.default_rng(int(getattr(cfg, "seed", 0)))
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    ckpt = Checkpointer(run_dir, accelerator, metrics)
    samples = 0
    resumed = ckpt.load()
    if resumed is not None:
        ema.load_state_dict({k[len("ema.") :]: v for k, v in resumed.tensors.items() if k.startswith("ema.")})
        rng.bit_generator.state = resumed.state["rng"]
        samples = int(resumed.state["samples"])
    first = resumed.step if resumed else 0
    timing = {"sample": 0.0}
    wrapped.train()
    start = time.perf_counter()

    def step_fn(step: int) -> dict[str, float]:
        nonlocal samples
        for _ in range(tr.grad_accum):
            t0 = time.perf_counter()
            batch = sampler.sample(rng, tr.batch_size)  # the global batch, identical on every process
            hole = mim_holes(batch, task, rng)
            mine = {k: shard(v, accelerator).to(accelerator.device) for k, v in batch.items()}
            hole = shard(hole, accelerator).to(accelerator.device) if hole is not None else None
            timing["sample"] += time.perf_counter() - t0
            with accelerator.accumulate(wrapped):
                loss = wrapped(mine, hole)
                accelerator.backward(loss)
                if accelerator.sync_gradients and tr.grad_clip > 0:
                    accelerator.clip_grad_norm_(params, tr.grad_clip)
                opt.step()
                sched.step()
                opt.zero_grad()
            samples += tr.batch_size
        ema.update_parameters(model)
        return {"loss": float(accelerator.reduce(loss.detach(), reduction="mean")), "lr": sched.get_last_lr()[0]}

    logs = fit(step_fn, steps=tr.steps, start=first, checkpointer=ckpt, metrics=metrics, log_every=tr.log_every,
               checkpoint_every=tr.checkpoint_every, desc=f"pretrain[{task.objective}]",
               state_fn=lambda: {"rng": rng.bit_generator.state, "samples": samples},
               tensors_fn=lambda: {f"ema.{k}": v for k, v in ema.state_dict().items()})  # fmt: skip
    seconds = time.perf_counter() - start
    final = ema.module
    final.eval()
    return {"model": final, "steps": tr.steps, "steps_run": tr.steps - first, "samples_seen": samples,
            "seconds": seconds, "loss_last": logs.get("loss", float("nan")), "sample_seconds": timing["sample"],
            "step_seconds": seconds, "k": sampler.k}  # fmt: skip
