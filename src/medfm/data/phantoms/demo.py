"""Demo step: a small CT set and chest X-ray set with a picture grid of images and label overlays."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _ct_figure(patients: list, names: dict[int, str]):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    cmap = plt.get_cmap("tab20", 20)
    fig, axes = plt.subplots(len(patients), 4, figsize=(11, 2.9 * len(patients)), squeeze=False)
    for row, p in zip(axes, patients):
        _X, Y, Z = p.image.shape
        views = [
            ("coronal", p.image[:, Y // 2, :].T[::-1], p.label[:, Y // 2, :].T[::-1]),
            ("axial (chest)", p.image[:, :, int(Z * 0.68)].T[::-1], p.label[:, :, int(Z * 0.68)].T[::-1]),
        ]
        for k, (title, img, lab) in enumerate(views):
            row[2 * k].imshow(img, cmap="gray", vmin=-400, vmax=400, aspect="auto")
            row[2 * k].set_title(f"{p.id} {title}", fontsize=8)
            row[2 * k + 1].imshow(img, cmap="gray", vmin=-400, vmax=400, aspect="auto")
            over = np.ma.masked_where(lab == 0, lab % 20)
            row[2 * k + 1].imshow(over, cmap=cmap, vmin=0, vmax=19, alpha=0.55, interpolation="nearest", aspect="auto")
            row[2 * k + 1].set_title(f"labels ({len(np.unique(lab)) - 1} structures)", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    return fig


def _cxr_figure(batch, n: int = 12):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = 6
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
    colors = plt.get_cmap("tab10")
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k >= len(batch.images):
            continue
        ax.imshow(batch.images[k], cmap="gray", vmin=0, vmax=1)
        shown = [f for f in batch.masks[k] if f not in ("Lung Opacity", "Lung Lesion")]
        for c, f in enumerate(shown):
            ax.contour(batch.masks[k][f], levels=[0.5], colors=[colors(c % 10)], linewidths=0.8)
            x0, y0, x1, y1 = batch.records[k]["boxes"][f]
            ax.add_patch(
                plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=0.6, ec=colors(c % 10), ls="--")
            )
        if batch.records[k]["spurious_box"]:
            x0, y0, x1, y1 = batch.records[k]["spurious_box"]
            ax.add_patch(plt.Rectangle((x0 - 1, y0 - 1), x1 - x0 + 1, y1 - y0 + 1, fill=False, lw=0.8, ec="yellow"))
        title = ", ".join(f + (" (?)" if batch.records[k]["labels"][f] == -1 else "") for f in shown) or "No Finding"
        ax.set_title(title, fontsize=6)
    fig.tight_layout()
    return fig


def run_demo(out_dir: Path, seed: int):
    """Write 2 CT phantoms (64^3) and 200 chest X-rays (128^2, marker planted on Pneumothorax at V = 0.8) into
    ``out_dir`` with a report.html showing images with label overlays, label tables and measured statistics."""
    import numpy as np

    from medfm.core.report import Report, save_figure
    from medfm.data.phantoms import ct3d, cxr
    from medfm.data.phantoms.config import CTPhantomConfig, CXRPhantomConfig
    from medfm.demo import Headline, StepOutcome

    out_dir = Path(out_dir)
    ct_cfg = CTPhantomConfig(seed=seed, n=2, shape=[64, 64, 64], spacing=[6.0, 6.0, 9.5])
    ct_cfg.pathology.tumour = ct_cfg.pathology.nodule = 1.0
    patients = list(ct3d.iter_ct_patients(ct_cfg))
    datalist = ct3d.write_ct_dataset(ct_cfg, out_dir / "ct", patients)

    cxr_cfg = CXRPhantomConfig(seed=seed, n=200, size=128)
    cxr_cfg.spurious.label = "Pneumothorax"
    cxr_cfg.spurious.cramers_v = 0.8
    batch = cxr.generate_cxr(cxr_cfg.n, seed=seed, size=cxr_cfg.size, cfg=cxr_cfg)
    summary = cxr.write_cxr_dataset(cxr_cfg, out_dir / "cxr", [batch])

    rep = Report("Synthetic phantoms", subtitle=f"seed {seed}: {len(patients)} CT volumes, {summary['n']} chest X-rays")
    rep.add_figure(
        "CT phantoms: images and label maps",
        _ct_figure(patients, ct3d.LABELS),
        caption="Coronal and axial slices (window -400..400 HU) with the label map overlaid.",
    )
    rows = []
    for p in patients:
        present = np.unique(p.label)
        rows.append(
            {
                "id": p.id,
                "structures": int(len(present) - 1),
                "sex": p.metadata["sex"],
                "pathologies": ", ".join(f"{les['label']} ({les['voxels']} vox)" for les in p.metadata["pathologies"])
                or "none",
            }
        )
    rep.add_table("CT cases", rows)
    hu_rows = []
    for name in ("lung_right", "liver", "spleen", "kidney_left", "aorta", "vertebrae", "liver_tumour"):
        lid = ct3d.LABEL_IDS[name]
        vals = np.concatenate([p.image[p.label == lid] for p in patients])
        lo, hi = ct3d.hu_range(name)
        hu_rows.append(
            {
                "structure": name,
                "mean HU": round(float(vals.mean()), 1) if vals.size else None,
                "configured range": f"[{lo:.0f}, {hi:.0f}]",
                "voxels": int(vals.size),
            }
        )
    rep.add_table("CT intensity by structure (all voxels, partial volume included)", hu_rows)
    key = save_figure(out_dir / "cxr_phantoms.png", _cxr_figure(batch), caption=(
        f"12 of {summary['n']} chest X-ray phantoms ({cxr_cfg.size} px, intensity 0..1). Contours: finding masks; "
        "dashed: boxes; yellow: the planted spurious marker; (?) an uncertain finding."))  # fmt: skip
    rep.add_figure("Chest X-ray phantoms with finding masks and boxes", key)
    prev = cxr_cfg.prevalence.as_dict()
    rep.add_table(
        "Chest X-ray findings",
        [
            {
                "finding": f,
                "configured prevalence": prev.get(f, "derived"),
                "present (1 or -1)": round(float(batch.present[:, k].mean()), 3),
                "positive (1)": round(float((batch.labels[:, k] == 1).mean()), 3),
            }
            for k, f in enumerate(cxr.FINDINGS)
        ],
    )
    y = batch.labels[:, cxr.FINDINGS.index("Pneumothorax")] == 1
    v = cxr.cramers_v(y, batch.spurious)
    rep.add_table("Example reports", [{"id": r["id"], "report": r["report"]} for r in batch.records[:6]])
    rep.add_text(
        "Planted spurious feature",
        f"Marker on {int(batch.spurious.sum())} of {len(y)} images; Cramér's V with Pneumothorax = {v:.2f} "
        f"(target {cxr_cfg.spurious.cramers_v}).",
    )
    path = rep.save(out_dir / "report.html")
    return StepOutcome(
        path,
        f"{datalist['numTraining']} CT volumes with {len(ct3d.LABELS) - 1} label classes, "
        f"{summary['n']} chest X-rays with {len(cxr.FINDINGS)} findings; "
        f"spurious marker Cramér's V {v:.2f} (target 0.8)",
        figure=key,
        headline=Headline(
            "Cramér's V of the planted marker with Pneumothorax",
            float(v),
            compare=f"target {cxr_cfg.spurious.cramers_v}, {len(y)} images",
        ),
    )
