"""Run functions of ``medfm ravl`` verbs: discover, mitigate, evaluate, report."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from medfm.core.errors import DataError, UsageError
from medfm.core.runs import Run, resolve_device

log = logging.getLogger(__name__)
METHOD = "ravl"


# ----------------------------------------------------------------------------------------------------------------------
# Shared helpers


def load_data(opts: Any, limit: int | None = None) -> Any:
    """An :class:`~medfm.methods.ravl.data.AuditSet` from the ``data`` section."""
    from medfm.methods.ravl.data import cxr_audit_set, manifest_audit_set, quadrant_digits

    if opts.manifest:
        return manifest_audit_set(opts.manifest, opts.label_column, opts.image_column, opts.caption_column,
                                  opts.region_column, opts.spurious_column, list(opts.classnames) or None,
                                  opts.size, limit)  # fmt: skip
    if opts.phantom == "digits":
        cls = None
        if opts.spurious_label not in (None, "", "None"):
            try:
                cls = int(opts.spurious_label)
            except ValueError:
                raise UsageError(
                    f"--data.spurious_label must be a digit 0-9 for digits, got {opts.spurious_label!r}"
                ) from None
        data = quadrant_digits(opts.phantom_n, seed=opts.phantom_seed, size=opts.phantom_size, spurious_class=cls,
                               cramers_v=opts.cramers_v, glyph_split="train" if opts.cramers_v > 0 else "test")  # fmt: skip
    else:
        data = cxr_audit_set(opts.phantom_n, seed=opts.phantom_seed, size=opts.phantom_size,
                             classes=tuple(opts.classes), spurious_label=opts.spurious_label or None,
                             cramers_v=opts.cramers_v)  # fmt: skip
    return data.subset(np.arange(min(len(data), limit))) if limit else data


def _data_plan(opts: Any) -> list[str]:
    if opts.manifest:
        return [f"data: manifest {opts.manifest} (label column {opts.label_column!r})"]
    return [f"data: {opts.phantom} phantoms n={opts.phantom_n} size={opts.phantom_size} seed={opts.phantom_seed} "
            f"spurious={opts.spurious_label} V={opts.cramers_v}"]  # fmt: skip


def _check_inputs(cfg: Any) -> None:
    if cfg.data.manifest and not Path(cfg.data.manifest).is_file():
        raise DataError(f"manifest {cfg.data.manifest} does not exist")
    model = getattr(cfg, "model", None)
    if model and not str(model).startswith(("open_clip:", "hf-hub:")):
        path = Path(str(model).split(":", 1)[1] if str(model).startswith("local-dir:") else model)
        if not (path / "config.json").is_file():
            raise DataError(f"model {model} is not a model directory (no config.json); pass a checkpoints/final folder")
    disc = getattr(cfg, "discovery_run", None)
    if isinstance(disc, str) and disc and not (Path(disc) / "discovery.npz").is_file():
        raise DataError(f"{disc} has no discovery.npz; pass the run directory of `medfm ravl discover`")


def _embed(model: Any, data: Any, r: Any) -> Any:
    from medfm.methods.ravl.zeroshot import embed

    return embed(model, data, grid=r.grid, templates=r.templates, temperature=r.temperature,
                 batch_size=r.batch_size, region_mode=r.mode)  # fmt: skip


def load_discovery(run_dir: str | Path) -> dict[str, Any]:
    """Medoid embeddings, ranked/spurious cluster ids and settings of a discover run."""
    run_dir = Path(run_dir)
    z = np.load(run_dir / "discovery.npz")
    meta = json.loads((run_dir / "discovery.json").read_text())
    return {"medoid_emb": z["medoid_emb"], **meta}


def discovered_feature(
    model: Any, data: Any, disc: dict[str, Any], r: Any, emb: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`medfm.methods.ravl.feature.discovered_feature` on ``data`` embedded by ``model`` (here when ``emb``
    is None) with the region options ``r``."""
    from medfm.methods.ravl.feature import discovered_feature as label

    return label(_embed(model, data, r) if emb is None else emb, disc, len(data))


def region_grid_figure(data: Any, emb: Any, regions: np.ndarray, truth: np.ndarray | None, title: str) -> Any:
    """Figure: the ranked regions, each shown on its image with the box drawn (green: ground truth spurious)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    k = max(1, len(regions))
    cols = min(5, k)
    rows = int(np.ceil(k / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.1 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for n, r in enumerate(regions):
        ax = axes.ravel()[n]
        img = data.images[emb.region_image[r]]
        ax.imshow(img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0)), cmap="gray", vmin=0, vmax=1)
        x0, y0, x1, y1 = emb.boxes[r]
        hit = truth is not None and bool(truth[r])
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=2,
                               edgecolor="lime" if hit else "red"))  # fmt: skip
        ax.set_title(f"#{n + 1} img {data.ids[emb.region_image[r]]}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------------------------
# discover


def run_discover(cfg: Any) -> int:
    _check_inputs(cfg)
    run = Run(METHOD, "discover", cfg)
    if cfg.dry_run:
        return run.plan([f"model: {cfg.model}", *_data_plan(cfg.data),
                         f"regions: {cfg.regions.mode} grid {cfg.regions.grid}, K sweep "
                         f"{list(cfg.discovery.ks) or '2C..5C-1'}, influence >= {cfg.discovery.min_influence}",
                         f"output: {run.dir}/discovery.json, discovery.npz, report.html"])  # fmt: skip
    with run:
        from medfm.core.files import atomic_path, atomic_write_json
        from medfm.core.metrics import mean_ci
        from medfm.core.report import render_run_report
        from medfm.methods.ravl.discover import discover, precision_at_k
        from medfm.methods.ravl.model import load_vlm
        from medfm.methods.ravl.regions import region_has_feature

        model = load_vlm(cfg.model, resolve_device(cfg.device))
        data = load_data(cfg.data, cfg.limit)
        if len(data) == 0:
            raise DataError("the evaluation set is empty")
        emb = _embed(model, data, cfg.regions)
        C = len(data.classnames)
        d = discover(emb.region_emb, emb.region_image, data.labels, emb.image_pred, emb.region_scores, C,
                     min_influence=cfg.discovery.min_influence, weighted=cfg.discovery.weighted, seed=cfg.seed,
                     max_fit_regions=cfg.discovery.max_fit_regions, ks=list(cfg.discovery.ks) or None)  # fmt: skip
        truth = None
        if data.spurious_boxes is not None:
            truth = region_has_feature(emb.boxes, emb.region_image, data.spurious_boxes)
        results = run.new_results()
        correct = (emb.image_pred == data.labels).astype(float)
        results.add("image_accuracy", mean_ci(correct, seed=cfg.seed))
        results.add("images", len(data))
        results.add("regions", len(emb.boxes))
        results.add("clusters", d.clustering.k, note="chosen by silhouette")
        results.add("silhouette", d.clustering.silhouettes.get(d.clustering.k))
        results.add("spurious_clusters", len(d.ranked_clusters))
        k = cfg.discovery.top_k
        if truth is not None:
            p = precision_at_k(d.top_regions(), truth, k)
            results.add(f"precision_at_{k}", p if p is not None else 0.0, n=min(k, len(d.top_regions())),
                        note="fraction of the top cluster's first k regions holding the ground-truth feature"
                        + ("" if d.found else "; nothing found, counted 0"))  # fmt: skip
            results.add("spurious_region_rate", float(truth.mean()), note="chance level of precision@k")
        names = data.classnames
        results.tables["clusters"] = [
            {"rank": i + 1, "cluster": c, "regions": d.stats[c].size, "score_sum_abs_gap": round(d.stats[c].score, 4),
             "influence": None if d.stats[c].influence is None else round(d.stats[c].influence, 4),
             "helps": ", ".join(names[x] for x in d.stats[c].helps()),
             "hurts": ", ".join(names[x] for x in d.stats[c].hurts()),
             "precision_at_k": None if truth is None else precision_at_k(d.ranked_regions[c], truth, k)}
            for i, c in enumerate(d.ranked_clusters)
        ]  # fmt: skip
        if d.found:
            top = d.stats[d.top_cluster]
            results.tables["top_cluster_classes"] = [
                {"class": names[r["class"]], "n_present": r["n_present"], "acc_present": round(r["acc_present"], 4),
                 "n_absent": r["n_absent"], "acc_absent": round(r["acc_absent"], 4), "gap": round(r["gap"], 4)}
                for r in top.table
            ]  # fmt: skip
            tops = d.top_regions(k)
            med = emb.region_emb[d.clustering.medoids[d.top_cluster]]
            results.tables["top_regions"] = [
                {"rank": i + 1, "image": data.ids[emb.region_image[r]], "box": emb.boxes[r].tolist(),
                 "cosine_to_medoid": round(float(emb.region_emb[r] @ med), 4),
                 **({"ground_truth_spurious": bool(truth[r])} if truth is not None else {})}
                for i, r in enumerate(tops)
            ]  # fmt: skip
            attr = d.attribute()
            results.meta["spurious_attribute"] = names[attr] if attr is not None else None
            fig = region_grid_figure(
                data,
                emb,
                tops,
                truth,
                f"top cluster {d.top_cluster}: regions ranked by "
                f"similarity to the medoid (attribute: {results.meta['spurious_attribute']})",
            )
            run.save_figure("top_cluster_regions", fig, (
                f"Regions of the top-ranked cluster {d.top_cluster} (the one whose presence most changes the "
                "classifier's accuracy), ranked by cosine similarity to its medoid, boxes on their source images"
                + ("; green / red box: the region does / does not overlap the known spurious feature."
                   if truth is not None else ".")))  # fmt: skip
        results.meta.update(model=cfg.model, message=d.message, classnames=names, data=data.meta,
                            silhouettes={str(k_): v for k_, v in d.clustering.silhouettes.items()})  # fmt: skip
        with atomic_path(run.dir / "discovery.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, medoid_emb=emb.region_emb[d.clustering.medoids].astype(np.float32),
                     medoids=d.clustering.medoids, labels=d.clustering.labels, boxes=emb.boxes,
                     region_image=emb.region_image, top_regions=d.top_regions())  # fmt: skip
        atomic_write_json(run.dir / "discovery.json", {
            "ranked_clusters": [int(c) for c in d.ranked_clusters], "message": d.message, "classnames": names,
            "spurious_attribute": results.meta.get("spurious_attribute"), "k": d.clustering.k,
            "regions": {"grid": cfg.regions.grid, "mode": cfg.regions.mode}, "model": cfg.model,
        })  # fmt: skip
        run.write_samples({"image": data.ids[i], "label": names[data.labels[i]], "pred": names[emb.image_pred[i]]}
                          for i in range(len(data)))  # fmt: skip
        run.save_results(results)
        render_run_report(run.dir, title="RaVL discover")
    log.info(d.message)
    print(run.dir / "report.html")
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# mitigate


def _save_final(run: Run, model: Any, cfg: Any, data: Any, summary: dict[str, Any], seconds: float) -> Path:
    from medfm.core.cards import Capabilities, Training, TrainingData, card_from_run, method_facts

    synthetic = not cfg.data.manifest
    modality = "CXR" if cfg.data.manifest or cfg.data.phantom == "cxr" else "other"
    m = cfg.mitigation
    objective = {
        "standard": "symmetric InfoNCE (open_clip ClipLoss)",
        "upsample": "symmetric InfoNCE with group-upsampled batches (class x discovered feature)",
        "gdro": "symmetric InfoNCE + GroupDRO over zero-shot logits (VL-GDRO), groups class x discovered feature",
        "ravl": f"RaVL region-aware loss: InfoNCE + {m.lambda_core} x caption-core-region InfoNCE + "
        f"{m.lambda_spur} x InfoNCE with discovered spurious regions as extra negatives",
    }[m.method]
    data_card = TrainingData(
        size=len(data), unit="image-caption pairs", modalities=[modality, "text"],
        body_regions=["chest"] if modality == "CXR" else [], annotation="automatic",
        sources=[cfg.data.manifest or f"medfm {cfg.data.phantom} phantoms (seed {cfg.data.phantom_seed})"],
        synthetic=synthetic,
        statistics={"classes": data.classnames, "per_class": np.bincount(data.labels).tolist(),
                    "spurious_regions_labelled": summary.get("spurious_regions", 0), **{
                        k: v for k, v in data.meta.items() if k.startswith("cramers")}},
    )  # fmt: skip
    describe = model.describe() if hasattr(model, "describe") else type(model).__name__
    training = Training(paradigm=["vision-language-alignment"], objective=objective, architecture=describe,
                        base_model=cfg.model or "scratch", steps=summary["steps"],
                        samples_seen=summary["samples_seen"], precision=m.precision)  # fmt: skip
    caps = Capabilities(supported=["zero-shot", "retrieval"], inputs="images (greyscale or RGB) and text",
                        outputs="L2-normalised image/text embeddings; zero-shot class probabilities")  # fmt: skip
    card = card_from_run(
        run.dir, name=f"ravl-{m.method}", method=METHOD, data=data_card, training=training, capabilities=caps,
        **method_facts(__package__, "mitigated", data="synthetic phantoms" if synthetic else f"{cfg.data.manifest} only"),
        model=model, seconds=seconds,
    )  # fmt: skip
    return model.save_pretrained(run.dir / "checkpoints" / "final", card=card)


def run_mitigate(cfg: Any) -> int:
    _check_inputs(cfg)
    m = cfg.mitigation
    if m.init == "model" and not cfg.model:
        raise UsageError("missing --model (or pass --mitigation.init scratch to start from a fresh tiny CLIP)")
    if m.method != "standard" and not cfg.discovery_run:
        raise UsageError(f"--mitigation.method {m.method} needs --discovery_run <run dir of medfm ravl discover>")
    run = Run(METHOD, "mitigate", cfg)
    if cfg.dry_run:
        return run.plan([f"model: {cfg.model if m.init == 'model' else 'fresh tiny CLIP'}", *_data_plan(cfg.data),
                         f"method: {m.method}, {m.steps} steps x batch {m.batch_size}, lr {m.lr}",
                         f"discovery: {cfg.discovery_run}", f"output: {run.dir}/checkpoints/final"])  # fmt: skip
    with run:
        from medfm.core.report import render_run_report
        from medfm.methods.ravl.mitigate import FinetuneOptions, Finetuner, tiny_clip
        from medfm.methods.ravl.model import load_vlm

        device = resolve_device(cfg.device)
        data = load_data(cfg.data, cfg.limit)
        if m.init == "scratch":
            model = tiny_clip(int(data.images.shape[-1]), seed=cfg.seed).to(device)
        else:
            model = load_vlm(cfg.model, device)
        feature = region_spurious = None
        summary_extra: dict[str, Any] = {}
        if cfg.discovery_run:
            disc = load_discovery(cfg.discovery_run)
            # regions are labelled in the embedding space of the audited model the medoids come from
            audited = model
            if disc.get("model") and disc["model"] != cfg.model:
                try:
                    audited = load_vlm(disc["model"], device)
                except (DataError, UsageError):
                    log.warning("audited model %s of the discovery run is unavailable; labelling regions with the "
                                "model being fine-tuned", disc["model"])  # fmt: skip
            feature, region_spurious = discovered_feature(audited, data, disc, cfg.regions)
            summary_extra = {"spurious_regions": int(region_spurious.sum()), "images_with_feature": int(feature.sum())}
            if not disc["ranked_clusters"]:
                log.warning("the discovery run found no spurious feature; %s reduces to standard fine-tuning", m.method)
        opts = FinetuneOptions(method=m.method, steps=m.steps, batch_size=m.batch_size, lr=m.lr,
                               weight_decay=m.weight_decay, lambda_core=m.lambda_core, lambda_spur=m.lambda_spur,
                               gdro_eta=m.gdro_eta, grid=cfg.regions.grid, region_mode=cfg.regions.mode,
                               precision=m.precision, grad_accum=m.grad_accum, save_every=m.save_every,
                               log_every=m.log_every)  # fmt: skip
        ft = Finetuner(model, data, opts, feature, region_spurious, run_dir=run.dir, seed=cfg.seed, device=device)
        t0 = time.perf_counter()
        summary = {**ft.fit(run.metrics), **summary_extra}
        seconds = time.perf_counter() - t0
        model = ft.unwrapped().eval()
        results = run.new_results()
        for key in ("loss", "loss_img", "loss_core", "loss_spur", "loss_dro"):
            if key in summary:
                results.add(f"final_{key}", summary[key], higher_is_better=False)
        results.add("steps", summary["steps"])
        for key, v in summary_extra.items():
            results.add(key, v)
        results.meta.update(method=m.method, model=cfg.model, discovery=cfg.discovery_run, seconds=round(seconds, 2))
        run.save_results(results)
        _save_final(run, model, cfg, data, summary, seconds)
        render_run_report(run.dir, title=f"RaVL mitigate ({m.method})")
    print(run.dir / "checkpoints" / "final")
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# evaluate / report


def run_evaluate(cfg: Any) -> int:
    _check_inputs(cfg)
    run = Run(METHOD, "evaluate", cfg)
    if cfg.dry_run:
        return run.plan([f"model: {cfg.model}", *_data_plan(cfg.data), f"groups: class x feature "
                         f"({'discovered in ' + cfg.discovery_run if cfg.discovery_run else 'ground truth'})"])  # fmt: skip
    with run:
        from medfm.core.report import render_run_report
        from medfm.methods.ravl.evaluation import evaluate_embedded
        from medfm.methods.ravl.model import load_vlm

        model = load_vlm(cfg.model, resolve_device(cfg.device))
        data = load_data(cfg.data, cfg.limit)
        emb = _embed(model, data, cfg.regions)
        feature = None
        if cfg.discovery_run and data.has_spurious is None:
            feature, _ = discovered_feature(model, data, load_discovery(cfg.discovery_run), cfg.regions, emb)
        ev = evaluate_embedded(data, emb, feature, seed=cfg.seed, n_resamples=cfg.bootstrap)
        results = run.new_results()
        for name, metric in ev["metrics"].items():
            results.add(name, metric)
        for group, ms in ev["groups"].items():
            for name, metric in ms.items():
                results.add(name, metric, group=group)
        results.meta.update(model=cfg.model, groups_from=ev["feature_source"], worst_group=ev["worst_group"],
                            classnames=data.classnames, data=data.meta)  # fmt: skip
        run.save_results(results)
        render_run_report(run.dir, title="RaVL evaluate")
    print(run.dir / "report.html")
    return 0
