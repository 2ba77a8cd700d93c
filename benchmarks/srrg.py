"""SRRG benchmark: SRR-BERT-style classifier vs the lexicon baseline, structuring on IU reports, scoring speed.

Measured side by side in one run: the MiniLM finding classifier, trained once per seed on silver sentences
(phantoms of generator seed 1, radlabels' first half, IU reports), and the lexicon labeller on the same held-out
reports (phantoms of generator seed 1001; radlabels' second half with its annotated labels); the lexicon-driven
offline structurer on every IU report (format validity, label recall); and F1-SRR-BERT scoring throughput of
the trained classifier over warm repetitions. Gold labels used for evaluation are never used for training.

Claims are declared in benchmarks/claims/srrg.yaml. Trained arms are compared over ``--seeds`` training runs
with seeds-then-reports bootstrap CIs.

    nice -n 10 .venv/bin/python benchmarks/srrg.py            # about 15 min on 2 CPU cores (3 seeds)
    .venv/bin/python benchmarks/srrg.py --quick               # CI-size smoke run, nothing written to results/
"""

from __future__ import annotations

import logging
import resource
import sys
import time

import numpy as np

from medfm.core.bench import Benchmark

log = logging.getLogger("benchmarks.srrg")


def micro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Micro F1 of multi-hot ``(reports, labels)`` matrices: 2 TP / (|true| + |pred|), 0 when both are empty
    (equal to scikit-learn's ``f1_score(average="micro", zero_division=0)``)."""
    tp = float(np.sum(y_true * y_pred))
    denom = float(y_true.sum() + y_pred.sum())
    return 2 * tp / denom if denom else 0.0


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


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark("srrg", __doc__)
    bench.parser.add_argument("--steps", type=int, default=150, help="classifier optimizer steps per seed")
    bench.parser.add_argument("--batch_size", type=int, default=16)
    bench.parser.add_argument(
        "--iu_train", type=int, default=1500, help="IU reports used for silver training sentences"
    )
    bench.parser.add_argument("--reps", type=int, default=5, help="warm repetitions of the throughput measurement")
    bench.parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of every CI")
    args = bench.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("transformers", "accelerate", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    from medfm.core.metrics import bootstrap_ci, hierarchical_bootstrap, mean_ci
    from medfm.data.assets import iu_reports
    from medfm.methods.srrg.data import iu_texts, phantom_texts, radlabels_texts, silver_sentences
    from medfm.methods.srrg.lexicon import LexiconLabeller
    from medfm.methods.srrg.metric import f1_srr_bert
    from medfm.methods.srrg.preservation import content_preservation
    from medfm.methods.srrg.structurer import OfflineStructurer
    from medfm.methods.srrg.train import train_classifier

    steps = bench.size(args.steps, 10)
    reps = bench.size(args.reps, 2)
    nb = bench.size(args.bootstrap, 200)
    metrics: dict[str, object] = {"steps": steps, "batch_size": args.batch_size, "seeds": bench.seeds}
    lex = LexiconLabeller()

    # 1. classifier: one training run per seed on phantoms (seed 1) + radlabels first half + IU silver sentences
    rl = radlabels_texts()
    train_sents = (silver_sentences(phantom_texts(bench.size(400, 100), 1)) + silver_sentences(rl[:500])
                   + silver_sentences(iu_texts(bench.size(args.iu_train, 200)), use_gold_status=False))  # fmt: skip
    train_sents = list({s.text: s for s in train_sents}.values())
    metrics["train_sentences"] = len(train_sents)
    metrics["epochs_per_seed"] = steps * args.batch_size / len(train_sents)
    sets = labelled_sets(bench)
    spaces = ("leaves", "leaves_with_statuses")
    # lexicon (deterministic) on the held-out sets, once
    lex_m: dict[str, dict[str, tuple]] = {
        d: {sp: matrices(lex, texts, sp) for sp in spaces} for d, texts in sets.items()
    }
    metrics["classifier_lexicon"] = {f"{d}/{sp}/{avg}_f1": v for d in sets for sp in spaces
                                     for avg, v in lex_m[d][sp][2].items()}  # fmt: skip
    clf_m: list[dict[str, dict[str, tuple]]] = []
    per_seed_metrics, train_seconds, final_loss = [], [], []
    clf0 = None
    for seed in bench.seeds:
        t0 = time.perf_counter()
        with bench.tmpdir(f"train-seed{seed}") as tmp:
            out = train_classifier(train_sents, tmp, steps=steps, batch_size=args.batch_size, max_length=32,
                                   save_every=0, seed=seed, device=args.device)  # fmt: skip
        train_seconds.append(round(time.perf_counter() - t0, 1))
        final_loss.append(float(out.final_loss))
        log.info("seed %d: trained in %.0f s (loss %.4f)", seed, train_seconds[-1], out.final_loss)
        clf = out.classifier
        if clf0 is None:
            clf0 = clf
        m = {d: {sp: matrices(clf, texts, sp) for sp in spaces} for d, texts in sets.items()}
        clf_m.append(m)
        per_seed_metrics.append(
            {f"{d}/{sp}/{avg}_f1": v for d in sets for sp in spaces for avg, v in m[d][sp][2].items()}
        )
    metrics["train_seconds"] = train_seconds
    metrics["final_loss"] = final_loss
    metrics["classifier_minilm_per_seed"] = per_seed_metrics
    metrics["classifier_minilm"] = {k: float(np.mean([m[k] for m in per_seed_metrics])) for k in per_seed_metrics[0]}

    seeds_n = len(bench.seeds)
    for data in ("phantom", "radlabels"):
        yt = clf_m[0][data]["leaves"][0]
        point, ci, _ = hierarchical_bootstrap(micro_f1, [(m[data]["leaves"][0], m[data]["leaves"][1]) for m in clf_m],
                                              n_resamples=nb, seed=0)  # fmt: skip
        macro = metrics["classifier_minilm"][f"{data}/leaves/macro_f1"]
        bench.claim(f"leaf_micro_f1_{data}", point, ci=ci, n=len(yt), seeds=seeds_n, levels={"classifier": point},
                    note=f"macro {macro:.3f}; MiniLM, {steps} steps x {args.batch_size} sentences "
                    f"({metrics['epochs_per_seed']:.2f} epoch) on silver labels, per seed")  # fmt: skip

    # classifier vs lexicon on radlabels' annotated labels, paired over the same reports
    sp = "leaves_with_statuses"
    y_lex = lex_m["radlabels"][sp][1]
    per_seed = [(m["radlabels"][sp][0], m["radlabels"][sp][1], y_lex) for m in clf_m]
    diff, diff_ci, _ = hierarchical_bootstrap(lambda t, a, b: micro_f1(t, a) - micro_f1(t, b), per_seed,
                                              n_resamples=nb, seed=0)  # fmt: skip
    lex_f1 = micro_f1(per_seed[0][0], y_lex)
    clf_f1 = float(np.mean([micro_f1(t, a) for t, a, _ in per_seed]))
    bench.claim("classifier_beats_lexicon_radlabels", diff, baseline=lex_f1, ci=diff_ci, n=len(y_lex), seeds=seeds_n,
                levels={"classifier": clf_f1, "lexicon": lex_f1},
                note=f"classifier {clf_f1:.3f} vs lexicon {lex_f1:.3f}; the classifier learns from the lexicon's silver "
                "labels (gold statuses where given)")  # fmt: skip

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

    # 3. scoring throughput (impressions) of the seed-0 classifier: one warm-up pass, then timed repetitions
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
    bench.write(metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
