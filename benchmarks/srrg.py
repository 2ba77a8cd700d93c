"""SRRG benchmark: SRR-BERT-style classifier vs the lexicon and a TF-IDF baseline, structuring, scoring speed.

Measured side by side in one run, every trained arm through the ``medfm srrg train`` verb:

* the MiniLM finding classifier (SRR-BERT recipe at CPU scale), one run per seed on silver sentences
  (phantoms of generator seed 1, radlabels' first half with its gold statuses, 1,500 IU reports), trained in
  epochs with early stopping on a held-out 10 % of the training reports and per-label thresholds tuned there;
* the TF-IDF + logistic-regression baseline on the same sentences and the same validation split per seed;
* the lexicon labeller (no training);

all scored on the same held-out reports: radlabels' second half against its annotated labels (independent of
the lexicon: the primary evaluation) and phantoms of generator seed 1001 (secondary: written in the lexicon's
own vocabulary). Then the lexicon-driven offline structurer on every IU report (format validity, label recall)
and F1-SRR-BERT scoring throughput of the trained classifier over warm repetitions. Gold labels used for
evaluation are never used for training. Each seed's trained models are cached (benchmarks/cache) keyed by
recipe and code, and a killed run resumes inside its cache folder from the verb's checkpoints.

Claims are declared in benchmarks/claims/srrg.yaml. Trained arms are compared over ``--seeds`` training runs
with seeds-then-reports bootstrap CIs.

    nice -n 10 .venv/bin/python benchmarks/srrg.py            # ~1.5 h on 2 CPU cores (3 seeds x 15 epochs); minutes on one GPU
    .venv/bin/python benchmarks/srrg.py --device cuda
    .venv/bin/python benchmarks/srrg.py --quick               # CI-size smoke run, nothing written to results/
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np

from medfm.core.bench import Benchmark
from medfm.methods.srrg.thresholds import micro_f1

log = logging.getLogger("benchmarks.srrg")


def paired_gap(per_seed: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_resamples: int) -> tuple[float, tuple]:
    """Micro-F1 gap arm A - arm B on the same reports, ``per_seed`` = (gold, A, B) per seed; seeds-then-reports
    bootstrap: ``(gap, 95 % CI)``."""
    from medfm.core.metrics import hierarchical_bootstrap

    gap, ci, _ = hierarchical_bootstrap(lambda t, a, b: micro_f1(t, a) - micro_f1(t, b), per_seed,
                                        n_resamples=n_resamples, seed=0)  # fmt: skip
    return gap, ci


def plot_curves(runs: dict[str, list[dict[str, object]]], path: Path) -> Path:
    """Validation micro F1 (tuned thresholds) per epoch of every MiniLM seed, with each seed's TF-IDF validation
    score as a dashed line: the convergence the claims rest on."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from medfm.core.files import atomic_write_bytes
    from medfm.core.report import figure_png

    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    for k, r in enumerate(runs["minilm"]):
        curve = r.get("curve") or []
        line = ax.plot([c["epoch"] for c in curve], [c["val_micro_f1_tuned"] for c in curve], marker="o", ms=3,
                       lw=1.3, label=f"MiniLM seed {r['seed']}")[0]  # fmt: skip
        tf = runs["tfidf"][k] if k < len(runs["tfidf"]) else {}
        if tf.get("best_val_micro_f1") is not None:
            ax.axhline(float(tf["best_val_micro_f1"]), color=line.get_color(), ls="--", lw=0.9)
    ax.plot([], [], "k--", lw=0.9, label="TF-IDF (same split)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation micro F1 (163 labels, tuned cuts)")
    ax.set_title("SRR-BERT (MiniLM) training curves", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_write_bytes(path, figure_png(fig))
    plt.close(fig)
    return path


def labelled_sets(bench: Benchmark) -> dict[str, list]:
    """Held-out evaluation reports: phantoms (generator seed 1001) and radlabels' second half."""
    from medfm.methods.srrg.data import phantom_texts, radlabels_texts

    rl = radlabels_texts()
    held = rl[round(len(rl) * 0.5) :]
    return {"phantom": phantom_texts(bench.size(200, 40), 1001), "radlabels": held[: bench.size(None, 100)]}


def matrices(classifier: object, texts: list, space: str) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Gold and predicted multi-hot matrices of ``texts`` in ``space`` (evaluable leaves only) and their F1s."""
    from medfm.methods.srrg.data import predict_reports, restrict
    from medfm.methods.srrg.labels import findings_matrix
    from medfm.methods.srrg.metric import findings_label_f1

    ev = texts[0].evaluable
    pred = [restrict(x, ev) for x in predict_reports(texts, classifier)]
    gold = [restrict(t.gold, ev) for t in texts]
    yt = findings_matrix(gold, space).astype(np.int64)
    yp = findings_matrix(pred, space).astype(np.int64)
    return yt, yp, findings_label_f1(pred, gold, space)


def train_arm(bench: Benchmark, model: str, seed: int, recipe: dict[str, object]) -> tuple[object, dict]:
    """Train one arm through ``medfm srrg train`` (cached per recipe, code and seed); ``(classifier, results)``."""
    from medfm.methods.srrg.classifier import load_classifier

    opts = [f"--{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in recipe.items() if v is not None]
    opts += ["--model", model, "--seed", str(seed)]

    def build(folder):
        bench.run_verb("srrg", "train", *opts, output_dir=folder / "run")

    folder = bench.cached(f"srrg-{model}-seed{seed}", {"options": opts, "device": bench.args.device},
                          ["medfm.methods.srrg", "medfm.core.training"], build)  # fmt: skip
    results = json.loads((folder / "run" / "results.json").read_text())
    return load_classifier(str(folder / "run" / "checkpoints" / "final"), device=bench.args.device), results


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark("srrg", __doc__)
    bench.parser.add_argument("--epochs", type=int, default=15, help="most epochs per training run (early stopping "
                              "may end sooner)")
    bench.parser.add_argument("--patience", type=int, default=2, help="epochs without validation gain before stopping")
    bench.parser.add_argument("--batch_size", type=int, default=32)
    bench.parser.add_argument("--max_length", type=int, default=32, help="tokens per sentence (p95 is ~25)")
    bench.parser.add_argument(
        "--iu_train", type=int, default=1500, help="IU reports used for silver training sentences"
    )
    bench.parser.add_argument("--reps", type=int, default=15, help="warm repetitions of the throughput measurement (the CI is over them)")
    bench.parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of every CI")
    args = bench.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("transformers", "accelerate", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    from medfm.core.metrics import bootstrap_ci, hierarchical_bootstrap, mean_ci
    from medfm.data.assets import iu_reports
    from medfm.methods.srrg.lexicon import LexiconLabeller
    from medfm.methods.srrg.metric import f1_srr_bert
    from medfm.methods.srrg.preservation import content_preservation
    from medfm.methods.srrg.structurer import OfflineStructurer

    reps = bench.size(args.reps, 2)
    nb = bench.size(args.bootstrap, 200)
    # the verb's sources reproduce the training set: phantoms seed 1, radlabels' first half, IU silver sentences
    recipe: dict[str, object] = {
        "sources": ["phantom", "radlabels", "iu"], "phantom_n": bench.size(400, 100), "phantom_seed": 1,
        "radlabels_train_fraction": 0.5, "iu_limit": bench.size(args.iu_train, 200),
        "epochs": bench.size(args.epochs, 1), "max_steps": bench.size(None, 10), "patience": args.patience,
        "batch_size": args.batch_size, "max_length": args.max_length, "val_fraction": 0.1,
        "eval_phantom_n": bench.size(200, 20),
    }  # fmt: skip
    metrics: dict[str, object] = {"recipe": recipe, "seeds": bench.seeds}
    lex = LexiconLabeller()
    sets = labelled_sets(bench)
    spaces = ("leaves", "leaves_with_statuses")
    # lexicon (deterministic) on the held-out sets, once
    lex_m: dict[str, dict[str, tuple]] = {
        d: {sp: matrices(lex, texts, sp) for sp in spaces} for d, texts in sets.items()
    }
    metrics["classifier_lexicon"] = {f"{d}/{sp}/{avg}_f1": v for d in sets for sp in spaces
                                     for avg, v in lex_m[d][sp][2].items()}  # fmt: skip
    arms: dict[str, list[dict[str, dict[str, tuple]]]] = {"minilm": [], "tfidf": []}
    runs: dict[str, list[dict[str, object]]] = {"minilm": [], "tfidf": []}
    clf0 = None
    for seed in bench.seeds:
        for model, arm in (("srr-bert", "minilm"), ("tfidf", "tfidf")):
            t0 = time.perf_counter()
            clf, res = train_arm(bench, model, seed, recipe)
            if arm == "minilm" and clf0 is None:
                clf0 = clf
            m = {d: {sp: matrices(clf, texts, sp) for sp in spaces} for d, texts in sets.items()}
            arms[arm].append(m)
            info = {"seed": seed, "seconds_incl_cache": round(time.perf_counter() - t0, 1),
                    "train_sentences": res["meta"].get("train_sentences"),
                    "val_sentences": res["meta"].get("val_sentences"),
                    "median_threshold": res["meta"].get("median_threshold"),
                    "held_out": {f"{d}/{sp}/{avg}_f1": v for d in sets for sp in spaces
                                 for avg, v in m[d][sp][2].items()}}  # fmt: skip
            met = res.get("metrics", {})
            for k in ("epochs_run", "best_val_micro_f1", "final_loss", "C"):
                if k in met:
                    info[k] = met[k]["value"] if isinstance(met[k], dict) else met[k]
            if "training_curve" in res.get("tables", {}):
                info["curve"] = res["tables"]["training_curve"]
            if res.get("tables", {}).get("C_selection"):  # TF-IDF: validation F1 at the chosen C
                info["best_val_micro_f1"] = max(r["val_micro_f1"] for r in res["tables"]["C_selection"])
            runs[arm].append(info)
            log.info("seed %d %s: %s", seed, arm, {k: v for k, v in info.items() if k not in ("curve", "held_out")})
    metrics["runs"] = runs
    for arm in arms:
        per = [r["held_out"] for r in runs[arm]]
        metrics[f"classifier_{arm}"] = {k: float(np.mean([p[k] for p in per])) for k in per[0]}

    seeds_n = len(bench.seeds)
    epochs = [r.get("epochs_run") for r in runs["minilm"]]
    for data in ("phantom", "radlabels"):
        clf_m = arms["minilm"]
        yt = clf_m[0][data]["leaves"][0]
        point, ci, _ = hierarchical_bootstrap(micro_f1, [(m[data]["leaves"][0], m[data]["leaves"][1]) for m in clf_m],
                                              n_resamples=nb, seed=0)  # fmt: skip
        lev = {a: float(np.mean([micro_f1(m[data]["leaves"][0], m[data]["leaves"][1]) for m in arms[a]]))
               for a in arms}  # fmt: skip
        lev["lexicon"] = micro_f1(lex_m[data]["leaves"][0], lex_m[data]["leaves"][1])
        macro = metrics["classifier_minilm"][f"{data}/leaves/macro_f1"]
        bench.claim(f"leaf_micro_f1_{data}", point, ci=ci, n=len(yt), seeds=seeds_n,
                    levels={"classifier": point, "tfidf": lev["tfidf"], "lexicon": lev["lexicon"]},
                    note=f"macro {macro:.3f}; TF-IDF {lev['tfidf']:.3f}, lexicon {lev['lexicon']:.3f}; MiniLM trained "
                    f"{epochs} epochs per seed (early stopping on validation micro F1, tuned thresholds)")  # fmt: skip

    # classifier vs lexicon and vs TF-IDF on radlabels' annotated labels, paired over the same reports
    sp = "leaves_with_statuses"
    y_lex = lex_m["radlabels"][sp][1]
    lex_f1 = micro_f1(lex_m["radlabels"][sp][0], y_lex)
    clf_f1 = float(np.mean([micro_f1(m["radlabels"][sp][0], m["radlabels"][sp][1]) for m in arms["minilm"]]))
    tf_f1 = float(np.mean([micro_f1(m["radlabels"][sp][0], m["radlabels"][sp][1]) for m in arms["tfidf"]]))
    diff, diff_ci = paired_gap([(m["radlabels"][sp][0], m["radlabels"][sp][1], y_lex) for m in arms["minilm"]], nb)
    bench.claim("classifier_beats_lexicon_radlabels", diff, baseline=lex_f1, ci=diff_ci, n=len(y_lex), seeds=seeds_n,
                levels={"classifier": clf_f1, "lexicon": lex_f1},
                note=f"classifier {clf_f1:.3f} vs lexicon {lex_f1:.3f}; the classifier learns from the lexicon's silver "
                "mentions with radlabels' gold statuses on its training half")  # fmt: skip
    diff, diff_ci = paired_gap([(m["radlabels"][sp][0], m["radlabels"][sp][1], t["radlabels"][sp][1])
                                for m, t in zip(arms["minilm"], arms["tfidf"])], nb)  # fmt: skip
    bench.claim("classifier_vs_tfidf_radlabels", diff, baseline=tf_f1, ci=diff_ci, n=len(y_lex), seeds=seeds_n,
                levels={"classifier": clf_f1, "tfidf": tf_f1},
                note=f"classifier {clf_f1:.3f} vs TF-IDF {tf_f1:.3f} (same sentences, validation split and threshold "
                "tuning per seed; seed s of one arm paired with seed s of the other)")  # fmt: skip

    # 2. structuring on all IU reports (offline structurer, lexicon-driven; deterministic)
    reports = [r for r in iu_reports() if r.text]
    st = OfflineStructurer(lex)
    t0 = time.perf_counter()
    outs = st.structure_many([(r.findings, r.impression) for r in reports], [r.text for r in reports])
    secs = time.perf_counter() - t0
    cp = content_preservation([r.text for r in reports], outs, lex)
    valid = mean_ci([float(o.valid) for o in outs], n_resamples=nb)
    recall = mean_ci([c["recall"] for c in cp], n_resamples=nb)
    exact = mean_ci([c["exact"] for c in cp], n_resamples=nb)
    metrics["structuring"] = {"n": len(reports), "validity": valid.value, "content_recall": recall.value,
                              "content_precision": float(np.mean([c["precision"] for c in cp])),
                              "content_exact": exact.value, "reports_per_second": len(reports) / secs}  # fmt: skip
    bench.claim("structuring_validity", valid.value, ci=valid.ci, n=len(reports),
                note=f"{sum(not o.valid for o in outs)} invalid of {len(reports)}")  # fmt: skip
    bench.claim(
        "content_preservation",
        recall.value,
        ci=recall.ci,
        n=len(reports),
        note=f"exact label-set match {exact.value:.3f}; checked with the lexicon that drives the structurer",
    )

    # 3. scoring throughput (impressions) of the first seed's classifier: one warm-up pass, then timed repetitions
    imps = [o.report.impression_text() for o in outs if o.report.impression][: bench.size(1000, 200)]
    cands = imps[1:] + imps[:1]
    speed: dict[str, list[float]] = {"minilm": [], "lexicon": []}
    for c in (clf0, lex):
        f1_srr_bert(cands[:32], imps[:32], c, space="leaves")  # warm-up
    for _ in range(reps):  # interleaved, so slow phases of a shared machine hit both alike
        for name, c in (("minilm", clf0), ("lexicon", lex)):
            t0 = time.perf_counter()
            f1_srr_bert(cands, imps, c, space="leaves")
            speed[name].append(len(imps) / (time.perf_counter() - t0))
    metrics["scoring_reports_per_second"] = speed
    metrics["scoring_impressions"] = len(imps)
    metrics["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    med, med_ci, _ = bootstrap_ci(np.median, np.array(speed["minilm"]), n_resamples=nb, seed=0)
    bench.claim("scoring_throughput", med, ci=med_ci, n=reps,
                note=f"{len(imps)} impressions per repetition on {args.device}; lexicon "
                f"{np.median(speed['lexicon']):.0f} reports/s; peak RSS {metrics['peak_rss_mb']:.0f} MB")  # fmt: skip
    out = bench.write(metrics)
    plot_curves(runs, out.with_name("srrg_training_curves.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
