"""One training lifecycle for every medfm training loop: checkpoints, resume, metrics, the step loop.

Checkpoint layout (the same for every method)::

    <run>/checkpoints/last/       the newest checkpoint
    <run>/checkpoints/previous/   the one before it: the fallback when ``last`` is unreadable
        model.safetensors ...     Accelerate's ``save_state``: weights as safetensors; optimizer, scheduler
                                  and per-rank RNG states as torch files that load with ``weights_only=True``
        trainer_state.json        {"format", "step", "world_size", "state": the loop's JSON state}
        trainer_tensors.safetensors   the loop's extra tensors (EMA weights, prototypes, ...), optional

Nothing in a checkpoint is unpickled with code execution: a run folder handed over by a colleague can
be resumed safely. A checkpoint is complete or absent: it is written under ``.last.tmp`` and renamed
into place, the old ``last`` becoming ``previous``.

Under multi-process data parallelism every rank calls :meth:`Checkpointer.save` (Accelerate saves per
rank RNG states, and sharded strategies need every rank); the main process alone prepares, renames
and writes the JSON. Metrics logged after the resumed step (the steps between the last checkpoint and
a kill) are dropped on resume, so a resumed run never logs a step twice.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfm.core.errors import DataError

log = logging.getLogger(__name__)

# DDP's note on conv weights with a single input channel, whose gradient strides are ambiguous: a possible
# slowdown, not an error, and nothing a user can act on.
warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")

FORMAT = "medfm.checkpoint/1"
STATE_FILE = "trainer_state.json"
TENSORS_FILE = "trainer_tensors.safetensors"


class CheckpointError(DataError):
    """No readable checkpoint in a run folder that has one (exit code 3)."""


@dataclass
class Resumed:
    """What :meth:`Checkpointer.load` restored: the step, the loop's JSON state, its extra tensors."""

    step: int
    state: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def _barrier(accelerator: Any) -> None:
    if accelerator is not None and getattr(accelerator, "num_processes", 1) > 1:
        accelerator.wait_for_everyone()


def _is_main(accelerator: Any) -> bool:
    from medfm.core.distributed import is_main_process

    return bool(accelerator.is_main_process) if accelerator is not None else is_main_process()


def unreadable_file(folder: Path) -> Path | None:
    """The first file of a checkpoint folder that does not load (None: every file loads)."""
    from accelerate.utils import load
    from safetensors import safe_open

    for f in sorted(folder.iterdir()):
        try:
            if f.suffix == ".safetensors":
                with safe_open(str(f), framework="pt") as fh:
                    for key in fh.keys():  # noqa: SIM118  (safe_open is not iterable)
                        fh.get_tensor(key)
            elif f.suffix in (".bin", ".pkl", ".pt"):
                load(f, map_location="cpu")  # weights_only=True, as load_state reads them
            elif f.suffix == ".json":
                json.loads(f.read_text())
        except Exception:
            return f
    return None


class Checkpointer:
    """Save and resume a training loop in ``<run_dir>/checkpoints/{last,previous}``.

    Args:
        run_dir: the run folder; None disables checkpoints (``save`` is a no-op, ``load`` returns None).
        accelerator: the loop's ``accelerate.Accelerator`` (its prepared models, optimizers and schedulers are
            saved); None saves only the JSON state and tensors.
        metrics: the run's :class:`medfm.core.results.MetricsLog`, trimmed to the resumed step on load.
    """

    def __init__(self, run_dir: str | Path | None, accelerator: Any = None, metrics: Any = None):
        self.root = Path(run_dir) / "checkpoints" if run_dir is not None else None
        self.accelerator = accelerator
        self.metrics = metrics

    @property
    def last(self) -> Path | None:
        return self.root / "last" if self.root is not None else None

    @property
    def previous(self) -> Path | None:
        return self.root / "previous" if self.root is not None else None

    def save(self, step: int, state: dict[str, Any] | None = None, tensors: dict[str, Any] | None = None) -> None:
        """Write a checkpoint at ``step`` (call on every rank). ``state`` must be JSON-serialisable."""
        if self.root is None:
            return
        from medfm.core.files import atomic_write_json, match_umask

        acc = self.accelerator
        tmp = self.root / ".last.tmp"
        main = _is_main(acc)
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier(acc)
        if acc is not None:
            acc.save_state(str(tmp), safe_serialization=True)
        _barrier(acc)
        if main:
            if tensors:
                from safetensors.torch import save_file

                save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / TENSORS_FILE))
            world = int(getattr(acc, "num_processes", 1)) if acc is not None else 1
            atomic_write_json(tmp / STATE_FILE, {"format": FORMAT, "step": int(step), "world_size": world,
                                                 "saved_at": time.time(), "state": state or {}})  # fmt: skip
            for f in tmp.iterdir():  # safetensors writes 0600 whatever the umask: give them what open() would
                if f.is_file():
                    match_umask(f, 0o666)
            # rotate: previous <- last <- tmp; each rename is atomic, so a kill leaves last or previous whole
            if self.last.exists():
                shutil.rmtree(self.previous, ignore_errors=True)
                os.replace(self.last, self.previous)
            os.replace(tmp, self.last)
            log.info("checkpoint at step %d -> %s", step, self.last)
        _barrier(acc)

    def candidates(self) -> list[Path]:
        """Checkpoint folders present, newest first."""
        if self.root is None:
            return []
        return [p for p in (self.last, self.previous) if p.is_dir() and any(p.iterdir())]

    def load(self) -> Resumed | None:
        """Restore the newest readable checkpoint (all ranks). Returns None when there is none.

        An unreadable ``last`` (a truncated file from a full disk or a kill mid-copy) falls back to
        ``previous`` with a warning naming the file; when no checkpoint loads, raises
        :class:`CheckpointError` naming it."""
        found = self.candidates()
        if not found:
            return None
        failures: list[str] = []
        for path in found:
            try:
                resumed = self._load_one(path)
            except Exception as err:
                bad = unreadable_file(path) or path / STATE_FILE
                failures.append(f"{bad} ({type(err).__name__})")
                log.warning("checkpoint %s is unreadable (%s: %s)%s", bad, type(err).__name__, str(err)[:200],
                            "; trying the previous one" if path != found[-1] else "")  # fmt: skip
                continue
            if self.metrics is not None:
                self.metrics.truncate_after(resumed.step)
            log.info("resumed from %s at step %d", path, resumed.step)
            return resumed
        raise CheckpointError(
            f"no readable checkpoint in {self.root}: {'; '.join(failures)}. Delete that folder to start over, "
            "or point --output_dir elsewhere"
        )

    def _load_one(self, path: Path) -> Resumed:
        doc = json.loads((path / STATE_FILE).read_text())
        if doc.get("format") != FORMAT:
            raise ValueError(f"unknown checkpoint format {doc.get('format')!r}")
        if self.accelerator is not None:
            self.accelerator.load_state(str(path))
        tensors: dict[str, Any] = {}
        if (path / TENSORS_FILE).is_file():
            from safetensors.torch import load_file

            tensors = load_file(str(path / TENSORS_FILE))
        return Resumed(step=int(doc["step"]), state=dict(doc.get("state") or {}), tensors=tensors, path=path)


def fit(
    step_fn: Callable[[int], dict[str, float]],
    *,
    steps: int,
    start: int = 0,
    checkpointer: Checkpointer | None = None,
    state_fn: Callable[[], dict[str, Any]] | None = None,
    tensors_fn: Callable[[], dict[str, Any]] | None = None,
    metrics: Any = None,
    log_every: int = 10,
    checkpoint_every: int = 0,
    desc: str = "train",
    stop_fn: Callable[[int], bool] | None = None,
    log_at: Callable[[int], bool] | None = None,
) -> dict[str, float]:
    """The step loop every medfm training verb runs: ``step_fn(step)`` for ``step`` in ``[start, steps)``.

    ``step_fn`` does one optimiser step (forward, backward, update) and returns scalars to log. After step
    ``s`` (1-based count ``s + 1``) the loop logs every ``log_every`` steps and at the end, and checkpoints every
    ``checkpoint_every`` steps and at the end, with ``state_fn()`` / ``tensors_fn()`` as the loop's own state.
    ``stop_fn(done)`` (checked after each step, e.g. early stopping) ends the loop early; the step it stops at is
    logged and checkpointed like a last step, so a rerun of a stopped run resumes there and stops at once.
    ``log_at(done)`` marks further steps to log (e.g. epoch ends, whose scalars carry validation scores); each
    step is logged at most once, as one row.
    Returns the last step's scalars.
    """
    from medfm.core.runs import progress

    logs: dict[str, float] = {}
    for step in progress(range(start, steps), desc=desc, total=steps, initial=start):
        logs = step_fn(step)
        done = step + 1
        stop = stop_fn is not None and stop_fn(done)
        last = done == steps or stop
        if metrics is not None and (done % max(1, log_every) == 0 or last or (log_at is not None and log_at(done))):
            metrics.log(done, **logs)
        if checkpointer is not None and ((checkpoint_every and done % checkpoint_every == 0) or last):
            checkpointer.save(done, state_fn() if state_fn else None, tensors_fn() if tensors_fn else None)
        if stop:
            break
    return logs


def average_gradients(params: Iterable[Any], accelerator: Any) -> None:
    """Average the gradients of ``params`` over processes (a no-op in one process).

    For modules that are deliberately not wrapped in DistributedDataParallel, such as a GAN discriminator
    that runs two forward passes (real, fake) per backward with batch norm, which DDP does not allow.
    Every rank takes the same branch of the step, so the same parameters carry gradients everywhere."""
    if accelerator is None or getattr(accelerator, "num_processes", 1) <= 1:
        return
    import torch

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")  # one collective
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def make_accelerator(device: str = "auto", mixed_precision: str = "no", grad_accum: int = 1,
                     global_batch: int | None = None, **kwargs: Any) -> Any:  # fmt: skip
    """The ``accelerate.Accelerator`` every medfm loop trains with.

    In medfm a batch size is the *global* batch: N processes split it (``split_batches``), so a run on 1 CPU
    and on 8 GPUs sees the same examples per optimiser step and schedulers step once per optimiser step.
    ``global_batch`` (when given) must divide evenly over the processes.
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    from medfm.core.errors import UsageError
    from medfm.core.runs import resolve_device

    dev = resolve_device(device)
    acc = Accelerator(cpu=dev == "cpu", mixed_precision=mixed_precision, gradient_accumulation_steps=grad_accum,
                      dataloader_config=DataLoaderConfiguration(split_batches=True), **kwargs)  # fmt: skip
    if global_batch is not None and global_batch % acc.num_processes:
        raise UsageError(f"batch size {global_batch} does not split over {acc.num_processes} processes; use a "
                         f"multiple of {acc.num_processes} (batch sizes are global in medfm)")  # fmt: skip
    return acc


def shard(indices: Any, accelerator: Any) -> Any:
    """This process's part of a global batch of ``indices`` (every process computes the same global batch)."""
    if accelerator is None or accelerator.num_processes <= 1:
        return indices
    return indices[accelerator.process_index :: accelerator.num_processes]


def gather_with_grad(x: Any, accelerator: Any) -> Any:
    """Rows of ``x`` ``(n_r, ...)`` from every process, concatenated in rank order, differentiable.

    Shards may differ in size (padded for the collective, then cut). For losses with in-batch negatives
    (CLIP): every process computes the loss of the whole global batch, gradients flow back to each
    process's own rows (the all-gather's backward sums them), and DDP's averaging then yields exactly the
    single-process gradient. A no-op in one process."""
    if accelerator is None or accelerator.num_processes <= 1:
        return x
    import torch
    import torch.distributed.nn as dnn
    import torch.nn.functional as F

    counts = accelerator.gather(torch.tensor([x.shape[0]], device=x.device)).tolist()
    pad = max(counts) - x.shape[0]
    xp = F.pad(x, (0, 0) * (x.ndim - 1) + (0, pad)) if pad else x
    return torch.cat([t[:c] for t, c in zip(dnn.all_gather(xp.contiguous()), counts)])


WEIGHTS_FILE = "model.safetensors"


def save_weights(module: Any, folder: str | Path) -> Path:
    """``module``'s state dict into ``folder/model.safetensors`` atomically (a kill leaves the previous file whole);
    the best-epoch weights of early-stopped loops. Call on the main process only."""
    from safetensors.torch import save_file

    from medfm.core.files import match_umask

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{WEIGHTS_FILE}.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(tmp))
    match_umask(tmp, 0o666)
    os.replace(tmp, folder / WEIGHTS_FILE)
    return folder / WEIGHTS_FILE


def load_weights(module: Any, folder: str | Path) -> None:
    """Load what :func:`save_weights` wrote into ``module`` (strict)."""
    from safetensors.torch import load_file

    module.load_state_dict(load_file(str(Path(folder) / WEIGHTS_FILE)))
