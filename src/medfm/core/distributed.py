"""Who this process is in a multi-process launch (torchrun, ``accelerate launch``, SLURM), read from the
environment so that it is known before torch.distributed is initialised.

One rule follows from it everywhere in medfm: only the main process (global rank 0) writes outputs. The
writers in :mod:`medfm.core.files` discard writes on other ranks, so a verb run under
``torchrun --nproc_per_node N`` produces one results file, one model and one report, not N racing copies.
"""

from __future__ import annotations

import os
from typing import Any


def _env_int(*names: str, default: int) -> int:
    for var in names:
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return default


def process_rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    return _env_int("RANK", "SLURM_PROCID", default=0)


def world_size() -> int:
    """Number of processes in the launch (1 when not distributed)."""
    return _env_int("WORLD_SIZE", "SLURM_NTASKS", default=1)


def is_main_process() -> bool:
    return process_rank() == 0


def broadcast_from_main(value: Any, cpu: bool = False) -> Any:
    """``value`` as rank 0 has it, on every rank (a no-op in a single process).

    Initialises the process group through Accelerate's ``PartialState``, which a later ``Accelerator`` reuses:
    ``cpu`` must match the Accelerator's (a CPU-only state without ``cpu=True`` is not distributed at all).
    Used so that every rank agrees on a timestamped run folder chosen by rank 0."""
    if world_size() <= 1:
        return value
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState(cpu=cpu)
    if state.num_processes <= 1:
        return value
    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def layout(accelerator: Any | None = None) -> dict[str, Any]:
    """World size, rank layout, device and precision, for env.json and reports.

    Without ``accelerator``, the state of the Accelerator this process trained with (if any: Accelerate keeps it
    process-wide), else what the launcher's environment says."""
    import sys

    out: dict[str, Any] = {"world_size": world_size(), "rank": process_rank(),
                           "local_rank": _env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)}  # fmt: skip
    state = accelerator.state if accelerator is not None else None
    if state is None and "accelerate" in sys.modules:  # never import torch just to say "one process"
        from accelerate.state import AcceleratorState

        if AcceleratorState._shared_state:  # an Accelerator was created in this process
            state = AcceleratorState()
    if state is not None:
        out.update(
            world_size=int(state.num_processes),
            rank=int(state.process_index),
            local_rank=int(state.local_process_index),
            distributed_type=str(state.distributed_type).split(".")[-1],
            device=str(state.device),
            mixed_precision=str(state.mixed_precision),
        )
    return out
