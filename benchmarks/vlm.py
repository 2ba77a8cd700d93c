"""Benchmark of the small radiology VLM (issue 11) on CXR phantoms, side by side in one run.

0. Image tower (the LLaVA recipe: a CLIP-style tower pretrained on image–text pairs, then frozen): a CheXficient
   dual encoder (2-layer width-128 ViT at 64 px, patch 8, bag-of-sentences text tower) trained contrastively on
   a separate phantom pool (seed 1: other patients than the VLM's train and held-out images), converted exactly to a
   transformers CLIP vision tower (:mod:`medfm.methods.vlm.towers`); the LM sees its 64 patch tokens and CLS.
1. SFT on phantom images with their IMPRESSION text and balanced yes/no VQA pairs from the phantom labels.
2. Held-out images (the phantoms' valid + test patients): finding-level micro F1 of generated reports against the
   phantom labels (findings extracted with SRRG's lexicon labeller) and VQA exact-match accuracy, against
   (a) a text-only LM baseline: the same model and recipe trained with every image replaced by a constant grey one,
   (b) a label-prior baseline: findings drawn with their training prevalence / the majority training answer per
   question. Claims: paired differences with bootstrap CIs (resampling images / questions) above zero.
3. Performance with the real SmolLM2-135M-Instruct LM: training samples/s (LoRA) and generation tokens/s with the
   KV cache on vs off (ratio measured in the same run).

CPU budget: the accuracy experiment uses a small LM (``--lm tiny``: a random 2-layer width-256 Llama with SmolLM2's
tokenizer, full fine-tuning; or ``--lm smollm2-2``: the first 2 of SmolLM2-135M-Instruct's 30 decoder layers, LoRA)
because full 135M-parameter SFT runs at seconds per sample on 2 shared cores; the performance numbers use the full
SmolLM2-135M VLM. ``--tower scratch`` trains a SigLIP tower from scratch through the LM loss instead of step 0 (the
earlier recipe: at 80-900 steps it does not beat the VQA label prior). Run:
``nice -n 10 .venv/bin/python benchmarks/vlm.py [--quick]``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("benchmarks.vlm")


def _examples(batch, idx, kind_prompt):
    from medfm.methods.vlm.data import Example, report_section, vqa_from_labels

    reports, rows = [], []
    for i in idx:
        r = batch.records[i]
        reports.append(Example(r["id"], [batch.images[i]], kind_prompt, report_section(r["report"], "impression"),
                               "report", dict(r["labels"]), None, r["split"]))  # fmt: skip
        rows.append({"id": r["id"], "image": i, "split": r["split"], "labels": r["labels"]})
    vqa = [Example(q["id"], [batch.images[q["image"]]], q["question"], q["answer"], "vqa", {}, q["finding"], q["split"])
           for q in vqa_from_labels(rows, per_image=2, seed=0)]  # fmt: skip
    return reports, vqa


def _paired_f1_diff(counts_a, counts_b, n_boot, seed=0):
    from medfm.core.metrics import with_ci
    from medfm.methods.vlm.findings import f1_from_counts

    stacked = np.concatenate([counts_a, counts_b], axis=1)  # (N, 6), resampled together
    return with_ci(lambda s: f1_from_counts(s[:, :3]) - f1_from_counts(s[:, 3:]), stacked, n_resamples=n_boot,
                   seed=seed)  # fmt: skip


def pretrain_tower(out_dir: Path, n: int, epochs: int, seed: int = 1) -> dict:
    """Step 0: a CheXficient dual encoder trained on ``n`` phantoms of seed ``seed`` (their train split), saved to
    ``out_dir``; returns timing and the zero-shot / linear-probe AUROCs of its image embeddings on that pool's test
    split (how much finding information the frozen tower hands the VLM)."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from medfm.core.config import resolve
    from medfm.core.metrics import auroc
    from medfm.methods.chexficient.config import TrainConfig
    from medfm.methods.chexficient.data import phantom_pairs
    from medfm.methods.chexficient.engine import Trainer
    from medfm.methods.chexficient.evaluation import zero_shot_scores

    t0 = time.perf_counter()
    pairs = phantom_pairs(n, seed, 64, 64)
    cfg = resolve(TrainConfig, [], {
        "seed": "0", "device": "cpu", "train.arm": "full", "train.epochs": str(epochs), "train.batch_size": "256",
        "train.micro_batch_size": "256", "train.lr": "2e-3", "train.min_lr": "2e-4", "train.save_every": "0",
        "train.log_every": "50", "model.embed_dim": "64",
        "model.image_tower": "{kind: vit, image_size: 64, patch_size: 8, width: 128, layers: 2, head_width: 32}",
        "model.text_tower": "{kind: bag, width: 64, buckets: 4096}",
    })  # fmt: skip
    torch.manual_seed(0)
    trainer = Trainer(cfg, pairs.subset(pairs.split_index("train")))
    trainer.fit()
    model = trainer.raw.eval()
    seconds = time.perf_counter() - t0
    model.save_pretrained(out_dir)
    tr, te = pairs.split_index("train"), pairs.split_index("test")
    z_tr, z_te = model.encode_images(pairs.images(tr)).numpy(), model.encode_images(pairs.images(te)).numpy()
    findings = [f for f in pairs.findings if f not in ("No Finding", "Lung Opacity", "Lung Lesion")]
    zs = np.asarray(zero_shot_scores(model, torch.from_numpy(z_te), findings, {}))
    per = {}
    for j, f in enumerate(findings):
        k = pairs.findings.index(f)
        y_tr, y_te = np.isin(pairs.labels[tr, k], (1, -1)), np.isin(pairs.labels[te, k], (1, -1))
        if y_te.sum() in (0, len(y_te)) or y_tr.sum() < 5:
            continue
        probe = LogisticRegression(max_iter=2000).fit(z_tr, y_tr).predict_proba(z_te)[:, 1]
        per[f] = {"zero_shot_auroc": round(float(auroc(y_te, zs[:, j])), 4),
                  "linear_probe_auroc": round(float(auroc(y_te, probe)), 4)}  # fmt: skip
    log.info("tower pretrained in %.0f s: %s", seconds, per)
    return {"seconds": seconds, "pool": n, "pool_seed": seed, "epochs": epochs, "per_finding": per}


def recipe(lm: str, tower: str, steps: int, batch: int, work_dir: Path, tower_pool: int, tower_epochs: int,
           max_images: int = 1, max_length: int = 160) -> tuple[Any, Any, dict | None]:  # fmt: skip
    """``(VLMSpec, TrainOptions, tower info)`` of the benchmark's recipe; pretrains the tower into ``work_dir``."""
    from medfm.methods.vlm.config import LMSpec, TrainOptions, VisionSpec, VLMSpec

    tower_info = None
    if tower == "chexficient":
        tower_dir = work_dir / "chexficient"
        tower_info = pretrain_tower(tower_dir, tower_pool, tower_epochs)
        vision = VisionSpec(kind="chexficient", path=str(tower_dir))
    else:
        vision = VisionSpec(image_size=64, patch_size=16, hidden_size=128, intermediate_size=256, num_layers=2,
                            num_heads=4)  # fmt: skip
    small = lm == "smollm2-2"
    spec = VLMSpec(
        vision=vision,
        lm=LMSpec(source="default", num_layers=2) if small else LMSpec(source="tiny", tiny_hidden=256, tiny_layers=2),
        system_prompt="",
        max_length=max_length,
        max_images=max_images,
    )
    opts = TrainOptions(steps=steps, batch_size=batch, lr=1e-3, lm_lr=1e-3, warmup_steps=5,
                        freeze_tower=tower == "chexficient", lm_mode="lora" if small else "full", lora_r=16,
                        lora_alpha=32, checkpoint_every=0)  # fmt: skip
    return spec, opts, tower_info


def train_phantom_vlm(work_dir: Path, n: int = 900, steps: int = 1200, phantom_seed: int = 0, max_images: int = 1,
                      max_length: int = 160, tower_pool: int = 6000, tower_epochs: int = 30) -> dict:  # fmt: skip
    """The benchmark's VLM (CheXficient tower, tiny LM) trained on the train split of ``n`` phantoms of
    ``phantom_seed`` (reports + VQA); saved to ``work_dir/vlm``. Other benchmarks (SMMILE) use it as "the VLM"."""
    from medfm.data.phantoms.cxr import generate_cxr
    from medfm.methods.vlm.model import build_vlm, save_vlm
    from medfm.methods.vlm.train import train_sft

    batch = generate_cxr(n, seed=phantom_seed, size=64)
    train_idx = [i for i, r in enumerate(batch.records) if r["split"] == "train"]
    reports, vqa = _examples(batch, train_idx, "Write the impression for this chest X-ray.")
    spec, opts, tower_info = recipe("tiny", "chexficient", steps, 8, work_dir, tower_pool, tower_epochs, max_images,
                                    max_length)  # fmt: skip
    model, proc = build_vlm(spec, seed=0)
    out = train_sft(model, proc, reports + vqa, opts, spec, None, seed=0)
    path = save_vlm(out["model"], proc, work_dir / "vlm")
    return {"path": str(path), "seconds": out["seconds"], "final_loss": out["final_loss"], "tower": tower_info,
            "n_train_images": len(train_idx), "phantom_seed": phantom_seed, "steps": steps}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from medfm.core.bench import Benchmark

    bench = Benchmark("vlm", __doc__, default_seeds=1)
    ap = bench.parser
    ap.add_argument("--n", type=int, default=900, help="phantom images (train = the phantoms' train split)")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--perf_steps", type=int, default=2)
    ap.add_argument(
        "--lm",
        choices=("smollm2-2", "tiny"),
        default="tiny",
        help="accuracy-experiment LM: the first 2 decoder layers of SmolLM2-135M-Instruct (LoRA) or a "
        "random 2-layer width-256 Llama (full)",
    )
    ap.add_argument(
        "--tower",
        choices=("chexficient", "scratch"),
        default="chexficient",
        help="image tower: pretrained CheXficient ViT (frozen) or a SigLIP ViT trained from scratch",
    )
    ap.add_argument("--tower_pool", type=int, default=6000, help="phantoms for the tower's contrastive pretraining")
    ap.add_argument("--tower_epochs", type=int, default=30)
    args = bench.parse(argv)
    if args.quick:
        args.n, args.steps, args.perf_steps, args.tower_pool, args.tower_epochs = 60, 4, 1, 300, 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    from medfm.core.metrics import difference_ci
    from medfm.data.phantoms.cxr import generate_cxr
    from medfm.methods.vlm.config import GenerationOptions, LMSpec
    from medfm.methods.vlm.findings import (
        EVAL_FINDINGS,
        exact_match,
        f1_from_counts,
        per_report_counts,
        prior_report_predictions,
        prior_vqa_answers,
        truth_matrix,
    )
    from medfm.methods.vlm.infer import generate
    from medfm.methods.vlm.model import build_vlm
    from medfm.methods.vlm.train import train_sft
    from medfm.methods.vlm.verbs import evaluate_examples

    torch.manual_seed(0)
    t_all = time.perf_counter()
    batch = generate_cxr(args.n, seed=0, size=64)
    train_idx = [i for i, r in enumerate(batch.records) if r["split"] == "train"]
    test_idx = [i for i, r in enumerate(batch.records) if r["split"] != "train"]
    prompt = "Write the impression for this chest X-ray."
    tr_rep, tr_vqa = _examples(batch, train_idx, prompt)
    te_rep, te_vqa = _examples(batch, test_idx, prompt)
    log.info("train: %d reports + %d VQA; held-out: %d reports + %d VQA", len(tr_rep), len(tr_vqa), len(te_rep),
             len(te_vqa))  # fmt: skip
    tower_tmp = tempfile.TemporaryDirectory(prefix="medfm-vlm-bench-tower-")  # removed when main returns
    spec, opts, tower_info = recipe(args.lm, args.tower, args.steps, args.batch, Path(tower_tmp.name),
                                    args.tower_pool, args.tower_epochs)  # fmt: skip
    gen = GenerationOptions(max_new_tokens=32, batch_size=32)
    n_boot = 1000
    runs = {}
    for name, blind in (("vlm", False), ("text_only", True)):
        model, proc = build_vlm(spec, seed=0)
        out = train_sft(model, proc, tr_rep + tr_vqa, replace(opts, blind_images=blind), spec, None, seed=0)
        ev = evaluate_examples(out["model"], proc, te_rep, te_vqa, gen, n_boot, 0, blind=blind)
        runs[name] = {"train": out, "eval": ev}
        log.info("%s: loss %.3f, finding F1 %.3f, VQA acc %.3f (%.1f s training)", name, out["final_loss"],
                 ev["reports"]["f1"].value, ev["vqa"]["accuracy"].value, out["seconds"])  # fmt: skip
    # label-prior baselines
    truth = truth_matrix([ex.labels for ex in te_rep])
    prior_pred = prior_report_predictions(truth_matrix([ex.labels for ex in tr_rep]), len(te_rep), seed=0)
    prior_counts = per_report_counts(truth, prior_pred)
    prior_answers = prior_vqa_answers(
        [e.prompt for e in tr_vqa], [e.answer for e in tr_vqa], [e.prompt for e in te_vqa]
    )
    prior_em = exact_match(prior_answers, [e.answer for e in te_vqa])

    vlm_ev, txt_ev = runs["vlm"]["eval"], runs["text_only"]["eval"]
    d_f1_txt = _paired_f1_diff(vlm_ev["reports"]["counts"], txt_ev["reports"]["counts"], n_boot)
    d_f1_prior = _paired_f1_diff(vlm_ev["reports"]["counts"], prior_counts, n_boot)
    d_vqa_txt = difference_ci(vlm_ev["vqa"]["correct"], txt_ev["vqa"]["correct"], n_resamples=n_boot)
    d_vqa_prior = difference_ci(vlm_ev["vqa"]["correct"], prior_em, n_resamples=n_boot)

    # performance with the real SmolLM2-135M-Instruct LM
    perf_spec = replace(spec, lm=LMSpec(source="default"))
    big, big_proc = build_vlm(perf_spec, seed=0)
    perf = train_sft(big, big_proc, tr_rep[: 2 * args.perf_steps], replace(opts, steps=args.perf_steps, batch_size=2,
                     lm_mode="lora", lm_lr=2e-4, warmup_steps=0), perf_spec, None, seed=0)  # fmt: skip
    big = perf["model"]
    probe = te_rep[:2]
    g_on = generate(big, big_proc, probe, perf_spec, GenerationOptions(max_new_tokens=8, batch_size=2, use_cache=True))
    g_off = generate(big, big_proc, probe, perf_spec,
                     GenerationOptions(max_new_tokens=8, batch_size=2, use_cache=False))  # fmt: skip
    kv_speedup = g_on.tokens_per_s / g_off.tokens_per_s if g_off.tokens_per_s > 0 else float("nan")
    small_tps = runs["vlm"]["train"]["samples_per_s"]

    vr, tr_ = vlm_ev["reports"], txt_ev["reports"]
    claims = [
        bench.claim("report_f1_vs_text_only", d_f1_txt.value, baseline=tr_["f1"].value, ci=d_f1_txt.ci, n=len(te_rep), note=f"VLM F1 {vr['f1'].value:.3f} vs text-only {tr_['f1'].value:.3f}; paired bootstrap over images"),
        bench.claim("report_f1_vs_label_prior", d_f1_prior.value, baseline=f1_from_counts(prior_counts), ci=d_f1_prior.ci, n=len(te_rep), note="prior: findings drawn with their training prevalence"),
        bench.claim("vqa_vs_text_only", d_vqa_txt.value, baseline=txt_ev["vqa"]["accuracy"].value, ci=d_vqa_txt.ci, n=len(te_vqa), note="paired bootstrap over questions"),
        bench.claim("vqa_vs_label_prior", d_vqa_prior.value, baseline=float(prior_em.mean()), ci=d_vqa_prior.ci, n=len(te_vqa), note="prior: most frequent training answer to the same question"),
        bench.claim("kv_cache_speedup", kv_speedup, n=len(probe), note=f"on {g_on.tokens_per_s:.1f} tok/s, off {g_off.tokens_per_s:.1f} "
              "tok/s (same prompts, greedy)"),
    ]  # fmt: skip
    metrics = {
        "n_train_images": len(train_idx), "n_test_images": len(test_idx), "n_test_questions": len(te_vqa),
        "findings_scored": list(EVAL_FINDINGS), "steps": args.steps, "batch_size": args.batch, "lm": args.lm,
        "tower": args.tower, "tower_pretraining": tower_info,
        "vlm": {"finding_f1": vr["f1"].to_json(), "vqa_accuracy": vlm_ev["vqa"]["accuracy"].to_json(),
                "per_finding_f1": vr["per_finding"], "f1_srr_bert_lexicon": vr["srr_f1"],
                "final_loss": runs["vlm"]["train"]["final_loss"]},
        "text_only": {"finding_f1": tr_["f1"].to_json(), "vqa_accuracy": txt_ev["vqa"]["accuracy"].to_json(),
                      "per_finding_f1": tr_["per_finding"], "final_loss": runs["text_only"]["train"]["final_loss"]},
        "label_prior": {"finding_f1": f1_from_counts(prior_counts), "vqa_accuracy": float(prior_em.mean())},
        "extractor_ceiling_f1": vr["ceiling_f1"],
        "diff_f1_vs_text_only": d_f1_txt.to_json(), "diff_f1_vs_prior": d_f1_prior.to_json(),
        "diff_vqa_vs_text_only": d_vqa_txt.to_json(), "diff_vqa_vs_prior": d_vqa_prior.to_json(),
        "perf": {
            "small_vlm_train_samples_per_s": small_tps,
            "smollm2_vlm_train_samples_per_s_lora": perf["samples_per_s"],
            "smollm2_vlm_gen_tokens_per_s_cache_on": g_on.tokens_per_s,
            "smollm2_vlm_gen_tokens_per_s_cache_off": g_off.tokens_per_s,
            "kv_cache_speedup": kv_speedup,
            "small_vlm_gen_tokens_per_s": vlm_ev["tokens_per_s"],
        },
        "examples": [{"reference": e.answer, "vlm": a, "text_only": b}
                     for e, a, b in zip(te_rep[:5], vlm_ev["report_texts"][:5], txt_ev["report_texts"][:5])],
        "seconds_total": time.perf_counter() - t_all,
    }  # fmt: skip
    path = bench.write(metrics)
    for c in claims:
        log.info("%s: ours %s ci %s holds %s", c.id, c.ours, c.ci, c.holds)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
