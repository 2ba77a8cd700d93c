"""``medfm demo`` step: a short curated run and a full-data run on CXR phantoms, side by side, with plots
(AUROC per finding curated vs full, kept fraction per finding, a 2D map of prototypes and kept/dropped pairs).
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _cfg(out: Path, arm: str, seed: int):
    from medfm.core.config import resolve
    from medfm.methods.chexficient.config import TrainConfig

    return resolve(TrainConfig, ["preset:tiny"], {
        "output_dir": str(out / arm), "seed": str(seed), "device": "cpu", "train.arm": arm,
        "data.phantom_n": "4000", "train.epochs": "20", "eval.linear_probe": "false", "eval.bootstrap": "200",
        "train.save_every": "0",
    }, package="medfm.methods.chexficient")  # fmt: skip


# 700 pairs x 3 epochs (18 steps) gave macro zero-shot AUROC 0.59; 4000 x 20 (680 steps, ~15 s per arm on 2 cores)
# 0.66 and 6000 x 40 0.66: the tiny tower's plateau. The demo takes the cheapest setting on the plateau.


def run_demo(out_dir: Path, seed: int):
    """Curated vs full tiny runs on phantoms; returns a StepOutcome with the comparison report."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from medfm.core.report import Report
    from medfm.core.results import Results
    from medfm.core.runs import Run
    from medfm.demo import Headline, StepOutcome
    from medfm.methods.chexficient.curator import joint_features
    from medfm.methods.chexficient.data import load_pairs
    from medfm.methods.chexficient.engine import make_curator
    from medfm.methods.chexficient.verbs import train_and_evaluate

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res: dict[str, Results] = {}
    for arm in ("curated", "full"):
        cfg = _cfg(out_dir, arm, seed)
        with Run("chexficient", "train", cfg) as run:
            train_and_evaluate(cfg, run, "cpu")
        res[arm] = Results.load(out_dir / arm / "results.json")
    rep = Report("CheXficient demo: curated vs full data", subtitle="CXR phantoms, tiny CPU model")
    pf = {arm: {r["finding"]: r["auroc"] for r in res[arm].tables["zero_shot_auroc_per_finding"]} for arm in res}
    findings = [f for f in pf["curated"] if pf["curated"][f] is not None and pf["full"].get(f) is not None]
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(findings) + 1))
    y = np.arange(len(findings))
    ax.barh(y - 0.2, [pf["curated"][f] for f in findings], 0.4, label="curated", color="#c0793a")
    ax.barh(y + 0.2, [pf["full"][f] for f in findings], 0.4, label="full", color="#4a78b5")
    ax.set_yticks(y, findings, fontsize=7)
    ax.axvline(0.5, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("zero-shot AUROC")
    ax.legend(fontsize=7)
    rep.add_figure("Zero-shot AUROC per finding", fig)
    kept = [r for r in res["curated"].tables["kept_fraction_per_finding"] if r["kept_fraction"] is not None]
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(kept) + 1))
    ax.barh([r["finding"] for r in kept], [r["kept_fraction"] for r in kept], color="#c0793a")
    overall = res["curated"].metrics["kept_fraction"].value
    ax.axvline(overall, color="grey", ls="--", lw=0.8, label=f"overall {overall:.2f}")
    ax.tick_params(labelsize=7)
    ax.set_xlabel("fraction of positives kept by the curator")
    ax.legend(fontsize=7)
    rep.add_figure("Kept fraction per finding", fig)
    # 2D map: embed one curation batch with the curated model, select, project with PCA
    cfg = _cfg(out_dir, "curated", seed)
    from medfm.methods.chexficient.model import CheXficientModel

    model = CheXficientModel.from_pretrained(out_dir / "curated" / "checkpoints" / "final")
    pairs = load_pairs(cfg.data, model.image_size)
    rows = np.arange(min(len(pairs), cfg.train.batch_size * 2))
    u = joint_features(model.encode_images(pairs.images(rows)), model.encode_texts([pairs.reports[i] for i in rows]))

    cur = make_curator(cfg.curator, seed)
    cur.prototypes = model.prototypes.clone()
    sel = cur.select(u)
    x = torch.cat([u, cur.prototypes]).numpy()
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    p2 = x @ vt[:2].T
    n = len(rows)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    keep = sel.keep.numpy()
    ax.scatter(p2[:n][~keep, 0], p2[:n][~keep, 1], s=8, c="#b0b7c0", label="dropped")
    ax.scatter(p2[:n][keep, 0], p2[:n][keep, 1], s=10, c="#c0793a", label="kept")
    ax.scatter(p2[n:, 0], p2[n:, 1], s=120, marker="*", c="#1d2430", label="prototypes")
    ax.legend(fontsize=7)
    ax.set_title("joint [image; report] features (PCA)", fontsize=9)
    rep.add_figure("Prototypes and kept / dropped pairs", fig)
    rows_t = []
    for arm in ("curated", "full"):
        m = res[arm].metrics
        rows_t.append({"arm": arm, "kept_fraction": round(m["kept_fraction"].value, 3),
                       "compute_units": m["compute_units"].value,
                       "zero_shot_macro_auroc": m["zero_shot_macro_auroc"].value if "zero_shot_macro_auroc" in m else None,
                       "i2t_recall@10": m["i2t_recall@10"].value})  # fmt: skip
    rep.add_table("Curated vs full", rows_t)
    rep.add_links("Runs", [(arm, f"{arm}/report.html", "train run") for arm in ("curated", "full")])
    path = rep.save(out_dir / "report.html")
    ratio = rows_t[0]["compute_units"] / rows_t[1]["compute_units"]
    auc_c, auc_f = rows_t[0]["zero_shot_macro_auroc"], rows_t[1]["zero_shot_macro_auroc"]
    auc_txt = f"macro zero-shot AUROC {auc_c:.3f} vs {auc_f:.3f} (full)" if auc_c and auc_f else "AUROC n/a"
    m = res["curated"].metrics.get("zero_shot_macro_auroc")
    return StepOutcome(path, f"curated kept {rows_t[0]['kept_fraction']:.1%} of pairs, {ratio:.0%} of full "
                             f"compute; {auc_txt}",
                       figure=out_dir / "curated" / "plots" / "kept_fraction_and_roc.png", benchmark="chexficient",
                       smoke=True,  # one seed of a 1-layer tower: curated vs full is decided by the benchmark
                       headline=Headline.of("zero-shot macro AUROC of the curated run", m,
                                            compare=f"chance 0.5; full data {auc_f:.3f} at {1 / ratio:.1f}x the "
                                                    "compute" if auc_f else "chance 0.5"))  # fmt: skip
