"""Run functions of the ``medfm mass`` verbs: thin orchestration over the modules of this package."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from medfm.core.errors import DataError, UsageError
from medfm.core.runs import Run
from medfm.methods.mass.dice import dice_metrics

log = logging.getLogger(__name__)

METHOD = "mass"


def _describe_data(opts: Any) -> str:
    if opts.datalist:
        return f"datalist {opts.datalist} (split {opts.split})"
    return (f"{opts.phantom_n} CT phantoms #{opts.phantom_first}..{opts.phantom_first + opts.phantom_n - 1} "
            f"shape {opts.phantom_shape} spacing {opts.phantom_spacing} mm")  # fmt: skip


def _check_data(opts: Any) -> None:
    if opts.datalist and not Path(opts.datalist).is_file():
        raise DataError(f"datalist {opts.datalist} does not exist")


def _load_model(checkpoint: str | None, model_opts: Any, device: str):
    """The network of a pretrained or fine-tuned checkpoint (a fine-tuned one's learned prompts are not needed by
    segment/finetune/probe), or a fresh one from ``model_opts``."""
    from medfm.core.hub import load_config
    from medfm.methods.mass.incontext import PromptedIris
    from medfm.methods.mass.model import IrisNet, build_model

    if checkpoint:
        if str(load_config(checkpoint).get("medfm_class", "")).endswith(":PromptedIris"):
            return PromptedIris.from_pretrained(checkpoint, device=device).model
        return IrisNet.from_pretrained(checkpoint, device=device)
    return build_model(model_opts).to(device).eval()


def _finish(run: Run, results: Any = None) -> Path:
    """Save ``results`` (unless already saved, e.g. before a model card that reads them) and render report.html."""
    from medfm.core.report import render_run_report

    if results is not None:
        run.save_results(results)
    return render_run_report(run.dir)


# ----------------------------------------------------------------------------------------------------------------------
# prepare


def proposals_figure(case: Any, masks: list[np.ndarray], max_masks: int = 40):
    """Axial and coronal centre slices of one volume: the image, its automatic masks (largest ``max_masks``, one
    colour each, painted largest first so small ones stay visible) and, when labelled, the label map."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    shape = case.image.shape
    paint = np.zeros(int(np.prod(shape)), np.int32)
    for k, idx in enumerate(masks[:max_masks], 1):
        paint[idx] = k
    paint = paint.reshape(shape)
    _, y, z = (s // 2 for s in shape)
    views = [("axial", lambda a: a[:, :, z].T), ("coronal", lambda a: a[:, y, :].T)]
    cols = 3 if case.label is not None else 2
    fig, axes = plt.subplots(2, cols, figsize=(2.9 * cols, 5.6), squeeze=False)
    cmap = plt.get_cmap("tab20", 20)
    for row, (view, cut) in zip(axes, views):
        img = cut(case.image)
        row[0].imshow(img, cmap="gray", origin="lower")
        row[0].set_title(f"{case.id} {view}", fontsize=8)
        row[1].imshow(img, cmap="gray", origin="lower")
        m = cut(paint)
        row[1].imshow(np.ma.masked_where(m == 0, m % 20), cmap=cmap, vmin=0, vmax=19, alpha=0.6,
                      interpolation="nearest", origin="lower")  # fmt: skip
        row[1].set_title(f"automatic masks (largest {min(max_masks, len(masks))} of {len(masks)})", fontsize=8)
        if case.label is not None:
            lab = cut(case.label)
            row[2].imshow(img, cmap="gray", origin="lower")
            row[2].imshow(np.ma.masked_where(lab == 0, lab % 20), cmap=cmap, vmin=0, vmax=19, alpha=0.6,
                          interpolation="nearest", origin="lower")  # fmt: skip
            row[2].set_title("ground-truth labels (not used)", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    return fig


def run_prepare(cfg: Any) -> int:
    """Preprocess volumes, propose masks, write the cache + index.json, report proposal quality vs labels."""
    from medfm.core.files import atomic_write_json
    from medfm.core.metrics import mean_ci
    from medfm.core.runs import progress
    from medfm.methods.mass.data import INDEX_SCHEMA, load_cases, save_prepared
    from medfm.methods.mass.proposals import build_generators, proposal_quality, propose_masks

    _check_data(cfg.data)
    run = Run(METHOD, "prepare", cfg)
    if cfg.dry_run:
        return run.plan([f"read {_describe_data(cfg.data)}", f"generators: {', '.join(cfg.proposals.generators)}",
                         f"write {run.dir}/volumes/*.npz and index.json"])  # fmt: skip
    with run:
        cases = load_cases(cfg.data, cfg.limit)
        gens = build_generators(cfg.proposals, cfg.data.modality)
        entries, quality_rows, times = [], [], []
        for case in progress(cases, desc="mask proposals"):
            t0 = time.perf_counter()
            masks, sources, _ = propose_masks(case.raw, case.image, case.spacing, cfg.proposals,
                                              cfg.data.modality, gens)  # fmt: skip
            times.append(time.perf_counter() - t0)
            entries.append(save_prepared(run.dir, case, masks, sources))
            if len(entries) == 1:  # the first volume's masks, as a reader would want to check them
                run.save_figure("proposals", proposals_figure(case, masks), (
                    f"{case.id}: centre axial and coronal slices of the preprocessed volume, its automatic masks "
                    f"({', '.join(cfg.proposals.generators)}; one colour per mask, colours repeat every 20) and, "
                    "for reference only, the ground-truth label map that pretraining never sees."))  # fmt: skip
            if case.label is not None:
                for name, q in proposal_quality(masks, case.label, case.labels).items():
                    quality_rows.append({"case": case.id, "structure": name, **q})
            log.info("%s: %d masks in %.1f s", case.id, len(masks), times[-1])
        atomic_write_json(run.dir / "index.json", {"schema": INDEX_SCHEMA, "modality": cfg.data.modality,
                                                   "generators": list(cfg.proposals.generators),
                                                   "volumes": entries})  # fmt: skip
        res = run.new_results()
        res.add(
            "masks_per_volume",
            mean_ci([e["n_masks"] for e in entries]),
        )
        res.add("seconds_per_volume", mean_ci(times, higher_is_better=False))
        if quality_rows:
            res.add("proposal_best_dice", mean_ci([r["best_dice"] for r in quality_rows]))
            by_struct: dict[str, list[float]] = {}
            for r in quality_rows:
                by_struct.setdefault(r["structure"], []).append(r["best_dice"])
            res.tables["proposal_quality"] = [
                {"structure": k, "best_dice_mean": round(float(np.mean(v)), 4), "volumes": len(v)}
                for k, v in sorted(by_struct.items())
            ]
        res.meta.update(volumes=len(entries), data=_describe_data(cfg.data))
        _finish(run, res)
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# pretrain


def _card(run: Run, model: Any, *, name: str, data_size: int, sources: list[str], annotation: str, paradigm: list[str],
          objective: str, steps: int, samples: int, seconds: float, capabilities: list[str], base: str) -> Any:  # fmt: skip
    from medfm.core.cards import Capabilities, Training, TrainingData, card_from_run, method_facts

    return card_from_run(
        run.dir, name=name, method=METHOD,
        data=TrainingData(size=data_size, unit="volumes", modalities=["CT"], body_regions=["thorax", "abdomen", "pelvis"],
                          annotation=annotation, sources=sources, synthetic=any("phantom" in s for s in sources)),
        training=Training(paradigm=paradigm, objective=objective,
                          architecture=f"Iris 3D residual U-Net, channels {model.channels}, "
                                       f"{model.num_prior_stage} prior stages, {model.num_tokens} tokens per task",
                          base_model=base, steps=steps, samples_seen=samples),
        capabilities=Capabilities(supported=capabilities, inputs="3D CT volume (1, D, H, W), z-scored; reference "
                                  "volume + binary masks", outputs="per-task logits (K, D, H, W)"),
        **method_facts(__package__, "model"),
        model=model, seconds=seconds,
    )  # fmt: skip


def run_pretrain(cfg: Any) -> int:
    """Pretrain (MASS or an SSL baseline) on a prepare run's cache; saves EMA weights + card to checkpoints/final."""
    from medfm.core.metrics import mean_ci
    from medfm.core.runs import resolve_device
    from medfm.methods.mass.data import load_prepared, read_index
    from medfm.methods.mass.pretrain import pretrain

    index = read_index(cfg.masks)
    run = Run(METHOD, "pretrain", cfg)
    if cfg.dry_run:
        return run.plan([f"{len(index['volumes'])} prepared volumes from {cfg.masks}",
                         f"objective {cfg.task.objective}, {cfg.train.steps} steps x batch {cfg.train.batch_size}, "
                         f"crop {cfg.task.crop}, K={cfg.task.num_masks}",
                         f"write {run.dir}/checkpoints/final"])  # fmt: skip
    device = resolve_device(cfg.device)
    with run:
        cases = load_prepared(cfg.masks, cfg.limit)
        out = pretrain(cases, cfg, run.dir, device)
        res = run.new_results()
        rows = run.metrics.read()
        res.add("final_loss", out["loss_last"], higher_is_better=False, n=out["steps"])
        res.add("steps_per_second", out["steps_run"] / max(out["step_seconds"], 1e-9), n=out["steps_run"],
                note="steps run by this invocation (a resumed run counts only the steps after the checkpoint)")  # fmt: skip
        res.add(
            "sampling_share",
            out["sample_seconds"] / max(out["step_seconds"], 1e-9),
            higher_is_better=False,
            note="fraction of wall time spent sampling masks and augmenting (steps run by this invocation)",
        )
        if len(rows) >= 2:
            res.add("loss_last_quarter", mean_ci([r["loss"] for r in rows[-max(1, len(rows) // 4):]],
                                                 higher_is_better=False))  # fmt: skip
        res.meta.update(objective=cfg.task.objective, k=out["k"], volumes=len(cases), masks=cfg.masks)
        run.save_results(res)
        model = out["model"]
        paradigm = {"mass": "self-supervised-mask-guided", "simclr": "self-supervised-contrastive",
                    "mim": "self-supervised-generative"}[cfg.task.objective]  # fmt: skip
        objective = {"mass": "in-context segmentation of automatic masks, adaptive-alpha Dice + BCE",
                     "simclr": "NT-Xent contrastive loss on two overlapping views",
                     "mim": "masked-cube reconstruction (L1)"}[cfg.task.objective]  # fmt: skip
        sources = sorted({str(c.case.meta.get("source", c.case.id)).split(" index=")[0] for c in cases})
        card = _card(run, model, name=f"mass-{cfg.task.objective}-{run.dir.name}", data_size=len(cases),
                     sources=sources, annotation="automatic" if cfg.task.objective == "mass" else "none",
                     paradigm=[paradigm], objective=objective, steps=out["steps"], samples=out["samples_seen"],
                     seconds=out["seconds"], capabilities=["in-context", "few-shot", "fine-tuning", "segmentation",
                                                           "linear-probe", "classification"], base="scratch")  # fmt: skip
        model.save_pretrained(run.dir / "checkpoints" / "final", card=card)
        _finish(run)  # results were saved before the card, which reads them
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# segment / finetune / probe


def _overlay_figure(case: Any, prob: np.ndarray, structure: int, name: str, ref: Any = None):
    """Axial slices: reference mask, prediction and ground truth at the structure's centre slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medfm.methods.mass.incontext import median_foreground_voxel

    panels = []
    if ref is not None and ref.label is not None and (ref.label == structure).any():
        z = median_foreground_voxel(ref.label == structure)[2]
        panels.append(("reference mask", ref.image[:, :, z], ref.label[:, :, z] == structure))
    gt = case.label == structure
    z = median_foreground_voxel(gt)[2] if gt.any() else case.image.shape[2] // 2
    panels.append(("prediction", case.image[:, :, z], prob[:, :, z] >= 0.5))
    panels.append(("ground truth", case.image[:, :, z], gt[:, :, z]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3))
    for ax, (title, img, m) in zip(np.atleast_1d(axes), panels):
        ax.imshow(img.T, cmap="gray", origin="lower")
        ax.contour(m.T.astype(float), levels=[0.5], colors="r", linewidths=1)
        ax.set_title(f"{name}: {title}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


def run_segment(cfg: Any) -> int:
    """MASS-IC: encode class tokens from reference volumes, sliding-window segment targets, Dice/HD95 with CIs."""
    from medfm.core.runs import resolve_device
    from medfm.methods.mass.data import load_cases, structure_ids
    from medfm.methods.mass.incontext import class_tokens, evaluate, predict_volume

    _check_data(cfg.data)
    _check_data(cfg.reference)
    run = Run(METHOD, "segment", cfg)
    if cfg.dry_run:
        return run.plan(
            [
                f"model: {cfg.checkpoint or 'random init (no pretraining)'}",
                f"references: {cfg.eval.shots} of {_describe_data(cfg.reference)}",
                f"targets: {_describe_data(cfg.data)}",
                f"structures: {', '.join(cfg.eval.structures)}",
            ]
        )
    device = resolve_device(cfg.device)
    with run:
        model = _load_model(cfg.checkpoint, cfg.model, device)
        refs = load_cases(cfg.reference, cfg.eval.shots)
        targets = load_cases(cfg.data, cfg.limit)
        structures = structure_ids(list(cfg.eval.structures), refs[0].labels or targets[0].labels)
        tokens = class_tokens(model, refs, structures, cfg.crop)
        rows = evaluate(model, tokens, targets, structures, cfg.crop, cfg.eval.overlap, cfg.eval.threshold,
                        cfg.eval.hd95)  # fmt: skip
        if not rows:
            raise DataError("none of the requested structures is present in the target label maps")
        res = run.new_results()
        dice_metrics(res, rows)
        res.meta.update(checkpoint=cfg.checkpoint, references=[r.id for r in refs], shots=len(refs))
        name, value = next(iter(structures.items()))
        prob = predict_volume(model, targets[0].image, [t[:, :1] for t in tokens], cfg.crop, cfg.eval.overlap)[0]
        fig = _overlay_figure(targets[0], prob, value, name, refs[0])
        run.save_figure("overlay", fig, (
            f"1-shot in-context segmentation of {name}: the reference (support) mask that defines the task, the "
            f"prediction (probability >= 0.5, red contour) and the ground truth on {targets[0].id}'s axial slice "
            "through the structure's median voxel."))  # fmt: skip
        _finish(run, res)
    return 0


def run_finetune(cfg: Any) -> int:
    """MASS-FT (or scratch without --checkpoint): prompts + weights on labelled volumes; Dice/HD95 on test volumes."""
    from medfm.core.runs import resolve_device
    from medfm.methods.mass.data import load_cases, structure_ids
    from medfm.methods.mass.incontext import evaluate, finetune

    _check_data(cfg.data)
    _check_data(cfg.test)
    if cfg.label_fraction is not None and not 0 < cfg.label_fraction <= 1:
        raise UsageError(f"--label_fraction must be in (0, 1], got {cfg.label_fraction}")
    run = Run(METHOD, "finetune", cfg)
    if cfg.dry_run:
        return run.plan(
            [
                f"model: {cfg.checkpoint or 'scratch'}",
                f"train: {_describe_data(cfg.data)}",
                f"test: {_describe_data(cfg.test)}",
                f"{cfg.steps} steps, mode {cfg.mode}",
            ]
        )
    device = resolve_device(cfg.device)
    with run:
        model = _load_model(cfg.checkpoint, cfg.model, device)
        if cfg.label_fraction is None:
            train = load_cases(cfg.data, cfg.eval.shots)
        else:
            train = load_cases(cfg.data)
            train = train[: max(1, round(cfg.label_fraction * len(train)))]
        test = load_cases(cfg.test, cfg.limit)
        structures = structure_ids(list(cfg.eval.structures), train[0].labels)
        t0 = time.perf_counter()
        prompted = finetune(model, train, structures, cfg, cfg.seed, device, run.metrics, run_dir=run.dir)
        seconds = time.perf_counter() - t0
        rows = evaluate(prompted.model, prompted.tokens(), test, structures, cfg.crop, cfg.eval.overlap,
                        cfg.eval.threshold, cfg.eval.hd95)  # fmt: skip
        res = run.new_results()
        dice_metrics(res, rows)
        res.meta.update(checkpoint=cfg.checkpoint, train_volumes=[c.id for c in train], mode=cfg.mode)
        run.save_results(res)
        card = _card(run, prompted.model, name=f"mass-finetuned-{run.dir.name}", data_size=len(train),
                     sources=[_describe_data(cfg.data)], annotation="manual", paradigm=["supervised"],
                     objective="Dice + BCE on labelled structures with learnable class prompts", steps=cfg.steps,
                     samples=cfg.steps * cfg.batch_size, seconds=seconds, capabilities=["segmentation", "few-shot"],
                     base=cfg.checkpoint or "scratch")  # fmt: skip
        prompted.save_pretrained(run.dir / "checkpoints" / "final", card=card)
        _finish(run)  # results were saved before the card, which reads them
    return 0


def run_probe(cfg: Any) -> int:
    """Frozen-encoder classification: attention pooling + linear head; AUROC with a bootstrap CI."""
    from medfm.core.metrics import auroc, with_ci
    from medfm.core.runs import resolve_device
    from medfm.methods.mass.data import load_cases
    from medfm.methods.mass.probe import run_probe as probe

    _check_data(cfg.data)
    _check_data(cfg.test)
    run = Run(METHOD, "probe", cfg)
    if cfg.dry_run:
        return run.plan(
            [
                f"encoder: {cfg.checkpoint or 'random init'} (frozen)",
                f"target: {cfg.target}",
                f"train: {_describe_data(cfg.data)}",
                f"test: {_describe_data(cfg.test)}",
            ]
        )
    device = resolve_device(cfg.device)
    with run:
        model = _load_model(cfg.checkpoint, cfg.model, device)
        train, test = load_cases(cfg.data), load_cases(cfg.test, cfg.limit)
        y, scores, y_train = probe(model, train, test, cfg.target, cfg, cfg.seed)
        res = run.new_results()
        res.add("auroc", with_ci(auroc, y, scores, strata=y))
        res.meta.update(target=cfg.target, train_positive=int(y_train.sum()), train_n=len(y_train),
                        test_positive=int(y.sum()), test_n=len(y))  # fmt: skip
        run.write_samples([{"case": c.id, "label": int(t), "score": float(s)} for c, t, s in zip(test, y, scores)])
        _finish(run, res)
    return 0
