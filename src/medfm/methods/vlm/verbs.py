"""Run functions of the ``medfm vlm`` verbs (imported only when a verb runs)."""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path
from typing import Any

from medfm.core.errors import UsageError
from medfm.core.runs import Run
from medfm.methods.vlm.config import EvaluateConfig, GenerateConfig, PrepareConfig, TrainConfig
from medfm.methods.vlm.data import Example

log = logging.getLogger(__name__)

METHOD = "vlm"


def _limit(items: list[Any], limit: int | None) -> list[Any]:
    return items[:limit] if limit else items


def load_examples(data: Any, limit: int | None = None) -> tuple[list[Example], list[Example]]:
    """(report examples, VQA examples) of ``data.split`` from the configured manifests."""
    from medfm.methods.vlm.data import load_report_examples, load_vqa_examples

    if not data.reports and not data.vqa:
        raise UsageError("give --data.reports (image–report manifest) and/or --data.vqa (VQA manifest)")
    reports = load_report_examples(data.reports, data.split, data.report_prompt, data.report_section) \
        if data.reports else []  # fmt: skip
    vqa = load_vqa_examples(data.vqa, data.split) if data.vqa else []
    return _limit(reports, limit), _limit(vqa, limit)


# ----------------------------------------------------------------------------------------------------------------------
# prepare


def run_prepare(cfg: PrepareConfig) -> int:
    """Write ``<run>/vqa.csv`` (image, question, answer, finding, split) from a labelled image–report manifest."""
    from medfm.core.files import atomic_write_text
    from medfm.data.manifests import read_report_manifest
    from medfm.methods.vlm.data import vqa_from_labels

    run = Run(METHOD, "prepare", cfg)
    records = _limit(read_report_manifest(cfg.reports), cfg.limit)
    if cfg.dry_run:
        return run.plan([f"read {len(records)} rows of {cfg.reports}",
                         f"write {cfg.per_image} yes/no questions per image to {run.dir / 'vqa.csv'}"])  # fmt: skip
    with run.start(with_device=False):
        rows = vqa_from_labels(
            [{"id": r.id, "image": str(r.image) if r.image else "", "split": r.split, "labels": r.labels}
             for r in records],
            cfg.findings, cfg.per_image, cfg.seed,
        )  # fmt: skip
        if not rows:
            from medfm.core.errors import DataError

            raise DataError(f"{cfg.reports}: no finding label columns with a question template; "
                            "expected CheXpert-named columns such as 'Pleural Effusion'")  # fmt: skip
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["id", "image", "question", "answer", "finding", "split"],
                           lineterminator="\n")  # fmt: skip
        w.writeheader()
        w.writerows(rows)
        path = atomic_write_text(run.dir / "vqa.csv", buf.getvalue())
        res = run.new_results()
        res.add("questions", float(len(rows)), n=len(records), note="yes/no questions written")
        res.add("yes_rate", sum(r["answer"] == "yes" for r in rows) / len(rows), n=len(rows))
        run.save_results(res)
        _questions_figure(run, rows)
        from medfm.core.report import render_run_report

        render_run_report(run.dir, "medfm vlm prepare")
        print(path)
    return 0


def _questions_figure(run: Run, rows: list[dict[str, Any]], n: int = 4) -> None:
    """Up to ``n`` images with the yes/no questions written for them (what the VQA training set asks)."""
    from medfm.core.report import display_array, text_panels_grid

    by_image: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["image"]:
            by_image.setdefault(r["image"], []).append(r)
    cells = []
    for image, qs in list(by_image.items())[:n]:
        try:
            arr = display_array(image)
        except Exception as exc:  # a figure must never fail the verb
            log.warning("vlm prepare: cannot show %s: %s", image, exc)
            continue
        cells.append((Path(image).name, arr, "\n".join(f"{q['question']} -> {q['answer']}" for q in qs)))
    if cells:
        run.save_figure("questions", text_panels_grid(cells), (
            "Images of the manifest with the yes/no questions written for them and their answers, taken from the "
            "manifest's finding labels (positive, negative or uncertain -> skipped)."))  # fmt: skip


def _generations_figure(run: Run, reports: list[Example], texts: list[str], n: int = 3) -> None:
    """Up to ``n`` images, each beside its generated and reference report."""
    from medfm.core.report import display_array, text_panels_grid

    cells = []
    for ex, t in list(zip(reports, texts))[:n]:
        if not ex.images:
            continue
        try:
            arr = display_array(ex.images[0])
        except Exception as exc:
            log.warning("vlm evaluate: cannot show the image of %s: %s", ex.id, exc)
            continue
        cells.append((ex.id, arr, f"GENERATED:\n{t.strip() or '(empty)'}\n\nREFERENCE:\n{ex.answer.strip()}"))
    if cells:
        run.save_figure("generated_vs_reference", text_panels_grid(cells), (
            "Evaluation images (left) with the report the model generated and the reference report (right), the "
            "first examples of the split; finding F1 compares the findings extracted from the two."))  # fmt: skip


def _per_finding_figure(run: Run, per_finding: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = [k for k, v in per_finding.items() if v is not None]
    if not names:
        return
    fig, ax = plt.subplots(figsize=(5.5, 0.3 * len(names) + 1.0))
    ax.barh(names, [per_finding[k] for k in names], color="#4c72b0")
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 of the finding (0-1)")
    ax.invert_yaxis()
    fig.tight_layout()
    run.save_figure("per_finding_f1", fig, (
        "F1 per finding between the findings extracted (lexicon labeller) from the generated and the reference "
        "reports; a finding absent from every reference has no bar."))  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# train


def _card(
    run: Run, cfg: TrainConfig, spec: Any, model: Any, reports: list[Example], vqa: list[Example], out: dict[str, Any]
):
    from medfm.core.cards import Capabilities, Training, TrainingData, card_from_run, method_facts

    sources = [s for s in (cfg.data.reports, cfg.data.vqa) if s]
    prevalence: dict[str, float] = {}
    if reports and reports[0].labels:
        from medfm.methods.vlm.data import present

        for f in reports[0].labels:
            prevalence[f] = sum(present(ex.labels.get(f)) for ex in reports) / len(reports)
    synthetic = any("phantom" in str(s).lower() or "cxr" in str(s).lower() for s in sources)
    lm = spec.lm.source if not spec.init else f"{spec.init} ({spec.lm.source})"
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    vcfg = base.config.vision_config  # the built tower's geometry (kind hf/chexficient: not the spec's fields)
    size, patch = int(vcfg.image_size), int(vcfg.patch_size)
    tower = spec.vision.kind + (f" ({spec.vision.path})" if spec.vision.kind != "siglip" else "")
    return card_from_run(
        run.dir,
        name=f"medfm-vlm-{Path(run.dir).name}",
        method=METHOD,
        data=TrainingData(
            size=len(reports) + len(vqa),
            unit="image-report pairs + image-question-answer triples" if vqa else "image-report pairs",
            modalities=["CXR", "text"],
            body_regions=["chest"],
            annotation="report-derived" if vqa else "none",
            sources=sources,
            synthetic=synthetic,
            statistics={"reports": len(reports), "vqa": len(vqa), "split": cfg.data.split, "prevalence": prevalence},
        ),
        training=Training(
            paradigm=["supervised", "vision-language-alignment"],
            objective="next-token cross-entropy on the assistant answer (reports / VQA answers)",
            architecture=f"LLaVA: {tower} image tower ({size}px, patch {patch}) + 2-layer GELU projector + causal "
            f"LM ({lm}); LM mode {cfg.train.lm_mode}{', tower frozen' if cfg.train.freeze_tower else ''}",
            base_model=lm if lm != "tiny" else "scratch",
            steps=cfg.train.steps,
            samples_seen=out["samples_seen"],
            precision=cfg.train.mixed_precision if cfg.train.mixed_precision != "no" else "fp32",
        ),
        capabilities=Capabilities(
            supported=["generation"],
            inputs="one chest X-ray (PNG/JPEG/DICOM, greyscale) + a chat instruction",
            outputs="free-text report or short answer",
        ),
        **method_facts(__package__, "sft", size=size, max_images=spec.max_images),
        model=model,
        seconds=out["seconds"],
    )


def run_train(cfg: TrainConfig) -> int:
    """SFT; writes ``checkpoints/last`` (resumable) and ``checkpoints/final`` (HF folder + model card)."""
    from medfm.core.config import to_dict
    from medfm.core.runs import resolve_device
    from medfm.methods.vlm.model import save_vlm, trainable_summary
    from medfm.methods.vlm.train import make_model, train_sft

    run = Run(METHOD, "train", cfg)
    reports, vqa = load_examples(cfg.data, cfg.limit)
    examples = reports + vqa
    if cfg.dry_run:
        return run.plan([
            f"{len(reports)} report examples, {len(vqa)} VQA examples (split {cfg.data.split})",
            f"model: {cfg.model.init or 'build ' + cfg.model.vision.kind + ' tower + LM ' + cfg.model.lm.source}",
            f"{cfg.train.steps} steps x batch {cfg.train.batch_size}, LM {cfg.train.lm_mode}, "
            f"tower {'frozen' if cfg.train.freeze_tower else 'trained'}",
            f"checkpoints every {cfg.train.checkpoint_every} steps in {run.dir / 'checkpoints'}",
        ])  # fmt: skip
    with run.start():
        device = resolve_device(cfg.device)
        model, processor = make_model(cfg.model, seed=cfg.seed)
        spec = cfg.model
        if cfg.model.init:  # a loaded model keeps its own parts; the run's prompt/limits apply
            from dataclasses import replace

            from medfm.methods.vlm.model import spec_of

            spec = replace(spec_of(model), init=cfg.model.init, system_prompt=cfg.model.system_prompt,
                           max_length=cfg.model.max_length, max_images=cfg.model.max_images)  # fmt: skip
        model.config.medfm_vlm = to_dict(spec)
        out = train_sft(model, processor, examples, cfg.train, spec, run.dir, seed=cfg.seed, device=device,
                        metrics_log=run.metrics)  # fmt: skip
        model = out["model"]
        res = run.new_results()
        res.add("final_loss", out["final_loss"], n=out["steps"], higher_is_better=False,
                note="mean training loss over the last 10 micro-batches")  # fmt: skip
        res.add("train_samples_per_s", out["samples_per_s"], n=out["samples_seen"],
                note=f"on {device}, {out['seconds']:.1f} s")  # fmt: skip
        res.meta.update(trainable_summary(model), resumed_from=out["resumed_from"], device=device)
        run.save_results(res)
        card = _card(run, cfg, spec, model, reports, vqa, out)
        final = save_vlm(model, processor, run.checkpoints / "final", card=card)
        from medfm.core.report import render_run_report

        render_run_report(run.dir, "medfm vlm train")
        print(final)
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# generate / evaluate


def run_generate(cfg: GenerateConfig) -> int:
    """Write ``samples.jsonl`` (id, prompt, generated, reference) for a manifest's split."""
    from medfm.core.runs import resolve_device
    from medfm.methods.vlm.infer import generate
    from medfm.methods.vlm.model import load_vlm

    run = Run(METHOD, "generate", cfg)
    reports, vqa = load_examples(cfg.data, cfg.limit)
    examples = reports + vqa
    if cfg.dry_run:
        return run.plan([f"load {cfg.model}", f"generate for {len(examples)} examples (split {cfg.data.split}), "
                         f"max {cfg.generation.max_new_tokens} new tokens"])  # fmt: skip
    with run.start():
        model, processor = load_vlm(cfg.model, device=resolve_device(cfg.device))
        gen = generate(model, processor, examples, opts=cfg.generation)
        run.write_samples(
            {"id": ex.id, "kind": ex.kind, "prompt": ex.prompt, "generated": t, "reference": ex.answer, "tokens": n}
            for ex, t, n in zip(examples, gen.texts, gen.new_tokens)
        )
        res = run.new_results()
        res.add("generation_tokens_per_s", gen.tokens_per_s, n=len(examples),
                note=f"KV cache {'on' if cfg.generation.use_cache else 'off'}")  # fmt: skip
        res.add("mean_new_tokens", sum(gen.new_tokens) / max(1, len(gen.new_tokens)), n=len(examples))
        run.save_results(res)
        from medfm.core.report import render_run_report

        render_run_report(run.dir, "medfm vlm generate")
        print(run.dir / "samples.jsonl")
    return 0


def evaluate_examples(model: Any, processor: Any, reports: list[Example], vqa: list[Example], gen_opts: Any,
                      n_boot: int = 1000, seed: int = 0, blind: bool = False) -> dict[str, Any]:  # fmt: skip
    """Generate and score; returns ``{"reports": score_reports(...) | None, "vqa": score_vqa(...) | None,
    "report_texts", "vqa_texts", "tokens_per_s"}``."""
    from medfm.methods.vlm.infer import generate, score_reports, score_vqa, srr_report_f1

    out: dict[str, Any] = {"reports": None, "vqa": None, "report_texts": [], "vqa_texts": []}
    t_tok, t_s = 0, 0.0
    if reports:
        g = generate(model, processor, reports, opts=gen_opts, blind=blind)
        out["reports"] = score_reports(g.texts, reports, n_boot, seed)
        out["reports"]["srr_f1"] = srr_report_f1(g.texts, [ex.answer for ex in reports])
        out["report_texts"] = g.texts
        t_tok, t_s = t_tok + sum(g.new_tokens), t_s + g.seconds
    if vqa:
        from dataclasses import replace

        g = generate(model, processor, vqa, opts=replace(gen_opts, max_new_tokens=min(gen_opts.max_new_tokens, 4)),
                     blind=blind)  # fmt: skip
        out["vqa"] = score_vqa(g.texts, vqa, n_boot, seed)
        out["vqa_texts"] = g.texts
        t_tok, t_s = t_tok + sum(g.new_tokens), t_s + g.seconds
    out["tokens_per_s"] = t_tok / t_s if t_s > 0 else float("nan")
    return out


def run_evaluate(cfg: EvaluateConfig) -> int:
    """Finding F1 (+ per finding, extractor ceiling), F1-SRR-BERT and VQA accuracy, with bootstrap CIs."""
    from medfm.core.runs import resolve_device
    from medfm.methods.vlm.findings import EVAL_FINDINGS
    from medfm.methods.vlm.model import load_vlm

    run = Run(METHOD, "evaluate", cfg)
    reports, vqa = load_examples(cfg.data, cfg.limit)
    if reports and not any(ex.labels for ex in reports):
        from medfm.core.errors import DataError

        raise DataError(f"{cfg.data.reports}: no finding label columns; finding F1 needs labels "
                        f"(e.g. {', '.join(EVAL_FINDINGS[:3])})")  # fmt: skip
    if cfg.dry_run:
        return run.plan([f"load {cfg.model}", f"score {len(reports)} generated reports and {len(vqa)} VQA answers "
                         f"(split {cfg.data.split}), {cfg.bootstrap} bootstrap resamples"])  # fmt: skip
    with run.start():
        t0 = time.perf_counter()
        model, processor = load_vlm(cfg.model, device=resolve_device(cfg.device))
        ev = evaluate_examples(model, processor, reports, vqa, cfg.generation, cfg.bootstrap, cfg.seed)
        res = run.new_results()
        rows = []
        if ev["reports"] is not None:
            r = ev["reports"]
            res.add("finding_f1", r["f1"])
            if r["ceiling_f1"] is not None:
                res.add("finding_f1_reference_ceiling", r["ceiling_f1"], n=len(reports),
                        note="F1 of the findings extracted from the reference reports (extractor ceiling)")  # fmt: skip
            if r["srr_f1"] is not None:
                res.add("f1_srr_bert_lexicon", r["srr_f1"], n=len(reports),
                        note="SRRG F1-SRR-BERT (impression, leaves) with the lexicon labeller")  # fmt: skip
            for f, v in r["per_finding"].items():
                res.add("f1", v, group=f"finding={f}", n=len(reports))
            _per_finding_figure(run, {f: getattr(v, "value", v) for f, v in r["per_finding"].items()})
            _generations_figure(run, reports, ev["report_texts"])
            rows += [{"id": ex.id, "kind": "report", "generated": t, "reference": ex.answer}
                     for ex, t in zip(reports, ev["report_texts"])]  # fmt: skip
        if ev["vqa"] is not None:
            res.add("vqa_accuracy", ev["vqa"]["accuracy"])
            rows += [{"id": ex.id, "kind": "vqa", "question": ex.prompt, "generated": t, "reference": ex.answer,
                      "correct": bool(c)} for ex, t, c in zip(vqa, ev["vqa_texts"], ev["vqa"]["correct"])]  # fmt: skip
        res.add("generation_tokens_per_s", ev["tokens_per_s"],
                note=f"KV cache {'on' if cfg.generation.use_cache else 'off'}")  # fmt: skip
        res.meta.update(model=str(cfg.model), seconds=time.perf_counter() - t0, findings=list(EVAL_FINDINGS),
                        extractor="medfm.methods.srrg.lexicon.LexiconLabeller mapped to CheXpert names")  # fmt: skip
        run.write_samples(rows)
        run.save_results(res)
        from medfm.core.report import render_run_report

        render_run_report(run.dir, "medfm vlm evaluate")
        for name, m in res.metrics.items():
            print(f"{name}: {m.format()}")
    return 0
