"""Training and streaming curation loops (Hugging Face Accelerate; resumable; compute-counted).

Training arms (``train.arm``), same model and optimiser:

- ``curated``: prototype warm-up (k-means on ``warmup_batches`` batches embedded without gradients), then
  ``curation_epochs`` epochs of online selection (loss on kept pairs only, EMA prototype updates, kept ids
  recorded), then the remaining epochs on the fixed kept subset.
- ``random_online``: the same pipeline, but each batch keeps a uniformly random set of the size the curator
  would have kept.
- ``random_static``: a uniform random subset (default size: the expected curated fraction), trained for the
  optimiser steps the curated schedule plans.
- ``full``: every pair for every epoch.

Compute is counted in sample passes: forward with gradients, forward without gradients (scoring) and
backward; ``compute_units = fwd + fwd_nograd + 2 * bwd`` (a backward costs about two forwards).
The learning rate follows a half-cycle cosine over the *planned* total steps (recomputed once the kept subset
is known), not over the current loader, avoiding the original code's late-training LR rise (spec §1.3).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfm.methods.chexficient.curator import GatheredBatch, PrototypeCurator, expected_keep_fraction, joint_features
from medfm.methods.chexficient.losses import clip_loss

log = logging.getLogger(__name__)


@dataclass
class ComputeCounter:
    """Sample passes: ``fwd`` (with gradients), ``fwd_nograd`` (scoring / warm-up), ``bwd``."""

    fwd: int = 0
    fwd_nograd: int = 0
    bwd: int = 0
    seconds: float = 0.0
    curation_seconds: float = 0.0

    @property
    def units(self) -> float:
        return float(self.fwd + self.fwd_nograd + 2 * self.bwd)


@dataclass
class TrainState:
    """Everything besides model/optimiser that a resumed run needs."""

    step: int = 0
    epoch: int = 0
    pos: int = 0  # global batches done in the current epoch
    phase: str = "warmup"  # warmup | curate | subset | full | static | done
    subset: list[int] = field(default_factory=list)  # row indices of the fixed training subset
    total_steps: int = 0
    compute: dict[str, float] = field(default_factory=dict)
    keep_per_step: list[int] = field(default_factory=list)
    #: validation (``train.val_every``): one row per validation, the best score and step, validations since
    val_curve: list[dict[str, float]] = field(default_factory=list)
    best_val: float | None = None
    best_step: int | None = None
    bad_validations: int = 0
    stopped_early: bool = False


def make_curator(c: Any, seed: int) -> PrototypeCurator:
    return PrototypeCurator(c.num_prototypes, c.q_outlier, c.q_support, c.max_per_cluster, c.thinning, c.ema_decay,
                            c.sinkhorn_eps, c.sinkhorn_iters, c.kmeans_iters, c.kmeans_seed, seed=seed)  # fmt: skip


def build_model(opts: Any, num_prototypes: int = 6) -> Any:
    """A fresh model from ``ModelOptions`` (or ``init_from``), with a ``(K, 2D)`` prototype buffer."""
    from medfm.methods.chexficient.model import CheXficientModel

    if opts.init_from:
        model = CheXficientModel.from_pretrained(opts.init_from).train()
        if model.prototypes.shape[0] != num_prototypes:
            model.prototypes = torch.zeros(num_prototypes, 2 * model.embed_dim)
            model.init_kwargs["num_prototypes"] = num_prototypes
        return model
    return CheXficientModel(embed_dim=opts.embed_dim, image_tower=dict(opts.image_tower),
                            text_tower=dict(opts.text_tower), init_temperature=opts.init_temperature,
                            num_prototypes=num_prototypes)  # fmt: skip


def cosine_lr(step: int, total: int, lr: float, min_lr: float, warmup: int = 0) -> float:
    """Linear warm-up then half-cycle cosine from ``lr`` to ``min_lr`` over ``total`` steps (flat after)."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t))


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Deterministic shuffled global batches (positions into a pool of size n) for an epoch."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    perm = torch.randperm(n, generator=g).numpy()
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


class Trainer:
    """CheXficient training on :class:`~medfm.methods.chexficient.data.PairData` (config: ``TrainConfig``).

    Args:
        cfg: a ``TrainConfig``.
        pairs: the pairs; rows of split ``train`` (or with no split) are trained on.
        run_dir: run directory (checkpoints under ``checkpoints/``); None trains without checkpoints.
        device: resolved device string.
    """

    def __init__(self, cfg: Any, pairs: Any, run_dir: Path | None = None, device: str = "cpu"):
        from medfm.core.training import Checkpointer, make_accelerator

        self.cfg = cfg
        self.pairs = pairs
        self.run_dir = Path(run_dir) if run_dir is not None else None
        t = cfg.train
        self.accelerator = make_accelerator(device, t.mixed_precision)
        self.model = build_model(cfg.model, cfg.curator.num_prototypes)
        self.raw = self.model
        decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=t.lr, eps=1e-8,
        )  # fmt: skip
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        self.raw = self.accelerator.unwrap_model(self.model)
        self.curator = make_curator(cfg.curator, cfg.seed)
        self.raw.prototypes.zero_()
        train_mask = [s in ("train", None) for s in pairs.splits]
        self.pool = np.flatnonzero(np.array(train_mask, dtype=bool))
        if len(self.pool) == 0:
            from medfm.core.errors import DataError

            raise DataError(f"{pairs.source}: no rows in split 'train' (or without a split) to train on")
        self.state = TrainState()
        self.compute = ComputeCounter()
        self.metrics_rows: list[dict[str, Any]] = []
        self.metrics_log = None
        self.seconds = 0.0
        self.checkpointer = Checkpointer(self.run_dir, self.accelerator)

    # -- helpers -------------------------------------------------------------------------------------------------
    @property
    def world(self) -> tuple[int, int]:
        return self.accelerator.process_index, self.accelerator.num_processes

    def _local(self, idx: np.ndarray) -> np.ndarray:
        rank, world = self.world
        return idx[rank::world]

    def _forward(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raw = self.raw
        pix = raw.preprocess(self.pairs.images(rows))
        tok = raw.tokenize([self.pairs.reports[i] for i in rows]).to(raw.device)
        with self.accelerator.autocast():
            return self.model(pix, tok)

    @torch.no_grad()
    def _embed_nograd(self, rows: np.ndarray) -> GatheredBatch:
        gb = GatheredBatch()
        mb = self.cfg.train.micro_batch_size
        local = self._local(rows)
        for i in range(0, max(len(local), 1), mb):  # every process runs the same number of gathers
            chunk = local[i : i + mb]
            zi, zt, _ = self._forward(chunk)
            gathered = self._gather(zi, zt, torch.as_tensor(chunk))
            self.compute.fwd_nograd += len(gathered[2])  # counted over all processes
            gb.add(*gathered)
        return gb.ordered_like(rows)

    def _gather(self, zi: torch.Tensor, zt: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """All-gather (detached) embeddings and ids across processes, padded to equal sizes then unpadded."""
        if self.world[1] == 1:
            return zi.detach(), zt.detach(), ids
        acc = self.accelerator
        ids = ids.to(zi.device)
        ids_p = acc.pad_across_processes(ids, pad_index=-1)
        zi_p = acc.pad_across_processes(zi.detach().contiguous())
        zt_p = acc.pad_across_processes(zt.detach().contiguous())
        g_ids, g_i, g_t = acc.gather(ids_p), acc.gather(zi_p), acc.gather(zt_p)
        ok = g_ids >= 0
        return g_i[ok], g_t[ok], g_ids[ok]

    def _loss(self, zi: torch.Tensor, zt: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        from medfm.core.training import gather_with_grad  # a no-op in one process

        return clip_loss(gather_with_grad(zi, self.accelerator), gather_with_grad(zt, self.accelerator), scale)

    def _opt_step(self, loss: torch.Tensor) -> None:
        lr = cosine_lr(self.state.step, max(1, self.state.total_steps), self.cfg.train.lr, self.cfg.train.min_lr,
                       self.cfg.train.warmup_steps)  # fmt: skip
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        self.optimizer.step()
        self.state.step += 1
        self._last_lr = lr

    # -- planning ------------------------------------------------------------------------------------------------
    def planned_steps(self, kept: int | None = None) -> int:
        """Optimiser steps the schedule plans (``kept``: the curated subset size once known)."""
        t, c = self.cfg.train, self.cfg.curator
        n, b = len(self.pool), t.batch_size
        per_full = math.ceil(n / b)
        frac = expected_keep_fraction(b, c.num_prototypes, c.max_per_cluster, c.q_support, c.q_outlier)
        if t.arm == "full":
            total = t.epochs * per_full
        else:
            ce = min(c.curation_epochs, t.epochs)
            k = kept if kept is not None else max(1, round(frac * n))
            total = ce * per_full + (t.epochs - ce) * math.ceil(k / b)
        return min(total, t.max_steps) if t.max_steps else total

    def static_fraction(self) -> float:
        t, c = self.cfg.train, self.cfg.curator
        if t.random_static_fraction is not None:
            return float(t.random_static_fraction)
        return expected_keep_fraction(t.batch_size, c.num_prototypes, c.max_per_cluster, c.q_support, c.q_outlier)

    # -- checkpointing -------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Model, optimiser, loop state, curator and logged rows (call on every process)."""
        self.state.compute = {**asdict(self.compute)}
        cur = self.curator.state_dict()
        tensors = {"curator.generator": cur.pop("generator")}
        protos = cur.pop("prototypes")
        if protos is not None:
            tensors["curator.prototypes"] = protos
        self.checkpointer.save(self.state.step, {"trainer": asdict(self.state), "curator": cur,
                                                 "metrics": self.metrics_rows}, tensors)  # fmt: skip

    def maybe_resume(self) -> bool:
        resumed = self.checkpointer.load()
        if resumed is None:
            return False
        self.state = TrainState(**resumed.state["trainer"])
        self.curator.load_state_dict({**resumed.state["curator"], "prototypes": resumed.tensors.get("curator.prototypes"),
                                      "generator": resumed.tensors["curator.generator"]})  # fmt: skip
        self.compute = ComputeCounter(**self.state.compute) if self.state.compute else ComputeCounter()
        self.metrics_rows = list(resumed.state.get("metrics", []))
        if self.curator.prototypes is not None:
            self.raw.prototypes.copy_(self.curator.prototypes)
        log.info("resumed at step %d (phase %s, epoch %d)", self.state.step, self.state.phase, self.state.epoch)
        return True

    # -- validation ----------------------------------------------------------------------------------------------
    MIN_GAIN = 0.002

    def _validate(self, epoch: int) -> dict[str, float]:
        """Zero-shot macro AUROC on the validation split; keeps the best weights (``checkpoints/best``)."""
        from medfm.core.training import save_weights
        from medfm.methods.chexficient.evaluation import validation_auroc

        st, t = self.state, self.cfg.train
        val_idx = self.pairs.split_index(t.val_split)
        if len(val_idx) == 0:
            if not st.val_curve:
                log.warning("no rows in split %r: no validation, no early stopping", t.val_split)
            return {}
        was = self.model.training
        self.model.eval()
        with torch.no_grad():
            score = validation_auroc(self.raw, self.pairs, val_idx, self.cfg.eval)
        self.model.train(was)
        if not math.isfinite(score):
            log.warning("epoch %d: no finding has both classes in split %r; not validated", epoch, t.val_split)
            return {}
        st.val_curve.append({"epoch": epoch, "step": st.step, "val_macro_auroc": score})
        if st.best_val is None or score > st.best_val + self.MIN_GAIN:
            st.best_val, st.best_step, st.bad_validations = score, st.step, 0
            if self.run_dir is not None and self.accelerator.is_main_process:
                save_weights(self.raw, self.run_dir / "checkpoints" / "best")
        else:
            st.bad_validations += 1
        log.info("epoch %d: validation macro AUROC %.4f (best %.4f at step %s)", epoch, score, st.best_val,
                 st.best_step)  # fmt: skip
        return {"val_macro_auroc": score}

    def _restore_best(self) -> None:
        """Load the best validation weights into the model (every process), when validation kept any."""
        from medfm.core.training import WEIGHTS_FILE, load_weights

        best = self.run_dir / "checkpoints" / "best" if self.run_dir is not None else None
        self.accelerator.wait_for_everyone()
        if best is not None and (best / WEIGHTS_FILE).is_file() and self.state.best_step is not None:
            load_weights(self.raw, best)
            log.info("restored the best validation weights (step %d, AUROC %.4f)", self.state.best_step,
                     self.state.best_val)  # fmt: skip

    # -- phases --------------------------------------------------------------------------------------------------
    def warmup_prototypes(self) -> None:
        """k-means prototype initialisation on the first ``warmup_batches`` batches (eval mode, no gradients)."""
        c, t = self.cfg.curator, self.cfg.train
        first = epoch_batches(len(self.pool), t.batch_size, self.cfg.seed, 0)
        rows = self.pool[np.concatenate(first[: max(1, c.warmup_batches)])]
        was = self.model.training
        self.model.eval()
        gb = self._embed_nograd(rows)
        self.model.train(was)
        protos = self.curator.init(gb.joint())
        self.raw.prototypes.copy_(protos)

    def _curate_step(self, rows: np.ndarray) -> dict[str, float]:
        c, t = self.cfg.curator, self.cfg.train
        mode = c.score_pass
        if mode == "auto":
            # the same choice on 1 and N processes, so that compute counts (and the kept set) do not depend on it
            mode = "with_grad" if t.micro_batch_size >= t.batch_size else "no_grad"
        local = self._local(rows)
        if mode == "with_grad":
            zi, zt, s = self._forward(local)
            self.compute.fwd += len(rows)  # counts are over all processes
            self.compute.bwd += len(rows)  # autograd back-propagates through every row of the batched graph
            gb = GatheredBatch()
            gb.add(*self._gather(zi, zt, torch.as_tensor(local)))
            gb = gb.ordered_like(rows)
            gi, gt, gids = gb.img[0], gb.txt[0], gb.ids()
            t0 = time.perf_counter()
            u = joint_features(gi, gt)
            sel = self.curator.select(u)
            keep = sel.keep if t.arm == "curated" else self.curator.random_mask(len(u), sel.n_keep)
            self.compute.curation_seconds += time.perf_counter() - t0
            local_keep = torch.isin(torch.as_tensor(local), gids[keep.to(gids.device)].cpu())
            # decided on the global selection (identical on every process); a process may hold none of the kept rows
            loss = self._loss(zi[local_keep], zt[local_keep], s) if bool(keep.any()) else self._loss(zi, zt, s)
        else:
            gb = self._embed_nograd(rows)
            t0 = time.perf_counter()
            u, gids = gb.joint(), gb.ids()
            sel = self.curator.select(u)
            keep = sel.keep if t.arm == "curated" else self.curator.random_mask(len(u), sel.n_keep)
            self.compute.curation_seconds += time.perf_counter() - t0
            kept_rows = gids[keep].numpy() if bool(keep.any()) else gids.numpy()
            local_kept = self._local(kept_rows)
            zi, zt, s = self._forward(local_kept)
            self.compute.fwd += len(kept_rows)
            self.compute.bwd += len(kept_rows)
            loss = self._loss(zi, zt, s)
        self._opt_step(loss)
        t0 = time.perf_counter()
        self.curator.record(gids.cpu(), keep.cpu())
        self.curator.update(u[keep])
        self.raw.prototypes.copy_(self.curator.prototypes)
        self.compute.curation_seconds += time.perf_counter() - t0
        self.state.keep_per_step.append(int(keep.sum()))
        return {"loss": float(loss.detach()), "kept": int(keep.sum()), "batch": len(rows),
                "outliers": int(sel.outlier.sum()), "support": int(sel.support.sum())}  # fmt: skip

    def _plain_step(self, rows: np.ndarray) -> dict[str, float]:
        local = self._local(rows)
        zi, zt, s = self._forward(local)
        self.compute.fwd += len(rows)
        self.compute.bwd += len(rows)
        loss = self._loss(zi, zt, s)
        self._opt_step(loss)
        return {"loss": float(loss.detach()), "kept": len(rows), "batch": len(rows)}

    def _epoch_rows(self) -> list[np.ndarray]:
        st, t = self.state, self.cfg.train
        if st.phase in ("curate", "full"):
            return [self.pool[b] for b in epoch_batches(len(self.pool), t.batch_size, self.cfg.seed, st.epoch)]
        subset = np.asarray(st.subset, dtype=np.int64)
        return [subset[b] for b in epoch_batches(len(subset), t.batch_size, self.cfg.seed, st.epoch)]

    def fit(self, metrics_log: Any = None) -> str:
        """Train (resuming from ``checkpoints/last`` if present). Returns ``"done"`` or ``"stopped"``."""
        from medfm.core.runs import progress

        t, c = self.cfg.train, self.cfg.curator
        self.checkpointer.metrics = metrics_log  # trimmed to the resumed step: no step is logged twice
        self.maybe_resume()
        st = self.state
        t_start = time.perf_counter()
        if st.phase == "warmup":
            st.total_steps = self.planned_steps()
            if t.arm in ("curated", "random_online"):
                self.warmup_prototypes()
                st.phase = "curate" if c.curation_epochs > 0 else "subset"
                if st.phase == "subset":
                    st.subset = self.pool.tolist()
            elif t.arm == "full":
                st.phase = "full"
            else:
                g = torch.Generator().manual_seed(int(self.cfg.seed) + 7919)
                k = max(1, round(self.static_fraction() * len(self.pool)))
                st.subset = sorted(self.pool[torch.randperm(len(self.pool), generator=g)[:k].numpy()].tolist())
                st.phase = "static"
        bar = iter(progress(range(st.total_steps), desc=f"chexficient {t.arm}", total=st.total_steps,
                            initial=st.step))  # fmt: skip
        stopped = False
        while st.phase != "done":
            if st.step >= st.total_steps:
                st.phase = "done"
                break
            batches = self._epoch_rows()
            while st.pos < len(batches):
                if st.step >= st.total_steps:
                    break
                rows = batches[st.pos]
                row = self._curate_step(rows) if st.phase == "curate" else self._plain_step(rows)
                st.pos += 1
                next(bar, None)
                row.update(step=st.step, epoch=st.epoch, phase=st.phase, lr=self._last_lr,
                           temperature=float(1.0 / self.raw.scale().detach()))  # fmt: skip
                if st.pos == len(batches) and t.val_every and (st.epoch + 1) % t.val_every == 0:
                    row.update(self._validate(st.epoch + 1))  # rides on the epoch's last logged row
                if st.step % t.log_every == 0 or st.pos == len(batches):
                    self.metrics_rows.append(row)
                    if metrics_log is not None:
                        metrics_log.log(st.step, **{k: v for k, v in row.items() if k != "step"})
                if t.save_every and st.step % t.save_every == 0:
                    self.save_checkpoint()
                if t.stop_after_steps is not None and st.step >= t.stop_after_steps and st.step < st.total_steps:
                    stopped = True
                    break
            if stopped:
                break
            if st.pos >= len(batches):
                st.epoch += 1
                st.pos = 0
                if st.phase == "curate" and st.epoch >= c.curation_epochs:
                    st.subset = sorted(self.curator.kept_ids)
                    st.phase = "subset"
                    st.total_steps = self.planned_steps(kept=len(st.subset))
                    log.info("curation done: %d of %d pairs kept (%.1f %%)", len(st.subset), len(self.pool),
                             100 * len(st.subset) / len(self.pool))  # fmt: skip
                if st.epoch >= t.epochs and st.phase != "static":  # static runs to the curated step budget
                    st.phase = "done"
                if t.patience and st.bad_validations >= t.patience and st.phase != "done":
                    log.info("no validation gain in %d validations: stopping at epoch %d", t.patience, st.epoch)
                    st.phase, st.stopped_early = "done", True
        self.compute.seconds += time.perf_counter() - t_start
        self.save_checkpoint()
        if not stopped and t.val_every:
            self._restore_best()
        return "stopped" if stopped else "done"

    def summary(self) -> dict[str, Any]:
        st = self.state
        subset = st.subset if self.cfg.train.arm != "full" else self.pool.tolist()
        return {
            "arm": self.cfg.train.arm, "steps": st.step, "pool": len(self.pool), "kept": len(subset),
            "kept_fraction": len(subset) / max(1, len(self.pool)), "compute": asdict(self.compute),
            "compute_units": self.compute.units,
            "mean_keep_per_step": float(np.mean(st.keep_per_step)) if st.keep_per_step else None,
            "best_val_macro_auroc": st.best_val, "best_step": st.best_step, "stopped_early": st.stopped_early,
            "val_curve": list(st.val_curve),
        }  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# Streaming curation (``medfm chexficient curate``)


@dataclass
class CurationResult:
    """Outcome of :func:`curate_stream`: kept ids in order, counts, and per-pair bands when recorded."""

    kept_ids: list[Any]
    n_seen: int
    n_batches: int
    prototypes: torch.Tensor
    bands: list[dict[str, Any]] = field(default_factory=list)


def _rebatch(stream: Iterable[tuple[Any, torch.Tensor, torch.Tensor]], size: int) -> Iterator[tuple[list[Any], torch.Tensor]]:  # fmt: skip
    """Re-chunk a stream of (ids, z_img, z_txt) into global batches of joint features of exactly ``size``."""
    ids: list[Any] = []
    feats: list[torch.Tensor] = []
    have = 0
    for chunk_ids, zi, zt in stream:
        u = joint_features(torch.as_tensor(zi), torch.as_tensor(zt))
        ids.extend(list(chunk_ids))
        feats.append(u)
        have += u.shape[0]
        while have >= size:
            allf = torch.cat(feats)
            yield ids[:size], allf[:size]
            ids, feats, have = ids[size:], [allf[size:]], have - size
    if have:
        yield ids, torch.cat(feats)


def curate_stream(
    stream: Iterable[tuple[Any, torch.Tensor, torch.Tensor]],
    curator: PrototypeCurator,
    batch_size: int = 480,
    warmup_batches: int = 10,
    record_bands: bool = False,
) -> CurationResult:
    """Curate a stream of ``(ids, z_img (n, D), z_txt (n, D))`` chunks with bounded memory.

    The first ``warmup_batches`` global batches are buffered for the k-means initialisation (unless the curator
    already has prototypes) and then curated; after that each global batch is selected, recorded and used for
    the EMA update, and only kept ids are retained.
    """
    batches = _rebatch(stream, batch_size)
    kept: list[Any] = []
    bands: list[dict[str, Any]] = []
    n_seen = n_batches = 0
    buffered: list[tuple[list[Any], torch.Tensor]] = []
    if not curator.initialised:
        for b in batches:
            buffered.append(b)
            if len(buffered) >= max(1, warmup_batches):
                break
        if not buffered:
            raise ValueError("nothing to curate: the embedding stream is empty")
        curator.init(torch.cat([u for _, u in buffered]))

    def chain() -> Iterator[tuple[list[Any], torch.Tensor]]:
        yield from buffered
        yield from batches

    for ids, u in chain():
        sel = curator.select(u)
        keep = sel.keep
        kept.extend(i for i, k in zip(ids, keep.tolist()) if k)
        if record_bands:
            for j, i in enumerate(ids):
                band = "outlier" if sel.outlier[j] else "support" if sel.support[j] else (
                    "central_kept" if keep[j] else "central_dropped")  # fmt: skip
                bands.append({"id": i, "kept": bool(keep[j]), "band": band, "prototype": int(sel.assignment[j]),
                              "distance": round(float(sel.distance[j]), 5)})  # fmt: skip
        curator.steps += 1
        curator.seen += len(ids)
        curator.update(u[keep])
        n_seen += len(ids)
        n_batches += 1
    return CurationResult(kept, n_seen, n_batches, curator.prototypes.clone(), bands)
