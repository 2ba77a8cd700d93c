"""``medfm medvae train``: stage 1 (autoencoder) and stage 2 (2D projection head / 3D volumetric fine-tuning).

The loop is written once against Hugging Face Accelerate (mixed precision, gradient accumulation, devices) and
is resumable through :mod:`medfm.core.training` (``<run>/checkpoints/last`` every ``optim.checkpoint_every`` steps;
a rerun with the same ``--output_dir`` continues from it). Under ``torchrun``/``accelerate launch`` each process
takes ``optim.batch_size`` items per step (global batch = batch_size x processes). The final model is a ``save_pretrained`` directory with a model card in
``<run>/checkpoints/final``.

Stage 1 alternates generator and discriminator updates on even/odd steps once the discriminator is on (as the
original). Stage 2 in 2D freezes everything but the projection head and matches a frozen teacher's embedding of
the image with its embedding of the projected latent; stage 2 in 3D continues the stage-1 objective on random
3D patches from inflated 2D (or earlier 3D) weights, with slice-wise perceptual/adversarial terms.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medfm.core.errors import UsageError
from medfm.core.runs import Run
from medfm.core.training import Checkpointer, average_gradients, fit, make_accelerator
from medfm.methods.medvae.config import TrainConfig
from medfm.methods.medvae.data import Item, fit_to, load_items, split_items

log = logging.getLogger(__name__)


class ImageDataset(Dataset):
    """Items as model tensors: 2D ``(C, H, W)``; 3D random ``patch``^3 crops ``(C, X, Y, Z)`` padded with -1."""

    def __init__(self, items: list[Item], in_channels: int = 1, patch: int | None = None, seed: int = 0):
        self.items, self.in_channels, self.patch = items, in_channels, patch
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        arr = self.items[i].array
        if self.patch is not None and arr.ndim == 3:
            arr = fit_to(arr, tuple(max(s, self.patch) for s in arr.shape))
            starts = [int(self.rng.integers(0, s - self.patch + 1)) for s in arr.shape]
            arr = arr[tuple(slice(s, s + self.patch) for s in starts)]
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]
        return t.expand(self.in_channels, *t.shape[1:]).clone() if self.in_channels > 1 else t


def _cycle(loader: DataLoader):
    while True:
        yield from loader


class _GeneratorObjective(torch.nn.Module):
    """Stage-1 autoencoder objective as one module, so DistributedDataParallel sees the forward whose
    backward it synchronises. The criterion (and its discriminator, frozen during this pass) is held
    outside the module tree: its parameters get no gradient here and must not be DDP's to wait for."""

    def __init__(self, model: Any, criterion: Any):
        super().__init__()
        self.model = model
        self.__dict__["criterion"] = criterion

    def forward(self, x: torch.Tensor, step: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        rec, mean, logvar = self.model(x)
        return self.criterion.generator_loss(x, rec, mean, logvar, step, self.model.last_layer(), gen)


class _ProjectionObjective(torch.nn.Module):
    """Stage-2 (2D) objective as one module: the frozen autoencoder encodes, the projection head (the only
    trainable part) projects, the frozen teacher compares; DDP syncs the head's gradients."""

    def __init__(self, model: Any, teacher: Any):
        super().__init__()
        self.model = model
        self.__dict__["teacher"] = teacher

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from medfm.methods.medvae.losses import stage2_loss

        with torch.no_grad():
            z = self.model.encode(x)
        return stage2_loss(self.teacher.embed_image, self.teacher.embed_latent, x, self.model.project(z))


def data_items(cfg: TrainConfig, dims: int) -> list[Item]:
    d = cfg.data
    return load_items(d.source, dims, n=d.n, size=d.size, phantom_shape=d.phantom_shape, modality=d.modality,
                      window=tuple(d.ct_window), seed=cfg.seed, val_fraction=d.val_fraction, label=d.label,
                      limit=cfg.limit)  # fmt: skip


def run_train(cfg: TrainConfig) -> int:
    from medfm.methods.medvae.model import build_model, get_preset

    preset = get_preset(cfg.model.preset)
    dims = preset.spatial_dims
    if cfg.stage == 2 and dims == 3 and not cfg.model.init:
        raise UsageError("3D stage 2 fine-tunes inflated 2D weights: give --model.init <2D or 3D model directory>")
    run = Run("medvae", "train", cfg)
    if cfg.dry_run:
        kind = "projection head vs frozen teacher" if cfg.stage == 2 and dims == 2 else "autoencoder (stage-1 loss)"
        return run.plan([
            f"preset {preset.name}: {dims}D, factor {preset.factor} per axis, latent channels {preset.latent_channels}",
            f"stage {cfg.stage}: train the {kind}",
            f"data: {cfg.data.source} ({cfg.data.n} phantoms)" if cfg.data.source.startswith("phantom:")
            else f"data: {cfg.data.source}",
            f"{cfg.optim.steps} steps x batch {cfg.optim.batch_size}; init {cfg.model.init or 'scratch'}",
        ])  # fmt: skip
    with run:
        t0 = time.perf_counter()
        items = data_items(cfg, dims)
        train_items, val_items = split_items(items, "train"), split_items(items, "val")
        model = build_model(preset)
        if cfg.model.init:
            from medfm.methods.medvae.convert import load_weights_into

            load_weights_into(model, cfg.model.init)
        model.gradient_checkpointing = cfg.model.gradient_checkpointing
        if cfg.stage == 2 and dims == 2:
            logs = _train_stage2(cfg, run, model, train_items)
        else:
            logs = _train_stage1(cfg, run, model, train_items, dims)
        seconds = time.perf_counter() - t0
        model.eval()
        from medfm.methods.medvae.evaluate import reconstruction_results

        results = run.new_results()
        reconstruction_results(model, val_items, results, batch_size=cfg.optim.batch_size)
        results.meta.update({"stage": cfg.stage, "preset": preset.name, "steps": cfg.optim.steps,
                             "train_items": len(train_items), "val_items": len(val_items), "final": logs,
                             "train_seconds": round(seconds, 2)})  # fmt: skip
        run.save_results(results)
        card = make_card(run, cfg, model, len(train_items), items, seconds)
        model.save_pretrained(run.dir / "checkpoints" / "final", card=card)
        from medfm.core.report import render_run_report

        render_run_report(run.dir, title=f"MedVAE stage {cfg.stage} training ({preset.name})")
        log.info("final model: %s", run.dir / "checkpoints" / "final")
    return 0


def _train_stage1(cfg: TrainConfig, run: Run, model: Any, items: list[Item], dims: int) -> dict[str, float]:
    from medfm.methods.medvae.losses import Stage1Loss

    lc = cfg.loss
    teacher, t = None, None
    if lc.perceptual == "teacher" or lc.consistency_weight > 0:
        from medfm.methods.medvae.teacher import build_teacher

        t = build_teacher(cfg.teacher.encoder, cfg.teacher.image_size, cfg.teacher.latent_scale)
        teacher = t.embed_image
    in_ch = model.init_kwargs["in_channels"]
    criterion = Stage1Loss(in_ch, dims, lc.l1_weight, lc.perceptual, lc.perceptual_weight, lc.kl_weight,
                           lc.adversarial_weight, lc.disc_start, lc.disc_channels, lc.disc_layers,
                           lc.consistency_weight, lc.slices_per_axis, teacher)  # fmt: skip
    o = cfg.optim
    for p in model.projection_parameters():  # stage 1 does not train the stage-2 head: DDP must not wait for it
        p.requires_grad_(False)
    opt_ae = torch.optim.Adam(model.autoencoder_parameters(), lr=o.lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(criterion.discriminator.parameters(), lr=o.lr, betas=(0.5, 0.9))
    ds = ImageDataset(items, in_ch, cfg.data.patch if dims == 3 else None, cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(ds, batch_size=min(o.batch_size, len(ds)), shuffle=True, drop_last=True, generator=gen,
                        num_workers=o.num_workers)  # fmt: skip
    acc = make_accelerator(cfg.device, o.mixed_precision, o.grad_accum, global_batch=loader.batch_size)
    criterion.to(acc.device)
    # The discriminator is not DDP-wrapped (two forward passes per backward, with batch norm, as the original):
    # its gradients are averaged over processes explicitly after each discriminator backward.
    objective, opt_ae, opt_d, loader = acc.prepare(_GeneratorObjective(model, criterion), opt_ae, opt_d, loader)
    if t is not None:  # the criterion holds only the bound method t.embed_image, which prepare() does not move
        t.to(acc.device)
    ckpt = Checkpointer(run.dir, acc, run.metrics)
    resumed = ckpt.load()
    start = resumed.step if resumed else 0
    raw = model
    if resumed and "discriminator" in resumed.state.get("modules", []):
        criterion.discriminator.load_state_dict({k[len("discriminator.") :]: v for k, v in resumed.tensors.items()})
    batches = _cycle(loader)
    lgen = torch.Generator().manual_seed(cfg.seed + 1)
    objective.train()
    criterion.train()

    def step_fn(step: int) -> dict[str, float]:
        x = next(batches)
        if step >= lc.disc_start and lc.adversarial_weight > 0 and step % 2 == 1:  # discriminator turn
            with torch.no_grad():
                rec, _, _ = raw(x)
            loss, logs = criterion.discriminator_loss(x, rec, lgen)
            acc.backward(loss)  # one discriminator update per turn (no accumulation across alternating steps)
            average_gradients(criterion.discriminator.parameters(), acc)
            opt_d.step()
            opt_d.zero_grad()
            return logs
        with acc.accumulate(objective):
            loss, logs = objective(x, step, lgen)
            acc.backward(loss)
            opt_ae.step()
            opt_ae.zero_grad()
            opt_d.zero_grad()
        return logs

    logs = fit(step_fn, steps=o.steps, start=start, checkpointer=ckpt, metrics=run.metrics, log_every=o.log_every,
               checkpoint_every=o.checkpoint_every, desc="medvae stage 1",
               state_fn=lambda: {"modules": ["discriminator"]},
               tensors_fn=lambda: {f"discriminator.{k}": v for k, v in criterion.discriminator.state_dict().items()})  # fmt: skip
    for p in model.projection_parameters():
        p.requires_grad_(True)
    return logs


def _train_stage2(cfg: TrainConfig, run: Run, model: Any, items: list[Item]) -> dict[str, float]:
    from medfm.methods.medvae.teacher import build_teacher

    teacher = build_teacher(cfg.teacher.encoder, cfg.teacher.image_size, cfg.teacher.latent_scale)
    for p in model.autoencoder_parameters():
        p.requires_grad_(False)
    o = cfg.optim
    opt = torch.optim.Adam(model.projection_parameters(), lr=o.lr, betas=(0.5, 0.9))
    ds = ImageDataset(items, model.init_kwargs["in_channels"], None, cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(ds, batch_size=min(o.batch_size, len(ds)), shuffle=True, drop_last=True, generator=gen,
                        num_workers=o.num_workers)  # fmt: skip
    acc = make_accelerator(cfg.device, o.mixed_precision, o.grad_accum, global_batch=loader.batch_size)
    teacher.requires_grad_(False)
    teacher.to(acc.device)
    objective, opt, loader = acc.prepare(_ProjectionObjective(model, teacher), opt, loader)
    ckpt = Checkpointer(run.dir, acc, run.metrics)
    resumed = ckpt.load()
    start = resumed.step if resumed else 0
    batches = _cycle(loader)
    model.eval()  # frozen encoder/decoder; the head has no norm/dropout

    def step_fn(step: int) -> dict[str, float]:
        x = next(batches)
        with acc.accumulate(objective):
            loss = objective(x)
            acc.backward(loss)
            opt.step()
            opt.zero_grad()
        return {"stage2_loss": float(loss.detach())}

    logs = fit(step_fn, steps=o.steps, start=start, checkpointer=ckpt, metrics=run.metrics, log_every=o.log_every,
               checkpoint_every=o.checkpoint_every, desc="medvae stage 2")  # fmt: skip
    for p in model.autoencoder_parameters():
        p.requires_grad_(True)
    return logs


def make_card(run: Run, cfg: TrainConfig, model: Any, n_train: int, items: list[Item], seconds: float):
    """Model card from the run: data actually used, paradigm, objective, architecture, steps, evaluation."""
    from medfm.core.cards import Capabilities, Training, TrainingData, card_from_run, method_facts

    dims = model.spatial_dims
    modality = items[0].meta.get("modality", "xray") if items else "xray"
    modalities = {"xray": ["CXR"], "ct": ["CT"], "mri": ["MR"]}.get(modality, ["other"])
    phantom = cfg.data.source.startswith("phantom:")
    if cfg.stage == 2 and dims == 2:
        objective = (
            f"stage 2: projection head matches frozen teacher ({cfg.teacher.encoder}) embeddings of image vs latent"
        )
    else:
        perc = {"ms-ssim": "1 - MS-SSIM", "teacher": "teacher-feature distance", "none": "no"}[cfg.loss.perceptual]
        objective = (f"stage {cfg.stage}: L1 + {perc} perceptual + {cfg.loss.kl_weight:g} KL + patch hinge adversarial "
                     f"from step {cfg.loss.disc_start}" + (" (slice-wise, 3D patches)" if dims == 3 else ""))  # fmt: skip
    p = cfg.model.preset
    f = model.factor
    data = TrainingData(
        size=n_train, unit="volumes" if dims == 3 else "images", modalities=modalities,
        body_regions=["chest", "abdomen", "pelvis"] if modality == "ct" else ["chest"], annotation="none",
        sources=[cfg.data.source], synthetic=phantom,
        statistics={"image_size": cfg.data.size if dims == 2 else cfg.data.patch, "total_items": len(items)},
    )  # fmt: skip
    training = Training(
        paradigm=["self-supervised-generative"], objective=objective,
        architecture=f"MedVAE KL autoencoder ({p}: {dims}D, /{f} per axis, {model.latent_channels} latent channels, "
        f"MONAI AutoencoderKL blocks in LDM layout)",
        base_model=cfg.model.init or "scratch", steps=cfg.optim.steps,
        samples_seen=cfg.optim.steps * cfg.optim.batch_size * cfg.optim.grad_accum,
        precision=cfg.optim.mixed_precision if cfg.optim.mixed_precision != "no" else "fp32",
    )  # fmt: skip
    caps = Capabilities(
        supported=["reconstruction", "generation"],
        inputs=f"{dims}D {'volumes' if dims == 3 else 'images'} in [-1, 1], sides divisible by {f}",
        outputs=f"latents ({model.latent_channels}, {', '.join(['S/' + str(f)] * dims)}) and reconstructions",
    )  # fmt: skip
    return card_from_run(
        run.dir, name=f"medvae-{p}-stage{cfg.stage}", method="medvae", data=data, training=training,
        capabilities=caps, model=model, seconds=seconds,
        **method_facts(__package__, "trained", data="synthetic phantoms" if phantom else "the listed data",
                       steps=cfg.optim.steps),
    )  # fmt: skip
