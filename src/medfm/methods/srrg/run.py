"""Run functions of the ``medfm srrg`` verbs (heavy imports happen here, never in cli.py / config.py)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from medfm.core.errors import DataError, UsageError
from medfm.core.runs import Run

log = logging.getLogger(__name__)
METHOD = "srrg"


# ----------------------------------------------------------------------------------------------------------------------
# Data assembly


def _split_radlabels(fraction: float) -> tuple[list[Any], list[Any]]:
    from medfm.methods.srrg.data import radlabels_texts

    texts = radlabels_texts()
    k = round(len(texts) * fraction)
    return texts[:k], texts[k:]


def build_training_sentences(cfg: Any) -> tuple[list[Any], dict[str, int]]:
    """Sentences from the configured sources and a count per source (limit applies to reports per source)."""
    from medfm.methods.srrg.data import iu_texts, labelled_file, phantom_texts, silver_sentences

    known = {"phantom", "radlabels", "iu", "file"}
    bad = [s for s in cfg.sources if s not in known]
    if bad:
        raise UsageError(f"unknown source(s) {bad}; use any of {', '.join(sorted(known))}")
    sentences: list[Any] = []
    counts: dict[str, int] = {}
    lim = cfg.limit
    if "phantom" in cfg.sources:
        texts = phantom_texts(min(cfg.phantom_n, lim or cfg.phantom_n), cfg.phantom_seed)
        s = silver_sentences(texts)
        sentences += s
        counts["phantom_reports"] = len(texts)
    if "radlabels" in cfg.sources:
        train, _ = _split_radlabels(cfg.radlabels_train_fraction)
        train = train[:lim] if lim else train
        sentences += silver_sentences(train)
        counts["radlabels_reports"] = len(train)
    if "iu" in cfg.sources:
        texts = iu_texts(cfg.iu_limit if lim is None else min(lim, cfg.iu_limit or lim))
        sentences += silver_sentences(texts, use_gold_status=False)
        counts["iu_reports"] = len(texts)
    if "file" in cfg.sources or cfg.labelled_file:
        if not cfg.labelled_file:
            raise UsageError("source 'file' needs --labelled_file path.jsonl|.csv")
        rows = labelled_file(cfg.labelled_file)
        sentences += rows[:lim] if lim else rows
        counts["file_sentences"] = len(rows)
    # de-duplicate identical sentence texts (keeps the first label)
    seen: dict[str, Any] = {}
    for s in sentences:
        seen.setdefault(s.text, s)
    sentences = list(seen.values())
    counts["sentences"] = len(sentences)
    if not sentences:
        raise DataError("no training sentences: every source was empty")
    return sentences, counts


def _write_sentences(path: Path, sentences: list[Any]) -> None:
    from medfm.core.files import atomic_write_text
    from medfm.methods.srrg.labels import to_labels

    atomic_write_text(path, "".join(json.dumps({"text": s.text, "labels": to_labels(s.findings, "leaves_with_statuses"),
                                                "source": s.source, "report_id": s.report_id}) + "\n"
                                    for s in sentences))  # fmt: skip


def _read_sentences(path: str) -> list[Any]:
    from medfm.methods.srrg.data import labelled_file

    return labelled_file(path)


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation


def evaluate_classifier(classifier: Any, phantom_n: int, phantom_seed: int, radlabels_fraction: float,
                        radlabels_limit: int | None = None) -> tuple[dict[str, float], list[dict[str, Any]]]:  # fmt: skip
    """Report-level F1 (micro/macro/weighted) on held-out phantoms and radlabels, restricted to evaluable leaves."""
    from medfm.methods.srrg.data import phantom_texts, predict_reports, restrict
    from medfm.methods.srrg.metric import findings_label_f1

    sets = {}
    if phantom_n:
        sets["phantom"] = phantom_texts(phantom_n, phantom_seed)
    _, held = _split_radlabels(radlabels_fraction)
    if radlabels_limit is not None:
        held = held[:radlabels_limit]
    if held:
        sets["radlabels"] = held
    metrics: dict[str, float] = {}
    rows = []
    for name, texts in sets.items():
        pred = predict_reports(texts, classifier)
        ev = texts[0].evaluable
        p = [restrict(x, ev) for x in pred]
        g = [restrict(t.gold, ev) for t in texts]
        for sp in ("leaves", "leaves_with_statuses"):
            scores = findings_label_f1(p, g, sp)
            for avg, v in scores.items():
                metrics[f"{name}/{sp}/{avg}_f1"] = v
            rows.append({"data": name, "space": sp, "n_reports": len(texts), **{f"{k}_f1": round(v, 4)
                                                                               for k, v in scores.items()}})  # fmt: skip
    return metrics, rows


# ----------------------------------------------------------------------------------------------------------------------
# Verbs


def run_prepare(cfg: Any) -> int:
    run = Run(METHOD, "prepare", cfg)
    if cfg.dry_run:
        return run.plan([f"sources: {', '.join(cfg.sources)}", f"write {run.dir / 'sentences.jsonl'}"])
    with run:
        sentences, counts = build_training_sentences(cfg)
        _write_sentences(run.dir / "sentences.jsonl", sentences)
        res = run.new_results()
        for k, v in counts.items():
            res.add(k, float(v), note="count")
        from collections import Counter

        c = Counter(leaf for s in sentences for leaf in s.findings)
        res.tables["label_counts"] = [{"leaf": k, "sentences": v} for k, v in c.most_common()]
        run.save_results(res)
        from medfm.core.report import render_run_report

        render_run_report(run.dir)
        log.info("wrote %d sentences to %s", len(sentences), run.dir / "sentences.jsonl")
    print(run.dir / "sentences.jsonl")
    return 0


def run_train(cfg: Any) -> int:
    run = Run(METHOD, "train", cfg)
    if cfg.dry_run:
        what = ([f"base encoder: {cfg.base}", f"up to {cfg.epochs} epochs x batch {cfg.batch_size} (patience "
                 f"{cfg.patience}), lr {cfg.lr} / head {cfg.head_lr}, {cfg.schedule} schedule",
                 f"checkpoints: {run.dir / 'checkpoints'}"] if cfg.model == "srr-bert"
                else ["TF-IDF + logistic regression, C chosen on validation"])  # fmt: skip
        return run.plan([f"data: {cfg.data or 'built from ' + ', '.join(cfg.sources)}", f"model: {cfg.model}",
                         f"validation: {cfg.val_fraction:.0%} of reports", *what])  # fmt: skip
    with run:
        from medfm.core.report import render_run_report
        from medfm.core.runs import resolve_device

        if cfg.data:
            sentences = _read_sentences(cfg.data)
            counts = {"sentences": len(sentences)}
        else:
            sentences, counts = build_training_sentences(cfg)
        res = run.new_results()
        if cfg.model == "tfidf":
            from medfm.methods.srrg.tfidf import train_tfidf

            tf = train_tfidf(sentences, val_fraction=cfg.val_fraction, seed=cfg.seed, threshold=cfg.threshold,
                             tune=cfg.tune_thresholds)  # fmt: skip
            clf, seconds, model_obj = tf.classifier, tf.seconds, None
            res.add("C", tf.C, note="regularisation chosen by validation micro F1")
            res.tables["C_selection"] = [{"C": c, "val_micro_f1": round(v, 4)} for c, v in tf.val_f1.items()]
            split = (tf.train_sentences, tf.val_sentences)
            steps, samples = 0, tf.train_sentences
        else:
            from medfm.methods.srrg.train import train_classifier

            out = train_classifier(sentences, run.dir, base=cfg.base, epochs=cfg.epochs, max_steps=cfg.max_steps,
                                   batch_size=cfg.batch_size, lr=cfg.lr, head_lr=cfg.head_lr, schedule=cfg.schedule,
                                   warmup_fraction=cfg.warmup_fraction, max_length=cfg.max_length,
                                   grad_accum=cfg.grad_accum, mixed_precision=cfg.mixed_precision,
                                   save_every=cfg.save_every, seed=cfg.seed, device=resolve_device(cfg.device),
                                   val_fraction=cfg.val_fraction, patience=cfg.patience,
                                   tune=cfg.tune_thresholds, threshold=cfg.threshold)  # fmt: skip
            clf, seconds, model_obj = out.classifier, out.seconds, out.classifier.model
            res.add("final_loss", out.final_loss, higher_is_better=False)
            res.add("epochs_run", out.epochs_run, note="early stopped" if out.stopped_early else "all epochs")
            if out.best_val_f1 is not None:
                res.add("best_val_micro_f1", out.best_val_f1, note=f"epoch {out.best_epoch}, tuned thresholds")
            res.tables["training_curve"] = [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
                                            for r in out.curve]  # fmt: skip
            split = (out.train_sentences, out.val_sentences)
            steps, samples = out.steps, out.samples_seen
        metrics, rows = evaluate_classifier(clf, cfg.eval_phantom_n, cfg.eval_phantom_seed,
                                            cfg.radlabels_train_fraction, radlabels_limit=cfg.limit)  # fmt: skip
        for k, v in metrics.items():
            res.add(k, v)
        res.tables["held_out_f1"] = rows
        res.meta.update(counts)
        res.meta.update({"model": cfg.model, "train_sentences": split[0], "val_sentences": split[1],
                         "median_threshold": clf.threshold})  # fmt: skip
        run.save_results(res)
        params = None if model_obj is not None else int(clf.coef.size + clf.intercept.size)
        card = _card(run, cfg, counts, len(sentences), steps, samples, model_obj, seconds, params)
        final = clf.save_pretrained(run.checkpoints / "final", card=card)
        render_run_report(run.dir)
        log.info("trained classifier saved to %s", final)
    print(run.dir / "checkpoints" / "final")
    return 0


def _card(run: Run, cfg: Any, counts: dict[str, int], n: int, steps: int, samples: int, model: Any,
          seconds: float, parameters: int | None = None) -> Any:  # fmt: skip
    from medfm.core import cards

    data = cards.TrainingData(
        size=n, unit="report sentences", modalities=["text", "CXR"], body_regions=["chest"],
        annotation="automatic", sources=[s for s in ("CXR phantoms (medfm)", "radlabels", "IU OpenI reports")
                                         if any(k.startswith(s.split()[0].lower()[:3]) for k in counts)] or
        [cfg.data or "labelled file"], synthetic="phantom" in cfg.sources and len(cfg.sources) == 1,
        statistics=counts)  # fmt: skip
    if cfg.model == "tfidf":
        arch, objective, base = (
            "TF-IDF (word 1-2 grams) + one logistic regression per label",
            "L2 logistic loss",
            "scratch",
        )
    else:
        arch = ("BertForSequenceClassification (all-MiniLM-L6-v2 encoder + linear head)" if cfg.base == "minilm"
                else f"BertForSequenceClassification ({cfg.base})")  # fmt: skip
        objective, base = "multi-label binary cross-entropy over 163 leaf x status labels", cfg.base
    training = cards.Training(paradigm=["weakly-supervised"], objective=objective, architecture=arch,
                              base_model=base, steps=steps, samples_seen=samples, parameters=parameters,
                              precision=cfg.mixed_precision)  # fmt: skip
    return cards.card_from_run(
        run.dir, name="srr-bert-medfm" if cfg.model == "srr-bert" else "srr-tfidf-medfm", method=METHOD, data=data,
        training=training,
        capabilities=cards.Capabilities(["classification"], "one report sentence (English)",
                                        "Present/Uncertain/Absent per SRR-BERT leaf (55 leaves; 163/73/25 spaces)"),
        **cards.method_facts(__package__, "classifier"), model=model, seconds=seconds)  # fmt: skip


def run_evaluate(cfg: Any) -> int:
    run = Run(METHOD, "evaluate", cfg)
    if cfg.dry_run:
        return run.plan([f"classifier: {cfg.classifier}", f"held-out phantoms: {cfg.eval_phantom_n}",
                         "held-out radlabels reports"])  # fmt: skip
    with run:
        from medfm.core.report import render_run_report
        from medfm.core.runs import resolve_device
        from medfm.methods.srrg.classifier import load_classifier

        clf = load_classifier(
            cfg.classifier, device=resolve_device(cfg.device) if cfg.classifier != "lexicon" else "cpu"
        )
        lim = cfg.limit
        metrics, rows = evaluate_classifier(clf, min(cfg.eval_phantom_n, lim or cfg.eval_phantom_n),
                                            cfg.eval_phantom_seed, cfg.radlabels_train_fraction,
                                            lim if lim is not None else cfg.radlabels_limit)  # fmt: skip
        res = run.new_results()
        for k, v in metrics.items():
            res.add(k, v)
        for r in rows:
            r["classifier"] = cfg.classifier
        if cfg.compare_lexicon and cfg.classifier != "lexicon":
            from medfm.methods.srrg.lexicon import LexiconLabeller

            base, brow = evaluate_classifier(LexiconLabeller(), min(cfg.eval_phantom_n, lim or cfg.eval_phantom_n),
                                             cfg.eval_phantom_seed, cfg.radlabels_train_fraction,
                                             lim if lim is not None else cfg.radlabels_limit)  # fmt: skip
            for k, v in base.items():
                res.add(k, v, group="lexicon")
            rows += [{**r, "classifier": "lexicon"} for r in brow]
        res.tables["held_out_f1"] = rows
        run.save_results(res)
        render_run_report(run.dir)
    print(run.dir / "report.html")
    return 0


def read_reports(spec: str, limit: int | None) -> list[dict[str, str]]:
    """``iu``, a .txt report, or a .jsonl/.csv with a ``report`` column -> ``[{"id", "report"}]``."""
    if spec == "iu":
        from medfm.data.assets import iu_reports

        rows = [{"id": r.uid, "report": r.text} for r in iu_reports() if r.text]
    else:
        path = Path(spec)
        if not path.is_file():
            raise DataError(f"input {spec} does not exist (use iu, a .txt report or a .jsonl/.csv with 'report')")
        if path.suffix == ".txt":
            rows = [{"id": path.stem, "report": path.read_text(encoding="utf-8")}]
        else:
            from medfm.methods.srrg.data import read_rows

            rows = read_rows(path, ("report",))
            rows = [{"id": str(r.get("id") or i), "report": str(r["report"] or "")} for i, r in enumerate(rows)]
    return rows[:limit] if limit else rows


def run_structure(cfg: Any) -> int:
    run = Run(METHOD, "structure", cfg)
    rows = read_reports(cfg.input, cfg.limit)
    if cfg.dry_run:
        return run.plan([f"{len(rows)} reports from {cfg.input}", f"structurer: {cfg.structurer}",
                         f"write {run.dir / 'samples.jsonl'}"])  # fmt: skip
    with run:
        import numpy as np

        from medfm.core.metrics import mean_ci
        from medfm.core.report import render_run_report
        from medfm.methods.srrg.classifier import load_classifier
        from medfm.methods.srrg.preservation import content_preservation
        from medfm.methods.srrg.structurer import make_structurer
        from medfm.methods.srrg.text import free_text_sections

        clf = load_classifier(cfg.classifier)
        st = make_structurer(cfg.structurer, clf, cfg.backend, cfg.max_repairs)
        t0 = time.perf_counter()
        if cfg.structurer == "offline":
            secs = []
            for r in rows:
                s = free_text_sections(r["report"])
                f, i = s.get("findings", ""), s.get("impression", "")
                secs.append((f or (s.get("body", "") if not i else ""), i))
            outs = st.structure_many(secs, [r["report"] for r in rows])
        else:
            from medfm.core.runs import progress

            outs = [st.structure(r["report"]) for r in progress(rows, desc="structure")]
        secs_taken = time.perf_counter() - t0
        cp = content_preservation([r["report"] for r in rows], outs, clf)
        res = run.new_results()
        valid = [float(o.valid) for o in outs]
        res.add("validity", mean_ci(valid))
        res.add("content_recall", mean_ci([c["recall"] for c in cp]), note="input finding labels kept in output")
        res.add("content_precision", mean_ci([c["precision"] for c in cp]))
        res.add("content_exact", mean_ci([c["exact"] for c in cp]))
        res.add("reports_per_second", len(rows) / max(secs_taken, 1e-9))
        res.add("mean_attempts", float(np.mean([o.attempts for o in outs])) if outs else 0.0, higher_is_better=False)
        warn = sum(bool(o.warnings) for o in outs)
        res.add("inputs_with_warnings", float(warn), higher_is_better=False, note="empty or non-English reports")
        res.tables["examples"] = [{"id": r["id"], "free_text": r["report"][:600], "structured": o.text[:800],
                                   "valid": o.valid} for r, o in list(zip(rows, outs))[:10]]  # fmt: skip
        run.write_samples({"id": r["id"], "input": r["report"], "structured": o.text, "valid": o.valid,
                           "problems": [str(p) for p in o.problems], "warnings": o.warnings, "source": o.source,
                           "attempts": o.attempts, **c} for r, o, c in zip(rows, outs, cp))  # fmt: skip
        run.save_results(res)
        render_run_report(run.dir, extra=[_side_by_side(rows[:5], outs[:5])])
    print(run.dir / "report.html")
    return 0


def _side_by_side(rows: list[dict[str, str]], outs: list[Any]) -> Any:
    import html

    from medfm.core.report import _Section

    body = "<table><tr><th>free text</th><th>structured</th></tr>" + "".join(
        f"<tr><td><pre>{html.escape(r['report'])}</pre></td><td><pre>{html.escape(o.text)}</pre></td></tr>"
        for r, o in zip(rows, outs)) + "</table>"  # fmt: skip
    return _Section("Free text vs structured", body)


def score_corpus(candidates: list[str], references: list[str], classifier: Any, section: str,
                 spaces: list[str], bootstrap: int = 200, seed: int = 0) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """Every F1-SRR-BERT variant + BLEU/ROUGE-L into a Results; also returns the raw numbers."""
    from medfm.core.metrics import mean_ci
    from medfm.core.results import Results
    from medfm.methods.srrg.labels import space as space_of
    from medfm.methods.srrg.metric import f1_srr_bert, section_text_scores

    res = Results(METHOD, "score")
    raw: dict[str, Any] = {}
    for sp in spaces:
        space_of(sp)
        for aligned in (False, True):
            s = f1_srr_bert(candidates, references, classifier, section=section, space=sp, aligned=aligned)
            name = f"f1_srr_bert/{sp}/{'aligned' if aligned else 'unaligned'}/samples"
            m = mean_ci(s.per_sample_f1, n_resamples=bootstrap, seed=seed) if section == "impression" else None
            res.add(name, m.value if m is not None else s.f1, ci=m.ci if m is not None else None, n=s.n)
            raw[name] = s.to_dict()
            if section == "findings":
                res.add(f"section_presence_f1/{sp}", s.section_presence.get("f1", 0.0), n=s.n)
                for organ, v in s.organ.items():
                    res.add(name, v["f1"], group=organ, n=v["n"])
        if section == "impression":
            w = f1_srr_bert(candidates, references, classifier, section=section, space=sp, aligned=False,
                            average="weighted")  # fmt: skip
            res.add(f"f1_srr_bert/{sp}/unaligned/weighted", w.f1, n=w.n)
            raw[f"f1_srr_bert/{sp}/unaligned/weighted"] = w.to_dict()
    txt = section_text_scores(candidates, references, section)
    res.add("bleu4", txt["bleu"], n=len(candidates))
    res.add("rougeL", txt["rougeL"], n=len(candidates))
    raw["text"] = txt
    return res, raw


def run_score(cfg: Any) -> int:
    from medfm.methods.srrg.data import read_rows

    run = Run(METHOD, "score", cfg)
    if not Path(cfg.input).is_file():
        raise DataError(f"input {cfg.input} does not exist (expected .jsonl/.csv with reference and candidate)")
    rows = read_rows(cfg.input, ("reference", "candidate"))
    rows = rows[: cfg.limit] if cfg.limit else rows
    if cfg.dry_run:
        return run.plan([f"{len(rows)} pairs from {cfg.input}", f"section: {cfg.section}",
                         f"spaces: {', '.join(cfg.spaces)}", f"classifier: {cfg.classifier}"])  # fmt: skip
    with run:
        from medfm.core.report import render_run_report
        from medfm.methods.srrg.classifier import load_classifier

        clf = load_classifier(cfg.classifier)
        refs = [str(r["reference"] or "") for r in rows]
        cands = [str(r["candidate"] or "") for r in rows]
        t0 = time.perf_counter()
        res, raw = score_corpus(cands, refs, clf, cfg.section, list(cfg.spaces), cfg.bootstrap, cfg.seed)
        res.method, res.verb = METHOD, "score"
        res.add("reports_per_second", len(rows) / max(time.perf_counter() - t0, 1e-9))
        res.meta.update({"classifier": cfg.classifier, "section": cfg.section, "run_dir": str(run.dir)})
        first = next(v for k, v in raw.items() if k.startswith("f1_srr_bert"))
        res.meta["warnings"] = first.get("warnings", [])
        run.save_results(res)
        render_run_report(run.dir)
    print(run.dir / "report.html")
    return 0
