"""``medfm phantom ct|cxr``: write synthetic datasets with ground truth (torch-free declaration)."""

from __future__ import annotations

from medfm.core.commands import Command, Group

PHANTOM = Group(
    "phantom",
    "Synthetic CT volumes and chest X-rays with ground truth (labels, masks, reports).",
    (
        Command(
            "ct",
            "Labelled CT-like volumes: NIfTI images + label maps + Decathlon-style dataset.json.",
            "medfm.data.phantoms.config:CTPhantomConfig",
            "medfm.data.phantoms.cli:run_ct",
        ),
        Command(
            "cxr",
            "Chest radiographs with findings, boxes/masks, reports and metadata: PNG + manifest.csv.",
            "medfm.data.phantoms.config:CXRPhantomConfig",
            "medfm.data.phantoms.cli:run_cxr",
        ),
    ),
)


def _run(verb: str, cfg, writer_path: str) -> int:
    import time

    from medfm.core.commands import load_object
    from medfm.core.runs import Run

    run = Run("phantom", verb, cfg)
    n = cfg.n if cfg.limit is None else min(cfg.n, cfg.limit)
    if cfg.dry_run:
        return run.plan([f"generate {n} {verb} phantoms with seed {cfg.seed}", f"write them under {run.dir}"])
    with run.start(with_device=False):
        t0 = time.perf_counter()
        load_object(writer_path)(cfg, run.dir)
        print(f"{run.dir} ({n} {verb} phantoms in {time.perf_counter() - t0:.1f} s)")
    return 0


def run_ct(cfg) -> int:
    """Write ``cfg.n`` CT phantoms into the run directory (see :mod:`medfm.data.phantoms.ct3d`)."""
    return _run("ct", cfg, "medfm.data.phantoms.ct3d:write_ct_dataset")


def run_cxr(cfg) -> int:
    """Write ``cfg.n`` chest X-ray phantoms into the run directory (see :mod:`medfm.data.phantoms.cxr`)."""
    return _run("cxr", cfg, "medfm.data.phantoms.cxr:write_cxr_dataset")
