"""Run functions of the ``medfm chexficient`` verbs (imported only when a verb runs)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from medfm.core.errors import UsageError
from medfm.core.runs import Run, resolve_device

log = logging.getLogger(__name__)

METHOD = "chexficient"


def _image_size(model_opts: Any) -> int:
    return int(dict(model_opts.image_tower).get("image_size", 224))


def _setup_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(int(n))


def _data_plan(cfg: Any) -> list[str]:
    d = cfg.data
    if d.manifest:
        return [f"data: manifest {d.manifest}"]
    return [f"data: CXR phantoms n={d.phantom_n} size={d.phantom_size} seed={d.phantom_seed}"
            + (f" + held-out test n={d.test_n}" if d.test_n else "")]  # fmt: skip


def _check_manifest(cfg: Any) -> None:
    if cfg.data.manifest and not Path(cfg.data.manifest).is_file():
        from medfm.core.errors import DataError

        raise DataError(f"{cfg.data.manifest}: manifest file does not exist")


# ----------------------------------------------------------------------------------------------------------------------
# train


def run_train(cfg: Any) -> int:
    from medfm.methods.chexficient.curator import expected_keep_fraction

    _check_manifest(cfg)
    t, c = cfg.train, cfg.curator
    if t.micro_batch_size > t.batch_size:
        raise UsageError(f"--train.micro_batch_size {t.micro_batch_size} exceeds --train.batch_size {t.batch_size}")
    run = Run(METHOD, "train", cfg)
    if cfg.dry_run:
        frac = expected_keep_fraction(t.batch_size, c.num_prototypes, c.max_per_cluster, c.q_support, c.q_outlier)
        return run.plan([
            *_data_plan(cfg), f"arm: {t.arm}, {t.epochs} epochs, global batch {t.batch_size}",
            f"curator: K={c.num_prototypes}, bands {c.q_support}/{c.q_outlier}, M={c.max_per_cluster} ({c.thinning}); "
            f"expected keep fraction {frac:.3f}",
            f"model: image {dict(cfg.model.image_tower)}, text {dict(cfg.model.text_tower)}",
            f"outputs: {run.dir}/checkpoints/final (model + card), results.json, report.html",
        ])  # fmt: skip
    with run:
        _setup_threads(t.num_threads)
        device = resolve_device(cfg.device)
        outcome = train_and_evaluate(cfg, run, device)
    if outcome == "stopped":
        print(f"stopped at --train.stop_after_steps; rerun with --output_dir {run.dir} to resume")
    else:
        print(run.dir / "report.html")
    return 0


def train_and_evaluate(cfg: Any, run: Run, device: str) -> str:
    """Train (resumable), evaluate, write results, plots, the final model with its card and report.html."""
    import time

    from medfm.core.files import atomic_write_text
    from medfm.methods.chexficient.data import load_pairs
    from medfm.methods.chexficient.engine import Trainer

    pairs = load_pairs(cfg.data, _image_size(cfg.model), limit=cfg.limit)
    trainer = Trainer(cfg, pairs, run.dir, device=device)
    t0 = time.perf_counter()
    status = trainer.fit(metrics_log=run.metrics)
    if status == "stopped":
        return status
    seconds = time.perf_counter() - t0
    summary = trainer.summary()
    subset = trainer.state.subset if cfg.train.arm != "full" else trainer.pool.tolist()
    atomic_write_text(run.dir / "curated_subset.csv",
                      "id\n" + "".join(f"{pairs.ids[i]}\n" for i in subset))  # fmt: skip
    results = run.new_results()
    results.meta.update(summary=summary, data_source=pairs.source, dropped=pairs.dropped)
    results.add("kept_fraction", summary["kept_fraction"], n=summary["pool"],
                note=f"{summary['kept']} of {summary['pool']} training pairs in the final training set")  # fmt: skip
    results.add("compute_units", summary["compute_units"], higher_is_better=False,
                note="forward + no-grad forward + 2 x backward sample passes")  # fmt: skip
    results.add("train_steps", summary["steps"])
    if summary.get("val_curve"):
        results.add("best_val_macro_auroc", summary["best_val_macro_auroc"],
                    note=f"split {cfg.train.val_split}, step {summary['best_step']} (weights kept); "
                    f"{'stopped early' if summary['stopped_early'] else 'all epochs run'}")  # fmt: skip
        results.tables["validation_curve"] = summary["val_curve"]
    results.tables["kept_fraction_per_finding"] = kept_per_finding(pairs, trainer.pool, subset)
    model = trainer.raw.eval()
    if cfg.evaluate_after:
        ev = _evaluate_into(results, model, pairs, cfg.eval, cfg.seed)
        _plots(run, ev, results, pairs, ev.get("test_idx"))
    run.save_results(results)
    save_final(run, model, cfg, pairs, summary, seconds)
    from medfm.core.report import render_run_report

    render_run_report(run.dir, title="CheXficient train")
    return status


def kept_per_finding(pairs: Any, pool: np.ndarray, subset: list[int]) -> list[dict[str, Any]]:
    """Per finding: positives in the pool, in the kept subset, kept fraction and enrichment vs the overall rate."""
    pool = np.asarray(pool)
    sub = np.asarray(subset, dtype=np.int64)
    overall = len(sub) / max(1, len(pool))
    rows = []
    for k, f in enumerate(pairs.findings):
        n_pool = int(np.sum(pairs.labels[pool, k] == 1))
        n_kept = int(np.sum(pairs.labels[sub, k] == 1)) if len(sub) else 0
        frac = n_kept / n_pool if n_pool else None
        rows.append({"finding": f, "pool_positives": n_pool, "kept_positives": n_kept,
                     "kept_fraction": None if frac is None else round(frac, 4),
                     "enrichment": None if frac is None or overall == 0 else round(frac / overall, 3)})  # fmt: skip
    return rows


def _evaluate_into(results: Any, model: Any, pairs: Any, eval_opts: Any, seed: int) -> dict[str, Any]:
    from medfm.methods.chexficient.evaluation import evaluate_model

    test_idx = pairs.split_index(eval_opts.split)
    if len(test_idx) == 0:
        log.warning("no rows in split %r: evaluating on every row", eval_opts.split)
        test_idx = np.arange(len(pairs))
    train_idx = pairs.split_index("train")
    ev = evaluate_model(model, pairs, test_idx, train_idx, eval_opts, seed)
    ev["test_idx"] = test_idx
    for name, m in ev["metrics"].items():
        results.add(name, m)
    for f, m in ev["per_finding"].items():
        results.add("zero_shot_auroc", m, group=f"finding={f}")
    results.tables["zero_shot_auroc_per_finding"] = [
        {"finding": f, "auroc": m.value, "ci_low": m.ci[0] if m.ci else None, "ci_high": m.ci[1] if m.ci else None,
         "positives": int(np.sum(pairs.labels[test_idx, pairs.findings.index(f)] == 1))}
        for f, m in ev["per_finding"].items()
    ]  # fmt: skip
    results.meta["eval_split"] = eval_opts.split
    results.meta["eval_n"] = len(test_idx)
    return ev


def kept_and_roc_figure(
    kept: list[dict[str, Any]],
    overall: float | None,
    scores: np.ndarray | None,
    labels: np.ndarray | None,
    findings: list[str],
    n_curves: int = 4,
) -> Any:
    """Left: fraction of each finding's positives the curator kept (dashed: the overall kept fraction, so a bar
    to its right is enriched). Right: zero-shot ROC curves of the ``n_curves`` findings with most test positives.

    scores, labels: ``(N, F)`` zero-shot scores and labels (1 positive) of the test rows, columns = ``findings``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    has_roc = scores is not None and labels is not None and len(scores) > 0
    fig, axes = plt.subplots(1, 2 if has_roc else 1, figsize=(10 if has_roc else 6, 0.28 * max(len(kept), 8) + 1.2),
                             squeeze=False)  # fmt: skip
    ax = axes[0][0]
    if kept:
        ax.barh([r["finding"] for r in kept], [r["kept_fraction"] for r in kept], color="#c0793a")
        if overall is not None:
            ax.axvline(overall, color="grey", lw=0.8, ls="--", label=f"overall {overall:.2f}")
            ax.legend(fontsize=7)
    ax.set_xlabel("fraction of the finding's positives kept")
    ax.tick_params(labelsize=7)
    ax.set_title("curation: kept fraction per finding", fontsize=9)
    if has_roc:
        ax = axes[0][1]
        pos = [(int((labels[:, k] == 1).sum()), k) for k in range(len(findings))]
        usable = [(n, k) for n, k in pos if 0 < n < len(labels)]
        for _, k in sorted(usable, reverse=True)[:n_curves]:
            y = labels[:, k] == 1
            fpr, tpr, _ = roc_curve(y, scores[:, k])
            ax.plot(
                fpr, tpr, lw=1.3, label=f"{findings[k]} (AUROC {roc_auc_score(y, scores[:, k]):.2f}, {y.sum()} pos)"
            )
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="chance")
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.set_title("zero-shot ROC (test split)", fontsize=9)
        ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return fig


def _plots(run: Run, ev: dict[str, Any], results: Any, pairs: Any = None, test_idx: Any = None) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = [r for r in results.tables.get("zero_shot_auroc_per_finding", []) if r["auroc"] is not None]
    if rows:
        fig, ax = plt.subplots(figsize=(6, 0.3 * len(rows) + 1))
        ax.barh([r["finding"] for r in rows], [r["auroc"] for r in rows], color="#4a78b5")
        ax.axvline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_xlim(0.3, 1.0)
        ax.set_xlabel("zero-shot AUROC")
        run.save_figure("zero_shot_auroc", fig, f"Zero-shot AUROC per finding on split {results.meta.get('eval_split')} "
                        f"({results.meta.get('eval_n')} images; dashed: chance 0.5).")  # fmt: skip
    kept = [r for r in results.tables.get("kept_fraction_per_finding", []) if r["kept_fraction"] is not None]
    if kept:
        scores = ev.get("scores")
        labels = findings = None
        if scores is not None and pairs is not None and test_idx is not None:
            findings = list(ev.get("findings") or pairs.findings)
            labels = pairs.labels[np.asarray(test_idx)][:, [pairs.findings.index(f) for f in findings]]
        kf = results.metrics.get("kept_fraction")
        fig = kept_and_roc_figure(kept, kf.value if kf else None, scores if labels is not None else None, labels,
                                  findings or [])  # fmt: skip
        run.save_figure("kept_fraction_and_roc", fig, (
            "Left: the fraction of each finding's training positives that the prototype curator kept (dashed: "
            "the overall kept fraction; bars to its right are enriched). Right: zero-shot ROC curves of the "
            "findings with most test positives (dashed: chance)."))  # fmt: skip


def save_final(run: Run, model: Any, cfg: Any, pairs: Any, summary: dict[str, Any], seconds: float) -> Path:
    """``<run>/checkpoints/final``: the model directory with its model card."""
    from medfm.core.cards import Capabilities, Training, TrainingData, card_from_run, method_facts

    synthetic = not cfg.data.manifest
    data = TrainingData(
        size=summary["pool"], unit="image-report pairs", modalities=["CXR", "text"], body_regions=["chest"],
        annotation="report-derived", sources=[pairs.source], synthetic=synthetic,
        statistics={"kept_pairs": summary["kept"], "kept_fraction": round(summary["kept_fraction"], 4),
                    "positives": pairs.positives(), "dropped_rows": pairs.dropped},
    )  # fmt: skip
    training = Training(
        paradigm=["vision-language-alignment", "self-supervised-contrastive"],
        objective=f"symmetric InfoNCE (open_clip ClipLoss) on {'prototype-curated' if cfg.train.arm == 'curated' else cfg.train.arm} pairs",
        architecture=model.describe(), base_model=cfg.model.init_from or "scratch", steps=summary["steps"],
        samples_seen=int(summary["compute"]["fwd"]), precision=cfg.train.mixed_precision,
    )  # fmt: skip
    caps = Capabilities(
        supported=["zero-shot", "retrieval", "linear-probe"],
        inputs="frontal chest radiograph (greyscale) and/or report text",
        outputs=f"{model.embed_dim}-d L2-normalised image/report embeddings; zero-shot finding probabilities",
    )  # fmt: skip
    card = card_from_run(
        run.dir, name=f"chexficient-{cfg.train.arm}", method=METHOD, data=data, training=training, capabilities=caps,
        **method_facts(__package__, "model", data="synthetic phantoms" if synthetic else f"{pairs.source} only"),
        model=model, seconds=seconds,
    )  # fmt: skip
    return model.save_pretrained(run.dir / "checkpoints" / "final", card=card)


# ----------------------------------------------------------------------------------------------------------------------
# evaluate / embed / curate / report


def _load_model(model_dir: str, device: str) -> Any:
    from medfm.methods.chexficient.model import CheXficientModel

    return CheXficientModel.from_pretrained(model_dir, device=device)


def run_evaluate(cfg: Any) -> int:
    _check_manifest(cfg)
    run = Run(METHOD, "evaluate", cfg)
    if cfg.dry_run:
        return run.plan([f"model: {cfg.model_dir}", *_data_plan(cfg), f"split: {cfg.eval.split}"])
    with run:
        from medfm.core.report import render_run_report
        from medfm.methods.chexficient.data import load_pairs

        model = _load_model(cfg.model_dir, resolve_device(cfg.device))
        pairs = load_pairs(cfg.data, model.image_size, limit=cfg.limit)
        results = run.new_results()
        results.meta.update(model_dir=cfg.model_dir, data_source=pairs.source)
        ev = _evaluate_into(results, model, pairs, cfg.eval, cfg.seed)
        _plots(run, ev, results, pairs, ev.get("test_idx"))
        run.save_results(results)
        render_run_report(run.dir, title="CheXficient evaluate")
    print(run.dir / "report.html")
    return 0


def run_embed(cfg: Any) -> int:
    _check_manifest(cfg)
    run = Run(METHOD, "embed", cfg)
    if cfg.dry_run:
        return run.plan([f"model: {cfg.model_dir}", *_data_plan(cfg), f"output: {run.dir}/embeddings.npz"])
    with run:
        from medfm.core.files import atomic_path
        from medfm.methods.chexficient.data import load_pairs

        model = _load_model(cfg.model_dir, resolve_device(cfg.device))
        pairs = load_pairs(cfg.data, model.image_size, limit=cfg.limit)
        idx = pairs.split_index(cfg.split)
        zi = np.concatenate([model.encode_images(pairs.images(idx[i : i + cfg.batch_size])).numpy()
                             for i in range(0, len(idx), cfg.batch_size)]) if len(idx) else np.zeros((0, model.embed_dim))  # fmt: skip
        zt = model.encode_texts([pairs.reports[i] for i in idx], batch_size=cfg.batch_size).numpy()
        with atomic_path(run.dir / "embeddings.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, ids=np.array([pairs.ids[i] for i in idx]), image=zi.astype(np.float32),
                     text=zt.astype(np.float32))  # fmt: skip
        results = run.new_results()
        results.add("pairs_embedded", len(idx))
        results.meta.update(model_dir=cfg.model_dir, dim=model.embed_dim, file="embeddings.npz")
        run.save_results(results)
    print(run.dir / "embeddings.npz")
    return 0


def run_curate(cfg: Any) -> int:
    _check_manifest(cfg)
    run = Run(METHOD, "curate", cfg)
    c = cfg.curator
    if cfg.dry_run:
        return run.plan([f"model: {cfg.model_dir or 'fresh model from --model.*'}", *_data_plan(cfg),
                         f"selection: global batch {cfg.batch_size}, K={c.num_prototypes}, M={c.max_per_cluster}",
                         f"outputs: {run.dir}/kept.csv, curation.jsonl, curated manifest"])  # fmt: skip
    with run:
        import time

        from medfm.core.report import render_run_report
        from medfm.methods.chexficient.data import load_pairs
        from medfm.methods.chexficient.engine import build_model, curate_stream, make_curator

        device = resolve_device(cfg.device)
        model = (
            _load_model(cfg.model_dir, device)
            if cfg.model_dir
            else build_model(cfg.model, c.num_prototypes).to(device).eval()
        )
        pairs = load_pairs(cfg.data, model.image_size, limit=cfg.limit)
        idx = pairs.split_index(cfg.split) if cfg.split else np.arange(len(pairs))
        if len(idx) == 0:
            idx = np.arange(len(pairs))
        g = np.random.default_rng(cfg.seed)
        order = idx[g.permutation(len(idx))]
        eb = cfg.embed_batch_size

        def stream():
            for i in range(0, len(order), eb):
                rows = order[i : i + eb]
                yield (rows.tolist(), model.encode_images(pairs.images(rows)),
                       model.encode_texts([pairs.reports[j] for j in rows]))  # fmt: skip

        t0 = time.perf_counter()
        res = curate_stream(stream(), make_curator(c, cfg.seed), cfg.batch_size, c.warmup_batches, record_bands=True)
        secs = time.perf_counter() - t0
        _write_curation(run, cfg, pairs, res)
        results = run.new_results()
        results.add("kept_fraction", len(res.kept_ids) / max(1, res.n_seen), n=res.n_seen)
        results.add("pairs_per_second", res.n_seen / max(secs, 1e-9), note="embedding + selection")
        results.tables["kept_fraction_per_finding"] = kept_per_finding(pairs, np.asarray(order), res.kept_ids)
        results.tables["bands"] = [{"band": b, "pairs": sum(r["band"] == b for r in res.bands)}
                                   for b in ("support", "central_kept", "central_dropped", "outlier")]  # fmt: skip
        run.save_results(results)
        render_run_report(run.dir, title="CheXficient curate")
    print(run.dir / "kept.csv")
    return 0


def _write_curation(run: Run, cfg: Any, pairs: Any, res: Any) -> None:
    from medfm.core.files import atomic_write_text

    kept = sorted(res.kept_ids)
    atomic_write_text(run.dir / "kept.csv", "id\n" + "".join(f"{pairs.ids[i]}\n" for i in kept))
    run.write_samples([{**b, "id": pairs.ids[b["id"]]} for b in res.bands], name="curation.jsonl")
    if cfg.data.manifest:
        from medfm.data.manifests import ManifestColumns, read_report_manifest, write_report_manifest

        src = Path(cfg.data.manifest)
        cols = ManifestColumns(id=cfg.data.id_column, image=cfg.data.image_column, report=cfg.data.report_column)
        keep_ids = {pairs.ids[i] for i in kept}
        records = [r for r in read_report_manifest(src, cols) if r.id in keep_ids]
        write_report_manifest(run.dir / f"curated_manifest{src.suffix}", records, cols)
