"""Fine-tune the finding classifier (multi-label BCE over the 163 leaves-with-statuses labels) with Accelerate.

The loop is step-based and resumable through :mod:`medfm.core.training` (``<run>/checkpoints/last`` every
``save_every`` steps, reused when the same run directory is given again). ``batch_size`` is the global batch,
split over the processes of a multi-process launch. Batches are drawn from a seeded permutation per epoch, so a
resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfm.methods.srrg.data import Sentence
from medfm.methods.srrg.labels import LEAVES_WITH_STATUSES, findings_matrix

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    classifier: Any
    steps: int
    samples_seen: int
    seconds: float
    final_loss: float


def _batches(n: int, batch_size: int, seed: int, start_step: int, steps: int):
    """``(step, global batch indices)``: a seeded permutation per epoch, full batches only (the remainder of an
    epoch is dropped, so every process of a multi-process run gets its share of every batch)."""
    per_epoch = max(1, n // batch_size)
    for step in range(start_step, steps):
        epoch, k = divmod(step, per_epoch)
        perm = np.random.default_rng(seed + epoch).permutation(n)
        yield step, perm[k * batch_size : (k + 1) * batch_size]


def train_classifier(
    sentences: Sequence[Sentence],
    run_dir: str | Path,
    *,
    base: str = "minilm",
    steps: int = 200,
    batch_size: int = 32,
    lr: float = 1e-4,
    head_lr: float = 3e-3,
    weight_decay: float = 0.01,
    max_length: int = 48,
    grad_accum: int = 1,
    mixed_precision: str = "no",
    save_every: int = 100,
    seed: int = 0,
    device: str = "cpu",
    threshold: float = 0.5,
    max_pos_weight: float = 20.0,
) -> TrainOutcome:
    """Fine-tune ``base`` on ``sentences`` and return the trained :class:`FindingClassifier`.

    Args:
        sentences: training sentences with findings (labels in the 163-label space).
        run_dir: run directory; ``checkpoints/last`` is written here and resumed from.
        base: ``minilm`` (offline MiniLM), a local model folder or ``hf-hub:org/name``.
        steps: optimizer steps.
        batch_size: sentences per step (per device).
        lr, head_lr: AdamW learning rates of the encoder and of the new classification head.
        weight_decay: AdamW setting (linear warm-up over 5 % of steps, then linear decay).
        max_length: tokens per sentence.
        grad_accum: gradient accumulation steps.
        mixed_precision: ``no``, ``fp16`` or ``bf16`` (Accelerate).
        save_every: checkpoint period in steps.
        seed: seed for the batch order and the head initialisation.
        device: ``cpu`` forces CPU; otherwise Accelerate picks the device.
        threshold: decision threshold stored with the model.
        max_pos_weight: upper clip of the per-label positive weight (negatives / positives) in the BCE loss.
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    from medfm.core.results import MetricsLog
    from medfm.core.training import Checkpointer, fit, make_accelerator, shard
    from medfm.methods.srrg.classifier import FindingClassifier, load_encoder

    run_dir = Path(run_dir)
    torch.manual_seed(seed)
    model, tok = load_encoder(base, len(LEAVES_WITH_STATUSES))
    texts = [s.text for s in sentences]
    targets = findings_matrix([s.findings for s in sentences], "leaves_with_statuses").astype(np.float32)
    # Most of the 163 labels are rare: plain BCE learns "absent everywhere" within a short run. Weight each label's
    # positives by its negative/positive ratio (clipped), the usual remedy for imbalanced multi-label training.
    positives = targets.sum(axis=0)
    pos_weight = np.clip((len(targets) - positives) / np.maximum(positives, 1.0), 1.0, max_pos_weight)
    acc = make_accelerator(device, mixed_precision, grad_accum, global_batch=min(batch_size, len(texts)))
    pos_weight_t = torch.from_numpy(pos_weight.astype(np.float32)).to(acc.device)
    head = [p for n, p in model.named_parameters() if n.startswith("classifier")]
    body = [p for n, p in model.named_parameters() if not n.startswith("classifier")]
    opt = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": head_lr}], weight_decay=weight_decay)
    sched = get_linear_schedule_with_warmup(opt, max(1, steps // 20), max(steps, 1))
    model, opt, sched = acc.prepare(model, opt, sched)
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    ckpt = Checkpointer(run_dir, acc, metrics)
    resumed = ckpt.load()
    start = resumed.step if resumed else 0
    batches = _batches(len(texts), batch_size, seed, start, steps)
    model.train()
    t0 = time.perf_counter()

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
        return {"loss": float(acc.reduce(loss.detach(), reduction="mean")), "lr": sched.get_last_lr()[0]}

    logs = fit(step_fn, steps=steps, start=start, checkpointer=ckpt, metrics=metrics, log_every=10,
               checkpoint_every=save_every, desc="srrg train")  # fmt: skip
    loss_value = logs.get("loss", float("nan"))
    seconds = time.perf_counter() - t0
    model = acc.unwrap_model(model).eval()
    clf = FindingClassifier(model, tok, LEAVES_WITH_STATUSES, threshold=threshold, max_length=max_length,
                            device="cpu" if device == "cpu" else str(acc.device))  # fmt: skip
    return TrainOutcome(clf, steps, (steps - start) * min(batch_size, len(texts)), seconds, loss_value)
