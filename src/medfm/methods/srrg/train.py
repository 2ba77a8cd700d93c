"""Fine-tune the finding classifier (multi-label BCE over the 163 leaves-with-statuses labels) with Accelerate.

Training is counted in epochs over the training split, with a warm-up then linear or cosine decay of the
learning rate over the whole run. After every epoch the model is scored on a held-out validation split
(sentences of reports it never trains on, :func:`medfm.methods.srrg.data.validation_split`): micro F1 over
the 163 labels with per-label thresholds tuned on that split. The best epoch's weights are kept
(``<run>/checkpoints/best``) and training stops after ``patience`` epochs without improvement; the returned
classifier carries the best weights and their tuned thresholds (:mod:`medfm.methods.srrg.thresholds`).

The loop is resumable through :mod:`medfm.core.training` (``<run>/checkpoints/last`` after every epoch and every
``save_every`` steps; the early-stopping state travels in the checkpoint). ``batch_size`` is the global batch,
split over the processes of a multi-process launch (each process scores the whole validation split, so all
reach the same stopping decision). Batches are drawn from a seeded permutation per epoch, so a resumed run sees
exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfm.methods.srrg.data import Sentence, train_val
from medfm.methods.srrg.labels import LEAVES_WITH_STATUSES, findings_matrix
from medfm.methods.srrg.thresholds import micro_f1, tune_thresholds

log = logging.getLogger(__name__)
BEST = "best"


@dataclass
class TrainOutcome:
    classifier: Any
    steps: int
    samples_seen: int
    seconds: float
    final_loss: float
    epochs_run: float = 0.0
    best_epoch: int | None = None
    best_val_f1: float | None = None
    stopped_early: bool = False
    #: per finished epoch: {"epoch", "step", "val_micro_f1" (cut 0.5), "val_micro_f1_tuned"}
    curve: list[dict[str, float]] = field(default_factory=list)
    train_sentences: int = 0
    val_sentences: int = 0


def _batches(n: int, batch_size: int, seed: int, start_step: int, steps: int):
    """``(step, global batch indices)``: a seeded permutation per epoch, full batches only (the remainder of an
    epoch is dropped, so every process of a multi-process run gets its share of every batch)."""
    per_epoch = max(1, n // batch_size)
    for step in range(start_step, steps):
        epoch, k = divmod(step, per_epoch)
        perm = np.random.default_rng(seed + epoch).permutation(n)
        yield step, perm[k * batch_size : (k + 1) * batch_size]


def lr_lambda(schedule: str, warmup: int, total: int):
    """Multiplier of the base rate at step ``s``: linear warm-up over ``warmup`` steps, then ``linear`` decay to 0
    or ``cosine`` decay to 0 at ``total`` (or ``constant``)."""

    def f(s: int) -> float:
        if s < warmup:
            return (s + 1) / max(1, warmup)
        if schedule == "constant":
            return 1.0
        frac = min(1.0, (s - warmup) / max(1, total - warmup))
        return 1.0 - frac if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))

    return f


def train_classifier(
    sentences: Sequence[Sentence],
    run_dir: str | Path,
    *,
    base: str = "minilm",
    epochs: int = 10,
    max_steps: int | None = None,
    batch_size: int = 32,
    lr: float = 1e-4,
    head_lr: float = 3e-3,
    weight_decay: float = 0.01,
    schedule: str = "linear",
    warmup_fraction: float = 0.06,
    max_length: int = 48,
    grad_accum: int = 1,
    mixed_precision: str = "no",
    save_every: int = 0,
    seed: int = 0,
    device: str = "cpu",
    val_fraction: float = 0.1,
    val_sentences: Sequence[Sentence] | None = None,
    patience: int = 2,
    min_delta: float = 0.002,
    tune: bool = True,
    threshold: float = 0.5,
    max_pos_weight: float = 20.0,
) -> TrainOutcome:
    """Fine-tune ``base`` on ``sentences`` and return the trained :class:`FindingClassifier` (best epoch).

    Args:
        sentences: training sentences with findings (labels in the 163-label space).
        run_dir: run directory; ``checkpoints/{last,best}`` are written here and resumed from.
        base: ``minilm`` (offline MiniLM), a local model folder or ``hf-hub:org/name``.
        epochs: passes over the training split (the most; early stopping may end sooner).
        max_steps: optional cap on optimizer steps (smoke runs).
        batch_size: sentences per optimizer step (global).
        lr, head_lr: AdamW learning rates of the encoder and of the new classification head.
        weight_decay: AdamW setting.
        schedule: ``linear``, ``cosine`` or ``constant`` after a warm-up of ``warmup_fraction`` of all steps.
        max_length: tokens per sentence.
        grad_accum: gradient accumulation steps.
        mixed_precision: ``no``, ``fp16`` or ``bf16`` (Accelerate).
        save_every: extra checkpoint period in steps (a checkpoint is written after every epoch anyway).
        seed: seed for the validation split, batch order and head initialisation.
        device: ``cpu`` forces CPU; otherwise Accelerate picks the device.
        val_fraction: fraction of reports held out for validation when ``val_sentences`` is not given.
        val_sentences: an explicit validation split (then ``sentences`` is all training data).
        patience: epochs without a validation gain of ``min_delta`` before stopping; 0 never stops early.
        tune: tune per-label thresholds on validation (else every label uses ``threshold``).
        threshold: the default cut (labels with too few validation positives keep it).
        max_pos_weight: upper clip of the per-label positive weight (negatives / positives) in the BCE loss.
    """
    import torch

    from medfm.core.distributed import is_main_process
    from medfm.core.results import MetricsLog
    from medfm.core.training import WEIGHTS_FILE, Checkpointer, fit, load_weights, make_accelerator, save_weights, shard
    from medfm.methods.srrg.classifier import FindingClassifier, load_encoder, predict_proba

    run_dir = Path(run_dir)
    train, val = train_val(sentences, val_fraction, val_sentences, seed)
    if not val and (patience or tune):
        log.warning("no validation sentences: no early stopping, every label keeps threshold %.2f", threshold)
    torch.manual_seed(seed)
    model, tok = load_encoder(base, len(LEAVES_WITH_STATUSES))
    texts = [s.text for s in train]
    targets = findings_matrix([s.findings for s in train], "leaves_with_statuses").astype(np.float32)
    val_texts = [s.text for s in val]
    val_targets = findings_matrix([s.findings for s in val], "leaves_with_statuses") if val else None
    # Most of the 163 labels are rare: plain BCE learns "absent everywhere". Weight each label's positives by its
    # negative/positive ratio (clipped), the usual remedy for imbalanced multi-label training.
    positives = targets.sum(axis=0)
    pos_weight = np.clip((len(targets) - positives) / np.maximum(positives, 1.0), 1.0, max_pos_weight)
    gb = min(batch_size, len(texts))
    acc = make_accelerator(device, mixed_precision, grad_accum, global_batch=gb)
    pos_weight_t = torch.from_numpy(pos_weight.astype(np.float32)).to(acc.device)
    per_epoch = max(1, len(texts) // gb)
    steps = epochs * per_epoch if max_steps is None else min(epochs * per_epoch, max_steps)
    head = [p for n, p in model.named_parameters() if n.startswith("classifier")]
    body = [p for n, p in model.named_parameters() if not n.startswith("classifier")]
    opt = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": head_lr}], weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(schedule, round(warmup_fraction * steps), steps))
    model, opt, sched = acc.prepare(model, opt, sched)
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    ckpt = Checkpointer(run_dir, acc, metrics)
    best_dir = run_dir / "checkpoints" / BEST
    # early-stopping state; saved in every checkpoint so a resumed run makes the same decisions
    es: dict[str, Any] = {"best": None, "best_step": None, "bad": 0, "stopped": False, "curve": []}
    resumed = ckpt.load()
    start = resumed.step if resumed else 0
    if resumed:
        es.update(resumed.state.get("early_stopping", {}))
    batches = _batches(len(texts), gb, seed, start, steps)
    progress = {"done": start}
    t0 = time.perf_counter()

    def validate(done: int) -> dict[str, float]:
        net = acc.unwrap_model(model)
        net.eval()
        proba = predict_proba(net, tok, val_texts, max_length, 128, acc.device)
        net.train()
        plain = micro_f1(val_targets, (proba > threshold).astype(np.int8))
        cuts = tune_thresholds(proba, val_targets, threshold) if tune else np.full(proba.shape[1], threshold)
        tuned = micro_f1(val_targets, (proba > cuts).astype(np.int8))
        epoch = done / per_epoch
        es["curve"].append({"epoch": round(epoch, 3), "step": done, "val_micro_f1": plain, "val_micro_f1_tuned": tuned})
        if es["best"] is None or tuned > es["best"] + min_delta:
            es.update(best=tuned, best_step=done, bad=0)
            if is_main_process():
                save_weights(net, best_dir)
        else:
            es["bad"] += 1
        log.info("epoch %.2f: validation micro F1 %.4f (tuned cuts), %.4f (0.5)%s", epoch, tuned, plain,
                 "" if es["best_step"] != done else " - best so far")  # fmt: skip
        if patience and es["bad"] >= patience:
            es["stopped"] = True
            log.info("no validation gain for %d epochs: stopping (best at step %s)", patience, es["best_step"])
        return {"val_micro_f1": plain, "val_micro_f1_tuned": tuned}

    def step_fn(step: int) -> dict[str, float]:
        _, idx = next(batches)
        idx = shard(idx, acc)
        enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        enc = {k: v.to(acc.device) for k, v in enc.items()}
        y = torch.from_numpy(targets[idx]).to(acc.device)
        with acc.accumulate(model):
            logits = model(**enc).logits
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=pos_weight_t)
            acc.backward(loss)
            opt.step()
            sched.step()
            opt.zero_grad()
        done = progress["done"] = step + 1
        logs = {"loss": float(acc.reduce(loss.detach(), reduction="mean")), "lr": sched.get_last_lr()[0]}
        if val and (done % per_epoch == 0 or done == steps):
            logs.update(validate(done))  # one metrics row per step: the epoch's scores ride on its last step
        return logs

    model.train()
    logs: dict[str, float] = {}
    if not es["stopped"] and start < steps:
        logs = fit(step_fn, steps=steps, start=start, checkpointer=ckpt, metrics=metrics, log_every=10,
                   checkpoint_every=per_epoch if not save_every else math.gcd(per_epoch, save_every),
                   desc="srrg train", stop_fn=lambda done: bool(es["stopped"]),
                   log_at=lambda done: done % per_epoch == 0,
                   state_fn=lambda: {"early_stopping": es})  # fmt: skip
    done_steps = int(progress["done"])
    seconds = time.perf_counter() - t0
    net = acc.unwrap_model(model).eval()
    if val and (best_dir / WEIGHTS_FILE).is_file():
        load_weights(net, best_dir)
    cuts: Any = threshold
    if val and tune:
        proba = predict_proba(net, tok, val_texts, max_length, 128, acc.device)
        cuts = tune_thresholds(proba, val_targets, threshold)
    clf = FindingClassifier(net, tok, LEAVES_WITH_STATUSES, threshold=cuts, max_length=max_length,
                            device="cpu" if device == "cpu" else str(acc.device))  # fmt: skip
    best_step = es["best_step"]
    return TrainOutcome(
        clf, done_steps, max(0, done_steps - start) * gb, seconds, logs.get("loss", float("nan")),
        epochs_run=done_steps / per_epoch, best_epoch=round(best_step / per_epoch) if best_step else None,
        best_val_f1=es["best"], stopped_early=bool(es["stopped"]), curve=list(es["curve"]),
        train_sentences=len(train), val_sentences=len(val),
    )  # fmt: skip
