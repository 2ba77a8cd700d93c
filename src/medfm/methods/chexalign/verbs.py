"""Run functions of the ``medfm chexalign`` verbs (imported only when a verb runs)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from medfm.core.errors import DataError, UsageError
from medfm.core.runs import Run, progress
from medfm.methods.chexalign.config import EvaluateConfig, JudgeConfig, PairsConfig, SampleConfig, TrainConfig

log = logging.getLogger(__name__)

METHOD = "chexalign"


def _input(path: str, name: str, verb: str) -> Path:
    """A JSONL written by an earlier verb: the file itself or ``<run dir>/<name>``."""
    p = Path(path)
    if p.is_dir():
        p = p / name
    if not p.is_file():
        raise DataError(f"{p} does not exist; run `medfm chexalign {verb}` first (or pass its {name})")
    return p


def _studies(data: Any, limit: int | None) -> list[Any]:
    from medfm.methods.vlm.data import load_report_examples

    ex = load_report_examples(data.reports, data.split, data.prompt, data.section)
    return ex[:limit] if limit else ex


def _report(run: Run, title: str) -> Path:
    from medfm.core.report import render_run_report

    return render_run_report(run.dir, title)


def _study_figure(run: Run, name: str, caption: str, items: list[tuple[str, Any, str]]) -> None:
    """``plots/<name>.png``: one row per (title, image path or None, text) with the study's image beside the text.
    A figure is an aid: an unreadable image is logged and skipped, never fatal."""
    from medfm.core.report import display_array, text_panels_grid

    cells = []
    for title, image, text in items:
        if not image:
            continue
        try:
            cells.append((title, display_array(image), text))
        except Exception as exc:
            log.warning("cannot show %s: %s", image, exc)
    if cells:
        run.save_figure(name, text_panels_grid(cells, max_lines=14), caption)


def _first_image(rec: dict[str, Any]) -> str | None:
    return (rec.get("images") or [None])[0]


def _score_histogram(run: Run, scores: list[float], spread: list[float], label: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7.5, 2.8))
    axes[0].hist(scores, bins=20, color="#4c72b0")
    axes[0].set_xlabel(f"reward ({label})")
    axes[0].set_ylabel("candidates")
    axes[1].hist(spread, bins=20, color="#dd8452")
    axes[1].set_xlabel("best - worst reward within a study")
    axes[1].set_ylabel("studies")
    fig.tight_layout()
    run.save_figure("reward_histograms", fig, (
        f"Left: the judge's reward ({label}) of every candidate. Right: per study, the spread between its best and "
        "worst candidate; a spread near 0 is a tie, and the study yields no preference pair."))  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# sample


def run_sample(cfg: SampleConfig) -> int:
    """Write ``candidates.jsonl``: N candidate reports per study (resumable)."""
    from medfm.core.files import atomic_write_text
    from medfm.methods.chexalign.sampling import backend_sampler, run_resumable, vlm_sampler

    if cfg.n < 2:
        raise UsageError("--n must be at least 2: pairs need a best and a worst candidate per study")
    if not cfg.policy and not cfg.backend:
        raise UsageError("give --policy (a saved VLM folder) or --backend (e.g. hf:/path/to/vlm) to sample from")
    run = Run(METHOD, "sample", cfg)
    studies = _studies(cfg.data, cfg.limit)
    if cfg.dry_run:
        return run.plan(
            [
                f"{len(studies)} studies (split {cfg.data.split}) from {cfg.data.reports}",
                f"{cfg.n} candidates each at temperature {cfg.temperature}, <= {cfg.max_new_tokens} tokens",
                f"via {cfg.backend or 'the VLM ' + cfg.policy}",
                f"write {run.dir / 'candidates.jsonl'}",
            ]
        )
    with run.start():
        t0 = time.perf_counter()
        if cfg.backend:
            from medfm.backends import make_backend

            backend = make_backend(cfg.backend, cache=str(run.dir / "backend_cache.sqlite"))
            sampler = backend_sampler(backend, cfg.n, cfg.temperature, cfg.max_new_tokens, cfg.seed)
        else:
            from medfm.core.runs import resolve_device
            from medfm.methods.vlm.model import load_vlm

            model, processor = load_vlm(cfg.policy, device=resolve_device(cfg.device))
            sampler = vlm_sampler(model, processor, cfg.n, cfg.temperature, cfg.max_new_tokens, cfg.seed)
        recs = run_resumable(studies, run.dir / "candidates.partial.jsonl", cfg.batch_size, sampler, progress)
        atomic_write_text(run.dir / "candidates.jsonl", "".join(json.dumps(r) + "\n" for r in recs))
        n_c = sum(len(r["candidates"]) for r in recs)
        empty = sum(1 for r in recs for c in r["candidates"] if not c.strip())
        res = run.new_results()
        res.add("studies", float(len(recs)), n=len(recs))
        res.add("candidates", float(n_c), n=len(recs))
        res.add("empty_rate", empty / max(n_c, 1), n=n_c, higher_is_better=False, note="empty generations")
        res.add("mean_words", sum(len(c.split()) for r in recs for c in r["candidates"]) / max(n_c, 1), n=n_c)
        res.meta.update(seconds=time.perf_counter() - t0, policy=cfg.policy, backend=cfg.backend)
        res.tables["examples"] = [
            {"id": r["id"], "reference": r["reference"][:120], "candidate": c[:120]}
            for r in recs[:3]
            for c in r["candidates"]
        ]
        run.save_results(res)
        _study_figure(run, "candidates", (
            f"The first studies' image, reference report and {cfg.n} sampled candidate reports (temperature "
            f"{cfg.temperature}); candidates that differ give the judge something to rank."),
            [(r["id"], _first_image(r), f"REFERENCE: {r['reference']}\n\n" +
              "\n".join(f"#{k + 1}: {c.strip() or '(empty)'}" for k, c in enumerate(r["candidates"])))
             for r in recs[:3]])  # fmt: skip
        _report(run, "medfm chexalign sample")
        print(run.dir / "candidates.jsonl")
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# judge


def run_judge(cfg: JudgeConfig) -> int:
    """Write ``judged.jsonl``: a reward (and GREEN counts) per candidate."""
    import numpy as np

    from medfm.core.files import atomic_write_text
    from medfm.core.metrics import mean_ci
    from medfm.methods.chexalign.judges import make_judge
    from medfm.methods.chexalign.sampling import read_jsonl

    run = Run(METHOD, "judge", cfg)
    path = _input(cfg.candidates, "candidates.jsonl", "sample")
    recs = read_jsonl(path)
    recs = recs[: cfg.limit] if cfg.limit else recs
    if not recs:
        raise DataError(f"{path} holds no studies")
    bad = [r.get("id") for r in recs if "candidates" not in r or "reference" not in r]
    if bad:
        raise DataError(f"{path}: study {bad[0]} lacks 'candidates' or 'reference'; was it written by `sample`?")
    if cfg.dry_run:
        return run.plan(
            [
                f"judge {sum(len(r['candidates']) for r in recs)} candidates of {len(recs)} studies",
                f"judge: {cfg.judge.kind}{' (length-controlled)' if cfg.judge.length_control else ''}",
            ]
        )
    with run.start(with_device=cfg.judge.kind != "offline"):
        judge = make_judge(
            cfg.judge.kind,
            length_control=cfg.judge.length_control,
            classifier=cfg.judge.classifier,
            backend=cfg.judge.backend,
            cache=str(run.dir / "judge_cache.sqlite"),
        )
        refs = [r["reference"] for r in recs for _ in r["candidates"]]
        cands = [c for r in recs for c in r["candidates"]]
        results = judge.judge(refs, cands)
        k, out = 0, []
        for r in recs:
            js = results[k : k + len(r["candidates"])]
            k += len(r["candidates"])
            out.append({**r, "scores": [j.score for j in js], "judgements": [j.to_dict() for j in js]})
        atomic_write_text(run.dir / "judged.jsonl", "".join(json.dumps(r) + "\n" for r in out))
        scores = [s for r in out for s in r["scores"] if s is not None]
        failed = sum(1 for j in results if j.score is None)
        res = run.new_results()
        res.add("mean_reward", mean_ci(scores, seed=cfg.seed) if scores else None, note=judge.label)
        res.add(
            "unparsed_rate",
            failed / len(results),
            n=len(results),
            higher_is_better=False,
            note="judge outputs that did not parse (score None, excluded from pairs)",
        )
        spread = [max(v) - min(v) for r in out if len(v := [s for s in r["scores"] if s is not None]) >= 2]
        res.add("mean_best_minus_worst", float(np.mean(spread)) if spread else None, n=len(spread))
        res.meta.update(judge=judge.label, errors=[j.error for j in results if j.error][:5])
        run.save_results(res)
        if scores:
            _score_histogram(run, scores, spread, judge.label)
        _study_figure(run, "judged_candidates", (
            f"The first studies' image and reference with each candidate's reward ({judge.label}); the best and "
            "worst candidates become a preference pair."),
            [(r["id"], _first_image(r), f"REFERENCE: {r['reference']}\n\n" + "\n".join(
                f"[{'n/a' if sc is None else f'{sc:.2f}'}] {c.strip() or '(empty)'}"
                for c, sc in zip(r["candidates"], r["scores"]))) for r in out[:3]])  # fmt: skip
        _report(run, "medfm chexalign judge")
        if failed:
            log.warning("%d of %d judge outputs did not parse; their candidates are excluded", failed, len(results))
        print(run.dir / "judged.jsonl")
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# pairs


def run_pairs(cfg: PairsConfig) -> int:
    """Write ``pairs.jsonl`` (chosen/rejected) and ``kto.jsonl`` (two unpaired rows per pair)."""
    from medfm.core.files import atomic_write_text
    from medfm.methods.chexalign.pairs import build_pairs, kto_rows
    from medfm.methods.chexalign.sampling import read_jsonl

    run = Run(METHOD, "pairs", cfg)
    path = _input(cfg.judged, "judged.jsonl", "judge")
    recs = read_jsonl(path)
    recs = recs[: cfg.limit] if cfg.limit else recs
    bad = [r.get("id") for r in recs if "scores" not in r]
    if bad:
        raise DataError(f"{path}: study {bad[0]} has no 'scores'; run `medfm chexalign judge` on the candidates first")
    if cfg.dry_run:
        return run.plan([f"{len(recs)} judged studies from {path}", f"tie threshold {cfg.tie_threshold}"])
    with run.start(with_device=False):
        pairs, stats = build_pairs(recs, cfg.tie_threshold)
        kto = kto_rows(pairs)
        atomic_write_text(run.dir / "pairs.jsonl", "".join(json.dumps(p) + "\n" for p in pairs))
        atomic_write_text(run.dir / "kto.jsonl", "".join(json.dumps(p) + "\n" for p in kto))
        res = run.new_results()
        res.add("pairs", float(stats.pairs), n=stats.studies)
        res.add(
            "tie_drop_rate",
            stats.dropped_ties / max(stats.studies, 1),
            n=stats.studies,
            higher_is_better=False,
            note="studies whose candidates all tie (paper: ~1.6% with GREEN)",
        )
        res.add(
            "unscored_drop_rate",
            stats.dropped_unscored / max(stats.studies, 1),
            n=stats.studies,
            higher_is_better=False,
            note="studies with fewer than two judged candidates",
        )
        if pairs:
            res.add(
                "mean_margin", sum(p["chosen_score"] - p["rejected_score"] for p in pairs) / len(pairs), n=len(pairs)
            )
            res.add(
                "chosen_minus_rejected_words",
                sum(len(p["chosen"].split()) - len(p["rejected"].split()) for p in pairs) / len(pairs),
                n=len(pairs),
            )
        res.meta.update(stats.to_dict(), kto_rows=len(kto), dropped=dict(list(stats.reasons.items())[:20]))
        res.tables["pairs"] = [
            {
                "id": p["id"],
                "chosen": p["chosen"][:100],
                "chosen_score": p["chosen_score"],
                "rejected": p["rejected"][:100],
                "rejected_score": p["rejected_score"],
            }
            for p in pairs[:20]
        ]
        run.save_results(res)
        _study_figure(run, "pairs", (
            "Preference pairs of the first studies: the chosen (highest reward) and rejected (lowest reward) "
            "candidate beside the study's image and reference."),
            [(p["id"], _first_image(p), f"REFERENCE: {p.get('reference', '')}\n\n"
              f"CHOSEN [{p['chosen_score']:.2f}]: {p['chosen']}\n\nREJECTED [{p['rejected_score']:.2f}]: "
              f"{p['rejected']}") for p in pairs[:3]])  # fmt: skip
        _report(run, "medfm chexalign pairs")
        if not pairs:
            log.warning("no pairs: every study tied or failed (%s)", stats.to_dict())
        print(run.dir / "pairs.jsonl")
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# train


def _card(
    run: Run,
    cfg: TrainConfig,
    model: Any,
    rows: list[dict[str, Any]],
    beta: float,
    steps: int,
    seconds: float,
    results_dir: Path,
) -> Any:
    from medfm.core.cards import Capabilities, Training, TrainingData, card_from_run, method_facts

    card = card_from_run(
        results_dir,
        name=f"medfm-chexalign-{cfg.algorithm}-beta{beta:g}",
        method=METHOD,
        data=TrainingData(
            size=len(rows),
            unit="preference pairs" if cfg.algorithm != "kto" else "unpaired preference rows",
            modalities=["CXR", "text"],
            body_regions=["chest"],
            annotation="report-derived",
            sources=[str(cfg.pairs)],
            synthetic=_synthetic(cfg.policy),
            statistics={
                "rows": len(rows),
                "mean_chosen_score": _mean([r.get("chosen_score", r.get("score")) for r in rows]),
            },
        ),
        training=Training(
            paradigm=["preference-alignment"],
            objective=f"{cfg.algorithm.upper()} on judge-scored preference pairs (beta {beta:g})",
            architecture="LLaVA-style VLM (image tower frozen) from the SFT policy",
            base_model=str(cfg.policy),
            steps=steps,
            samples_seen=steps * cfg.train.batch_size * cfg.train.grad_accum,
            precision=cfg.train.mixed_precision if cfg.train.mixed_precision != "no" else "fp32",
        ),
        capabilities=Capabilities(
            supported=["generation"], inputs="one chest X-ray + a chat instruction", outputs="free-text report"
        ),
        **method_facts(__package__, "policy"),
        model=model,
        seconds=seconds,
    )
    return card


def _mean(xs: list[Any]) -> float | None:
    v = [float(x) for x in xs if x is not None]
    return sum(v) / len(v) if v else None


def _synthetic(policy: str) -> bool:
    """Whether the SFT policy's own card says it was trained on synthetic data (phantoms)."""
    try:
        from medfm.core.cards import load_card

        return bool(load_card(policy).data.synthetic)
    except Exception:  # a foreign policy without a medfm card
        return False


def run_train(cfg: TrainConfig) -> int:
    """Align the policy on the pairs, once per beta; ``checkpoints/final`` (one beta) or ``checkpoints/beta-B``."""
    from medfm.methods.chexalign.pairs import kto_rows
    from medfm.methods.chexalign.sampling import read_jsonl

    path = _input(cfg.pairs, "pairs.jsonl", "pairs")
    pairs = read_jsonl(path)
    pairs = pairs[: cfg.limit] if cfg.limit else pairs
    if not pairs:
        raise DataError(f"{path} holds no pairs (every study tied or failed); sample more studies or candidates")
    if not cfg.betas:
        raise UsageError("--betas needs at least one value")
    rows = kto_rows(pairs) if cfg.algorithm == "kto" else pairs
    run = Run(METHOD, "train", cfg)
    if cfg.dry_run:
        return run.plan(
            [
                f"{len(pairs)} pairs from {path} ({len(rows)} training rows)",
                f"{cfg.algorithm} with beta in {cfg.betas} from policy {cfg.policy}",
                f"{f'{cfg.train.steps} steps' if cfg.train.steps else f'{cfg.train.epochs:g} epochs'}, "
                f"batch {cfg.train.batch_size} x {cfg.train.grad_accum}, lr {cfg.train.lr}",
            ]
        )
    with run.start():
        from medfm.core.runs import resolve_device
        from medfm.methods.chexalign.trainers import build_trainer, last_checkpoint
        from medfm.methods.vlm.model import load_vlm, save_vlm

        device = resolve_device(cfg.device)
        res = run.new_results()
        finals = []
        for beta in cfg.betas:
            tag = "final" if len(cfg.betas) == 1 else f"beta-{beta:g}"
            final = run.checkpoints / tag
            if (final / "config.json").is_file():
                log.info("beta %g already trained (%s); skipping", beta, final)
                finals.append(final)
                continue
            model, processor = load_vlm(cfg.policy, device=device)
            model.train()
            ref, _ = load_vlm(cfg.policy, device=device)
            workdir = run.checkpoints / f"trainer-{tag}"
            trainer = build_trainer(
                cfg.algorithm, model, ref, processor, rows, cfg.train, beta, workdir, cfg.seed, device
            )
            resume = last_checkpoint(workdir)
            t0 = time.perf_counter()
            out = trainer.train(resume_from_checkpoint=resume)
            seconds = time.perf_counter() - t0
            for h in trainer.state.log_history:
                if "loss" in h:
                    run.metrics.log(
                        int(h.get("step", 0)),
                        **{f"{k}@{beta:g}": v for k, v in h.items() if isinstance(v, int | float) and k != "step"},
                    )
            logs = [h for h in trainer.state.log_history if "loss" in h]
            group = f"beta={beta:g}"
            res.add("final_loss", logs[-1]["loss"] if logs else None, group=group, n=len(rows), higher_is_better=False)
            res.add("first_loss", logs[0]["loss"] if logs else None, group=group, n=len(rows), higher_is_better=False)
            if logs and "rewards/accuracies" in logs[-1]:
                res.add(
                    "reward_accuracy",
                    logs[-1]["rewards/accuracies"],
                    group=group,
                    n=len(rows),
                    note="fraction of the last batch with implicit reward(chosen) > reward(rejected)",
                )
            res.add("train_seconds", seconds, group=group, higher_is_better=False, note=f"on {device}")
            res.meta.setdefault("resumed_from", {})[f"{beta:g}"] = resume
            run.save_results(res)
            policy = trainer.model
            policy.eval()
            card = _card(run, cfg, policy, rows, beta, int(out.global_step), seconds, run.dir)
            save_vlm(policy, processor, final, card=card)
            finals.append(final)
        res.meta.update(
            algorithm=cfg.algorithm, betas=cfg.betas, models=[str(f) for f in finals], pairs=str(path), device=device
        )
        run.save_results(res)
        _report(run, f"medfm chexalign train ({cfg.algorithm})")
        for f in finals:
            print(f)
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# evaluate


def run_evaluate(cfg: EvaluateConfig) -> int:
    """Six metrics + length ratio of generated reports (aligned vs SFT, paired CIs) and the alignment tax."""
    from medfm.methods.chexalign.judges import BertScoreJudge, make_judge
    from medfm.methods.chexalign.metrics import (
        alignment_tax,
        paired_differences,
        per_study_scores,
        summarise,
        tax_metrics,
    )

    run = Run(METHOD, "evaluate", cfg)
    studies = _studies(cfg.data, cfg.limit)
    models = [("aligned", cfg.model)] + ([("sft", cfg.baseline)] if cfg.baseline else [])
    if cfg.dry_run:
        return run.plan(
            [
                f"{len(studies)} held-out studies (split {cfg.data.split})",
                *[f"{k}: {m}" for k, m in models],
                f"judge {cfg.judge.kind}, tax {cfg.tax}",
            ]
        )
    with run.start():
        from medfm.core.metrics import difference_ci
        from medfm.core.runs import resolve_device
        from medfm.methods.vlm.config import GenerationOptions
        from medfm.methods.vlm.infer import generate
        from medfm.methods.vlm.model import load_vlm

        device = resolve_device(cfg.device)
        judge = make_judge(
            cfg.judge.kind,
            length_control=False,
            classifier=cfg.judge.classifier,
            backend=cfg.judge.backend,
            cache=str(run.dir / "judge_cache.sqlite"),
        )
        bert = BertScoreJudge(device=device) if cfg.bertscore else None
        refs = [ex.answer for ex in studies]
        labels = [ex.labels for ex in studies]
        res = run.new_results()
        per, texts, taxes = {}, {}, {}
        for key, src in models:
            model, processor = load_vlm(src, device=device)
            gen = generate(
                model,
                processor,
                studies,
                opts=GenerationOptions(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size),
            )
            texts[key] = gen.texts
            per[key] = per_study_scores(gen.texts, refs, labels, judge, bert)
            for name, m in summarise(per[key], gen.texts, refs, cfg.bootstrap, cfg.seed).items():
                res.add(name, m, group=f"model={key}")
            if cfg.tax:
                taxes[key] = alignment_tax(model, processor, studies, seed=cfg.seed)
                for name, m in tax_metrics(taxes[key], cfg.bootstrap, cfg.seed).items():
                    res.add(name, m, group=f"model={key}")
            del model
        for name, m in res.groups["model=aligned"].items():
            res.add(name, m)
        if cfg.baseline:
            for name, m in paired_differences(per["aligned"], per["sft"], cfg.bootstrap, cfg.seed).items():
                res.add(name, m)
            if taxes.get("aligned") and taxes.get("sft"):
                res.add(
                    "delta_tax_vqa_accuracy",
                    difference_ci(
                        taxes["aligned"]["vqa_correct"],
                        taxes["sft"]["vqa_correct"],
                        n_resamples=cfg.bootstrap,
                        seed=cfg.seed,
                        note="alignment tax: aligned - SFT VQA accuracy (paired)",
                    ),
                )
        rows = []
        for i, ex in enumerate(studies):
            row = {
                "id": ex.id,
                "reference": ex.answer,
                "aligned": texts["aligned"][i],
                "green_aligned": float(per["aligned"]["green"][i]),
            }
            if cfg.baseline:
                row.update(sft=texts["sft"][i], green_sft=float(per["sft"]["green"][i]))
            rows.append(row)
        run.write_samples(rows)
        res.tables["examples"] = [{k: (v[:100] if isinstance(v, str) else v) for k, v in r.items()} for r in rows[:8]]
        res.meta.update(models=dict(models), judge=judge.label, device=device, n_studies=len(studies))
        run.save_results(res)
        _study_figure(run, "sft_vs_aligned", (
            f"Held-out studies: the reference report and the greedy report of each model with its {judge.label} "
            "score in brackets."),
            [(r["id"], (ex.images or [None])[0], f"REFERENCE: {r['reference']}\n\n"
              + (f"SFT [{r['green_sft']:.2f}]: {r['sft'] or '(empty)'}\n\n" if cfg.baseline else "")
              + f"ALIGNED [{r['green_aligned']:.2f}]: {r['aligned'] or '(empty)'}")
             for r, ex in list(zip(rows, studies))[:3]])  # fmt: skip
        _report(run, "medfm chexalign evaluate")
        for name, m in res.metrics.items():
            print(f"{name}: {m.format()}")
    return 0
