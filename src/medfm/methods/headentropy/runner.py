"""Verbs of ``medfm headentropy``: extract, fit, evaluate (each writes a run directory)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from medfm.core.errors import DataError, UsageError
from medfm.core.runs import Run

log = logging.getLogger(__name__)

METHOD = "headentropy"


def _backend(spec: str, device: str) -> Any:
    """The backend for a spec; ``hf:default`` on one device is shared within the process."""
    from medfm.backends import make_backend, require_capabilities

    if spec in ("hf:default", "hf:"):
        from medfm.backends.hf import shared_backend
        from medfm.core.runs import resolve_device

        backend = shared_backend("default", device=resolve_device(device))
    else:
        backend = make_backend(spec, device=device) if spec.startswith("hf:") else make_backend(spec)
    require_capabilities(backend, {"attentions"}, purpose="Head Entropy")
    return backend


def _check_attention_backend_spec(spec: str) -> None:
    """Fail before any work for backends that cannot return attentions (no model is loaded for this)."""
    kind = spec.partition(":")[0]
    if kind in ("openai", "scripted"):
        raise UsageError(f"backend {spec!r} cannot return attentions; Head Entropy needs a local model "
                         "(e.g. --backend hf:default)")  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# extract


def run_extract(cfg: Any) -> int:
    """Generate, label and cache features for one dataset into ``<run>/features/``."""
    from medfm.methods.headentropy.extract import FeatureStore, extract_items
    from medfm.methods.headentropy.qa import load_qa

    _check_attention_backend_spec(cfg.backend)
    if cfg.chunk_size < 1 or cfg.max_new_tokens < 1:
        raise UsageError("--chunk_size and --max_new_tokens must be >= 1")
    items = load_qa(cfg.data, cfg.format, limit=cfg.limit, domain=cfg.name, seed=cfg.seed)
    if cfg.name:
        for it in items:
            it.domain = cfg.name
    run = Run(METHOD, "extract", cfg)
    n_chunks = (len(items) + cfg.chunk_size - 1) // cfg.chunk_size
    if cfg.dry_run:
        return run.plan([f"data: {cfg.data} ({len(items)} items, domain {items[0].domain})",
                         f"backend: {cfg.backend}, greedy, {cfg.max_new_tokens} new tokens",
                         f"features: {run.dir / 'features'} in {n_chunks} chunk(s) of {cfg.chunk_size}"])  # fmt: skip
    with run:
        backend = _backend(cfg.backend, cfg.device)
        store = FeatureStore(run.dir / "features")
        store.init({"data": cfg.data, "format": cfg.format, "domain": items[0].domain, "model": backend.model_name,
                    "max_new_tokens": cfg.max_new_tokens, "prefill": cfg.prefill, "seed": cfg.seed,
                    "label_mode": cfg.label_mode, "features_from": "generation pass",
                    "medmcqa_last_sentence": cfg.medmcqa_last_sentence, "n_items": len(items),
                    "layers": int(backend.model.config.num_hidden_layers),
                    "heads": int(backend.model.config.num_attention_heads)})  # fmt: skip
        from medfm.core.runs import progress

        done = 0
        for k in progress(range(n_chunks), desc="extract", total=n_chunks):
            if store.chunk_done(k):
                done += 1
                continue
            chunk = items[k * cfg.chunk_size : (k + 1) * cfg.chunk_size]
            arrays, rows = extract_items(backend, chunk, cfg.max_new_tokens, cfg.query_block,
                                         cfg.medmcqa_last_sentence, cfg.prefill, cfg.label_mode)  # fmt: skip
            store.write_chunk(k, arrays, rows)
            run.metrics.log(k, items=len(rows), correct=sum(r.get("label", 0) for r in rows))
        if done:
            log.info("resumed: %d of %d chunks were already extracted", done, n_chunks)
        arrays, rows = store.load()
        if not rows:
            raise DataError(f"{cfg.data}: no item could be extracted (all skipped; see {run.dir / 'log.txt'})")
        results = run.new_results()
        import numpy as np

        from medfm.core.metrics import mean_ci

        y = np.array([r["label"] for r in rows])
        results.add("accuracy", mean_ci(y, seed=cfg.seed))
        results.add("items", float(len(rows)), note=f"of {len(items)} requested")
        results.add("empty_generations", float(sum(r["empty_generation"] for r in rows)), higher_is_better=False)
        results.add("with_certainty", float(np.isfinite(arrays["certainty"]).mean()))
        results.add("format_ok", float(np.mean([r.get("format_ok", False) for r in rows])),
                    note="generations in the requested Answer/Certainty format")  # fmt: skip
        from medfm.methods.headentropy.qa import LABEL_MODES

        for mode in LABEL_MODES:
            if all(f"label_{mode}" in r for r in rows):
                results.add(f"accuracy_{mode}", float(np.mean([r[f"label_{mode}"] for r in rows])), n=len(rows))
        if all("label_exact" in r for r in rows):
            disagree = np.mean([len({r[f"label_{m}"] for m in LABEL_MODES}) > 1 for r in rows])
            results.add("label_disagreement", float(disagree), n=len(rows), higher_is_better=False,
                        note="items whose exact / contains / token-F1 labels differ")  # fmt: skip
        results.meta.update(store.meta() or {})
        results.tables["samples"] = [{k: r[k] for k in ("id", "prediction", "answers", "label")} for r in rows[:50]]
        run.save_results(results)
        all_rows = [json.loads(line) for c in sorted(store.dir.glob("chunk-*.jsonl"))
                    for line in c.read_text().splitlines() if line.strip()]  # fmt: skip
        run.write_samples(all_rows)
        from medfm.core.report import render_run_report

        render_run_report(run.dir, title=f"Head Entropy features: {items[0].domain}")
        print(f"extracted {len(rows)} items of {items[0].domain} (accuracy {y.mean():.3f}) -> {run.dir}")
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# shared loading for fit / evaluate


def load_domain(folder: str | Path, test_fraction: float, seed: int) -> Any:
    """An extract run (or its features/ folder) as a :class:`~medfm.methods.headentropy.probe.Domain`."""
    import numpy as np

    from medfm.methods.headentropy.extract import FeatureStore
    from medfm.methods.headentropy.probe import Domain, split_indices

    folder = Path(folder)
    feat = folder / "features" if (folder / "features").is_dir() else folder
    if not feat.is_dir():
        raise DataError(f"{folder}: not an extract run directory (no features/); run `medfm headentropy extract`")
    store = FeatureStore(feat)
    arrays, rows = store.load()
    meta = store.meta() or {}
    y = np.array([r["label"] for r in rows], dtype=int)
    if len(y) < 4:
        raise DataError(f"{folder}: only {len(y)} extracted items; need at least 4 for a train/test split")
    if not 0 < test_fraction < 1:
        raise UsageError(f"--test_fraction must be in (0, 1), got {test_fraction}")
    tr, te = split_indices(y, test_fraction, seed)
    return Domain(str(meta.get("domain") or folder.name), arrays, y, tr, te)


def _scorer(name: str) -> Any:
    from medfm.methods.headentropy.probe import SCORERS

    if name not in SCORERS:
        raise UsageError(f"unknown scorer {name!r}; choose from {', '.join(SCORERS)}")
    return SCORERS[name]


# ----------------------------------------------------------------------------------------------------------------------
# fit


def run_fit(cfg: Any) -> int:
    """Fit one trained scorer on an extract run's train split; save the probe as JSON with its held-out AUROC."""
    import dataclasses

    scorer = _scorer(cfg.scorer)
    if not scorer.trained:
        raise UsageError(f"scorer {cfg.scorer!r} is training-free; fit one of the trained scorers")
    if cfg.C is not None:
        scorer = dataclasses.replace(scorer, C=float(cfg.C))
    dom = load_domain(cfg.features, cfg.test_fraction, cfg.seed)
    run = Run(METHOD, "fit", cfg)
    if cfg.dry_run:
        return run.plan([f"features: {cfg.features} ({len(dom.y)} items, {len(dom.train)} train)",
                         f"probe: {scorer.label}"])  # fmt: skip
    with run:
        from medfm.core.files import atomic_write_json
        from medfm.methods.headentropy.probe import auroc_metrics, fit_probe, probe_score, probe_to_dict

        try:
            probe = fit_probe(dom.arrays[scorer.feature][dom.train], dom.y[dom.train], C=scorer.C)
        except ValueError as exc:
            raise DataError(f"{cfg.features}: {exc}") from None
        score = probe_score(probe, dom.arrays[scorer.feature][dom.test])
        results = run.new_results()
        for k, m in auroc_metrics(dom.y[dom.test], score, seed=cfg.seed, n_resamples=cfg.bootstrap).items():
            results.add(k, m)
        coef = probe[-1].coef_[0]
        results.add("nonzero_weights", float((coef != 0).sum()), note=f"of {len(coef)} (L1)")
        doc = {"scorer": scorer.name, "feature": scorer.feature, "domain": dom.name, **probe_to_dict(probe)}
        atomic_write_json(run.path("checkpoints", "probe.json"), doc)
        results.meta.update(scorer=scorer.name, domain=dom.name, probe=str(run.path("checkpoints", "probe.json")))
        run.save_results(results)
        _write_probe_card(run, cfg, scorer, dom, probe)
        _plot_heads(run, {dom.name: probe}, scorer.name, cfg.features)
        from medfm.core.report import render_run_report

        render_run_report(run.dir, title=f"Head Entropy probe: {scorer.name} on {dom.name}")
        print(f"{scorer.name} on {dom.name}: held-out AUROC {results.metrics['auroc'].format()} -> {run.dir}")
    return 0


def _write_probe_card(run: Run, cfg: Any, scorer: Any, dom: Any, probe: Any) -> None:
    """Model card (README.md + card.json) beside checkpoints/probe.json, filled from the run."""
    from medfm.core.cards import Capabilities, Training, TrainingData, card_from_run, method_facts
    from medfm.core.files import atomic_write_json, atomic_write_text

    clf = probe[-1]
    shape = _heads_shape(cfg.features)
    heads = f" over {shape[0]} layers x {shape[1]} heads" if shape else ""
    card = card_from_run(
        run.dir,
        name=f"headentropy-{scorer.name}-{dom.name}",
        method=METHOD,
        data=TrainingData(
            size=len(dom.train),
            unit="question-answer generations",
            modalities=["text"],
            annotation="automatic",
            sources=[str(cfg.features)],
            statistics={
                "domain": dom.name,
                "train_accuracy": float(dom.y[dom.train].mean()),
                "test_items": len(dom.test),
            },
        ),
        training=Training(
            paradigm=["supervised"],
            architecture=f"StandardScaler + L1 logistic regression{heads}",
            objective=f"predict exact-match correctness from {scorer.feature} features (C={scorer.C})",
            parameters=int(clf.coef_.size + clf.intercept_.size),
            steps=int(max(clf.n_iter_)),
            samples_seen=len(dom.train),
            base_model="scratch",
        ),
        capabilities=Capabilities(
            supported=["classification"],
            inputs=f"{scorer.feature} feature vector",
            outputs="probability that the model's answer is correct",
        ),
        **method_facts(__package__, "probe"),
        setting="in-distribution",
    )
    atomic_write_json(run.path("checkpoints", "card.json"), card.to_json())
    atomic_write_text(run.path("checkpoints", "README.md"), card.to_markdown())


def _heads_shape(features_dir: str | Path) -> tuple[int, int] | None:
    from medfm.methods.headentropy.extract import FeatureStore

    folder = Path(features_dir)
    meta = FeatureStore(folder / "features" if (folder / "features").is_dir() else folder).meta() or {}
    if "layers" in meta and "heads" in meta:
        return int(meta["layers"]), int(meta["heads"])
    return None


def _plot_heads(run: Run, probes: dict[str, Any], scorer: str, features_dir: str | Path) -> None:
    """Heat map (layers x heads) of the absolute probe weights per training domain."""
    shape = _heads_shape(features_dir)
    probes = {k: v for k, v in probes.items() if v is not None}
    if shape is None or not probes:
        return
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n_layers, n_heads = shape
    fig, axes = plt.subplots(1, len(probes), figsize=(2.2 + 1.8 * len(probes), 4), squeeze=False)
    for ax, (name, probe) in zip(axes[0], probes.items()):
        coef = probe[-1].coef_[0]
        if coef.size != n_layers * n_heads:
            continue
        im = ax.imshow(abs(coef).reshape(n_layers, n_heads), aspect="auto", cmap="viridis", origin="lower")
        ax.set_title(f"{scorer}\ntrained on {name}", fontsize=8)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    run.save_figure(f"heads_{scorer}", fig, (
        f"|coefficient| of the L1 probe on {scorer} features per (layer, head), one panel per training domain: the "
        "heads the probe relies on. Brighter = larger weight (standardised features)."))  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# evaluate


def run_evaluate(cfg: Any) -> int:
    """In-domain and transfer AUROC/PR-AUC with CIs of every scorer; paired differences to the reference."""
    import numpy as np

    if not cfg.features:
        raise UsageError("--features needs at least one extract run directory")
    scorers = [_scorer(s) for s in cfg.scorers]
    _scorer(cfg.reference)
    domains = [load_domain(f, cfg.test_fraction, cfg.seed) for f in cfg.features]
    if cfg.crossfit == 1:
        raise UsageError("--crossfit needs at least 2 folds (0 = one train/test split)")
    if cfg.crossfit > 1:
        from medfm.methods.headentropy.probe import crossfit_domain

        domains = [crossfit_domain(d, cfg.crossfit) for d in domains]
    names = [d.name for d in domains]
    if len(set(names)) != len(names):
        raise UsageError(f"datasets must have distinct names, got {names}; set --name when extracting")
    run = Run(METHOD, "evaluate", cfg)
    if cfg.dry_run:
        split = (lambda d: f"{cfg.crossfit}-fold cross-fitting") if cfg.crossfit > 1 else (
            lambda d: f"{len(d.train)} train / {len(d.test)} test")  # fmt: skip
        return run.plan([f"{d.name}: {len(d.y)} items ({split(d)}), accuracy {d.y.mean():.3f}" for d in domains]
                        + [f"scorers: {', '.join(cfg.scorers)}; reference {cfg.reference}"])  # fmt: skip
    with run:
        from medfm.core.results import Metric
        from medfm.methods.headentropy.probe import C_GRID, transfer_matrix

        rows, extras = transfer_matrix(domains, scorers, seed=cfg.seed, n_resamples=cfg.bootstrap,
                                       reference=cfg.reference, c_grid=C_GRID if cfg.inner_cv else None)  # fmt: skip
        results = run.new_results()
        for r in rows:
            group = f"{r['train']}" if r["in_domain"] else f"{r['train']}->{r['test']}"
            ci = (r["auroc_lo"], r["auroc_hi"]) if r["auroc_lo"] is not None else None
            results.add(f"{r['method']}_auroc", Metric(r["auroc"], ci, r["n"]), group=group)
            if r.get("diff_vs_ref") is not None:
                dci = (r["diff_lo"], r["diff_hi"]) if r["diff_lo"] is not None else None
                results.add(f"{r['method']}_minus_{cfg.reference}", Metric(r["diff_vs_ref"], dci, r["n"],
                            note="paired bootstrap AUROC difference"), group=group)  # fmt: skip
        for s in scorers:
            ins = [r["auroc"] for r in rows if r["method"] == s.name and r["in_domain"] and r["auroc"] is not None]
            ood = [r["auroc"] for r in rows if r["method"] == s.name and not r["in_domain"] and r["auroc"] is not None]
            if ins:
                results.add(f"{s.name}_auroc_in_domain_mean", float(np.mean(ins)), n=len(ins))
            if ood:
                results.add(f"{s.name}_auroc_transfer_mean", float(np.mean(ood)), n=len(ood))
        results.tables["auroc"] = rows
        results.meta.update(domains={d.name: {"n": len(d.y), "accuracy": float(d.y.mean())} for d in domains},
                            reference=cfg.reference, crossfit=cfg.crossfit, inner_cv=cfg.inner_cv)  # fmt: skip
        run.save_results(results)
        _plot_roc(run, extras["scores"], domains)
        _plot_heads(run, {d: p.get("head_entropy") for d, p in extras["probes"].items()}, "head_entropy",
                    cfg.features[0])  # fmt: skip
        from medfm.core.report import render_run_report

        render_run_report(run.dir, title="Head Entropy: correctness prediction")
        for s in scorers:
            m = results.metrics.get(f"{s.name}_auroc_in_domain_mean")
            t = results.metrics.get(f"{s.name}_auroc_transfer_mean")
            text = f"in-domain {m.value:.3f}" if m is not None and m.value is not None else "in-domain n/a"
            if t is not None and t.value is not None:
                text += f"  transfer {t.value:.3f}"
            print(f"{s.name:<26} {text}")
        print(f"-> {run.dir}")
    return 0


def _plot_roc(run: Run, scores: dict[tuple[str, str, str], tuple[Any, Any]], domains: list[Any]) -> None:
    """In-domain ROC curves, one panel per dataset, one line per scorer."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, axes = plt.subplots(1, len(domains), figsize=(4 * len(domains), 3.8), squeeze=False)
    for ax, d in zip(axes[0], domains):
        for (method, src, dst), (y, s) in scores.items():
            if src == dst == d.name and len(set(y.tolist())) == 2:
                fpr, tpr, _ = roc_curve(y, s)
                ax.plot(fpr, tpr, lw=1.2, label=method)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_title(f"in-domain: {d.name}", fontsize=9)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    run.save_figure("roc_in_domain", fig, (
        "In-domain ROC curves of answer-correctness prediction on each domain's test split (every item, scored out of "
        "fold, with --crossfit), one line per scorer "
        "(probes and training-free scores, with the confound baselines); dotted: chance. A panel without lines "
        "has a test split with a single class."))  # fmt: skip
