"""Supervised fine-tuning of the VLM with Accelerate (resumable), LoRA (peft) or full LM, frozen or trainable tower.

The loss is the causal LM's next-token cross-entropy on the assistant answer only (prompt, image placeholders
and padding are masked with -100 by :class:`~medfm.methods.vlm.data.VLMCollator`). Batches are drawn with a
generator seeded by ``(seed, step)``, so a resumed run sees the same batches it would have seen uninterrupted.
``batch_size`` is the global batch: under ``torchrun``/``accelerate launch`` each of N processes takes 1/N of it,
so N processes see the same examples per step as one. Checkpoints and resume go through
:mod:`medfm.core.training` (``<run>/checkpoints/last`` every ``checkpoint_every`` steps).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medfm.core.errors import DataError
from medfm.methods.vlm.config import TrainOptions, VLMSpec
from medfm.methods.vlm.data import Example, VLMCollator

log = logging.getLogger(__name__)

LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def make_model(spec: VLMSpec, seed: int = 0) -> tuple[Any, Any]:
    """``(model, processor)``: loaded from ``spec.init`` when set, else built fresh (:func:`.model.build_vlm`)."""
    from medfm.methods.vlm.model import build_vlm, load_vlm

    if spec.init:
        return load_vlm(spec.init)
    return build_vlm(spec, seed=seed)


def set_trainable(model: Any, opts: TrainOptions) -> Any:
    """Freeze / unfreeze parts and add LoRA adapters; returns the (possibly peft-wrapped) model.

    Projector: always trained. Tower: trained unless ``freeze_tower``. LM: ``lora`` adapters on the attention
    and MLP projections, ``full`` weights, or ``frozen``.
    """
    for p in model.parameters():
        p.requires_grad = False
    if opts.lm_mode == "lora":
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout,
                          target_modules=LORA_TARGETS, bias="none")  # fmt: skip
        model = get_peft_model(model, lcfg)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for p in base.model.multi_modal_projector.parameters():
        p.requires_grad = True
    if not opts.freeze_tower:
        for p in base.model.vision_tower.parameters():
            p.requires_grad = True
        for p in unused_tower_parameters(base):
            p.requires_grad = False
    if opts.lm_mode == "full":
        for p in base.model.language_model.parameters():
            p.requires_grad = True
        for p in base.lm_head.parameters():
            p.requires_grad = True
    return model


def unused_tower_parameters(model: Any) -> list[Any]:
    """Tower parameters that never reach the LM: LLaVA reads ``hidden_states[vision_feature_layer]``, so the
    encoder layers after that one, the post-layernorm and SigLIP's pooling head get no gradient. They stay
    frozen: training them does nothing, and under DDP a parameter without gradient stalls the reduction."""
    tower = model.model.vision_tower
    vm = getattr(tower, "vision_model", tower)
    layers = list(vm.encoder.layers)
    fl = model.config.vision_feature_layer
    fl = fl[-1] if isinstance(fl, list | tuple) else int(fl)
    used = fl % (len(layers) + 1)  # hidden_states has len(layers) + 1 entries (embeddings first)
    out = [p for layer in layers[used:] for p in layer.parameters()]
    for name in ("post_layernorm", "head"):
        mod = getattr(vm, name, None)
        if isinstance(mod, __import__("torch").nn.Module):
            out += list(mod.parameters())
    return out


def _param_groups(model: Any, opts: TrainOptions) -> list[dict[str, Any]]:
    lm, other = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (lm if ("language_model" in name or "lm_head" in name) else other).append(p)
    groups = [{"params": other, "lr": opts.lr}]
    if lm:
        groups.append({"params": lm, "lr": opts.lm_lr})
    return groups


def sft_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Mean next-token cross-entropy over the answer tokens (``labels != -100``).

    The LM head is applied only at the positions that predict an answer token (``logits_to_keep`` with the
    union of those positions over the batch), which saves most of the ``(B, T, vocab)`` logits on short answers;
    the value equals the model's own ``labels=`` loss.

    Args:
        batch: ``input_ids``, ``attention_mask`` ``(B, T)``, ``pixel_values``, ``labels`` ``(B, T)``.
    """
    import torch
    import torch.nn.functional as F

    labels = batch["labels"]
    targets = labels[:, 1:]
    keep = torch.nonzero((targets != -100).any(0)).flatten()  # positions t whose next token is an answer token
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, logits_to_keep=keep).logits  # (B, K, V)
    return F.cross_entropy(logits.float().flatten(0, 1), targets[:, keep].flatten(), ignore_index=-100)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The examples of optimizer step ``step``: an epoch-wise permutation seeded by ``(seed, epoch)``."""
    import numpy as np

    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[k * batch_size : (k + 1) * batch_size].tolist()


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        prog = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, prog)))

    return f


def train_sft(
    model: Any,
    processor: Any,
    examples: Sequence[Example],
    opts: TrainOptions,
    spec: VLMSpec,
    run_dir: str | Path | None = None,
    seed: int = 0,
    device: str = "cpu",
    metrics_log: Any = None,
) -> dict[str, Any]:
    """Run SFT; returns ``{"model", "steps", "samples_seen", "seconds", "samples_per_s", "final_loss", ...}``.

    Args:
        model, processor: from :func:`make_model`.
        examples: training examples (each with an image and an answer).
        opts: optimisation options.
        spec: the model spec (system prompt, max_length, max_images).
        run_dir: run directory for ``checkpoints/last`` (None: no checkpoints, no resume).
        metrics_log: a :class:`medfm.core.results.MetricsLog` to write losses to.

    The returned ``model`` has LoRA adapters merged when ``opts.merge_lora``.
    """
    import torch

    from medfm.core.training import Checkpointer, fit, make_accelerator, shard

    if not examples:
        raise DataError("no training examples; give --data.reports and/or --data.vqa with rows of --data.split")
    collate = VLMCollator(processor, "", spec.max_length, spec.max_images, train=True,
                          blind=opts.blind_images)  # fmt: skip
    for ex in examples:
        collate.check(ex)
        if not ex.answer:
            raise DataError(f"example {ex.id}: empty answer/report; SFT needs a target text")
    model = set_trainable(model, opts)
    model.train()
    acc = make_accelerator(device, opts.mixed_precision, opts.grad_accum, global_batch=opts.batch_size)
    optim = torch.optim.AdamW(_param_groups(model, opts), weight_decay=opts.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, _lr_lambda(opts.warmup_steps, opts.steps))
    model, optim, sched = acc.prepare(model, optim, sched)
    ckpt = Checkpointer(run_dir, acc, metrics_log)
    resumed = ckpt.load()
    start = resumed.step if resumed else 0
    t0 = time.perf_counter()
    seen = 0
    losses: list[float] = []

    def step_fn(step: int) -> dict[str, float]:
        nonlocal seen
        for micro in range(step * opts.grad_accum, (step + 1) * opts.grad_accum):
            # the global batch of this micro-step, the same on every process; each takes its own shard
            idx = shard(batch_indices(len(examples), opts.batch_size, seed, micro), acc)
            batch = {k: v.to(acc.device) for k, v in collate([examples[i] for i in idx]).items()}
            with acc.accumulate(model):
                loss = sft_loss(model, batch)
                acc.backward(loss)
                optim.step()
                sched.step()
                optim.zero_grad()
            seen += opts.batch_size
            losses.append(float(acc.reduce(loss.detach(), reduction="mean")))
        recent = losses[-max(1, opts.log_every) * opts.grad_accum :]
        return {"loss": sum(recent) / len(recent), "lr": sched.get_last_lr()[0]}

    fit(step_fn, steps=opts.steps, start=start, checkpointer=ckpt if run_dir and opts.checkpoint_every > 0 else None,
        metrics=metrics_log, log_every=opts.log_every, checkpoint_every=opts.checkpoint_every,
        desc="vlm sft")  # fmt: skip
    seconds = time.perf_counter() - t0
    model = acc.unwrap_model(model)
    if opts.lm_mode == "lora" and opts.merge_lora:
        model = model.merge_and_unload()
    model.eval()
    tail = losses[-max(1, min(len(losses), 10)) :]
    return {
        "model": model,
        "steps": opts.steps,
        "resumed_from": start,
        "samples_seen": seen,
        "seconds": seconds,
        "samples_per_s": seen / seconds if seconds > 0 else float("nan"),
        "final_loss": sum(tail) / len(tail) if tail else float("nan"),
        "first_loss": losses[0] if losses else float("nan"),
    }
