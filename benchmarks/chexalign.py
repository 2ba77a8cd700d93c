"""CheXalign at small scale on CXR phantoms: five direct alignment algorithms x two betas x two seeds.

Setup (spec part B, "CPU replication plan"; everything seeded):

* SFT policy: the tiny radiology VLM of the VLM issue (`medfm vlm train --config preset:tiny`) on 96 CXR phantoms.
* Candidates: at this scale the SFT policy's samples are noise, so every study gets four candidates with known
  content instead of four samples: the correct impression, one with every side swapped (wrong location), one with
  every finding substituted (false + missed findings), and a verbose one (the correct impression repeated: the
  "largely repeated content" length exploitation the paper reports). Scored by the offline GREEN judge (SRRG lexicon
  findings) and by LC-GREEN.
* Pairs: chosen = best, rejected = worst (first occurrence on ties, so with plain GREEN the verbose copy, which ties
  the correct report, is chosen whenever it comes first).
* Training: DPO, IPO, KTO, ORPO, R-DPO (alpha 0.05) through TRL (`medfm.methods.chexalign.trainers.build_trainer`),
  8 steps x 4 pairs, lr 1e-2, image tower frozen; betas 0.1 and 0.5 (seed 0), a second seed for DPO and R-DPO at
  beta 0.1, plus DPO on LC-GREEN pairs (13 runs; the CPU budget allows no more).
* Measurement on held-out studies (and, for reference, on the training studies): the policy's distribution over the
  study's candidate set (softmax of its sequence log-probabilities) gives the expected judge reward, the expected
  length in words and the planted-error rate (most likely candidate clinically wrong). Alignment tax: yes/no VQA
  accuracy on the held-out studies' findings (teacher-forced yes vs no), SFT vs aligned.

Writes benchmarks/results/chexalign.json and benchmarks/results/chexalign_score_vs_length.png.
Run: ``nice -n 10 .venv/bin/python benchmarks/chexalign.py`` (about 10 minutes on 2 idle CPU cores).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from medfm.methods.chexalign.corruptions import swap_findings, swap_sides

ROOT = Path(__file__).resolve().parent
ALGOS = ("dpo", "ipo", "kto", "orpo", "rdpo")
BETAS = (0.1, 0.5)
SEEDS = (0, 1)


def candidate_set(reference: str, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """(candidates, kinds) in a seeded random order."""
    kinds = ["correct", "wrong_side", "wrong_finding", "verbose"]
    cands = [reference, swap_sides(reference), swap_findings(reference), f"{reference} {reference}"]
    order = rng.permutation(4)
    return [cands[i] for i in order], [kinds[i] for i in order]


def seq_logps(model, processor, examples, answers, batch_size: int = 16) -> np.ndarray:
    """Teacher-forced summed log-prob of each example's answer."""
    from dataclasses import replace

    import torch
    import torch.nn.functional as F

    from medfm.methods.vlm.data import VLMCollator
    from medfm.methods.vlm.model import spec_of

    spec = spec_of(model)
    col = VLMCollator(processor, "", spec.max_length, spec.max_images, train=True)
    col.end = ""
    exs = [replace(ex, answer=a) for ex, a in zip(examples, answers)]
    out = []
    for j in range(0, len(exs), batch_size):
        batch = col(exs[j : j + batch_size])
        labels = batch.pop("labels")
        with torch.inference_mode():
            logits = model(**batch).logits.float()
        lp = F.log_softmax(logits[:, :-1], -1)
        tgt = labels[:, 1:]
        out.append((lp.gather(-1, tgt.clamp(min=0)[..., None])[..., 0] * (tgt != -100)).sum(1).numpy())
    return np.concatenate(out)


def measure(model, processor, studies, cand_sets, green, lc, kinds) -> dict[str, np.ndarray]:
    """Per-study expected GREEN / LC-GREEN / words under the policy's candidate distribution, planted-error flag."""
    flat_ex = [ex for ex, cs in zip(studies, cand_sets) for _ in cs]
    flat_c = [c for cs in cand_sets for c in cs]
    lp = seq_logps(model, processor, flat_ex, flat_c).reshape(len(studies), 4)
    p = np.exp(lp - lp.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    words = np.array([[len(c.split()) for c in cs] for cs in cand_sets], dtype=float)
    top = lp.argmax(1)
    wrong = np.array([kinds[i][t] in ("wrong_side", "wrong_finding") for i, t in enumerate(top)], dtype=float)
    verbose = np.array([lp[i, k.index("verbose")] - lp[i, k.index("correct")] for i, k in enumerate(kinds)])
    return {
        "green": (p * green).sum(1),
        "lc_green": (p * lc).sum(1),
        "words": (p * words).sum(1),
        "error": wrong,
        "verbose_margin": verbose,
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    from medfm.cli import main as cli
    from medfm.core.bench import Benchmark
    from medfm.core.metrics import difference_ci, mean_ci
    from medfm.methods.chexalign.config import AlignOptions
    from medfm.methods.chexalign.judges import OfflineGreenJudge
    from medfm.methods.chexalign.metrics import alignment_tax
    from medfm.methods.chexalign.pairs import build_pairs, kto_rows
    from medfm.methods.chexalign.trainers import build_trainer
    from medfm.methods.vlm.data import load_report_examples
    from medfm.methods.vlm.model import load_vlm

    bench = Benchmark("chexalign", __doc__, default_seeds=1)
    bench.parse(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="chexalign-bench-"))
    assert cli(["phantom", "cxr", "--n", "96", "--size", "32", "--seed", "0", "--output_dir", str(tmp / "ph")]) == 0
    manifest = tmp / "ph" / "manifest.csv"
    assert (
        cli(
            [
                "vlm",
                "train",
                "--config",
                "preset:tiny",
                "--data.reports",
                str(manifest),
                "--data.split",
                "train",
                "--train.steps",
                "8",
                "--seed",
                "0",
                "--output_dir",
                str(tmp / "sft"),
            ]
        )
        == 0
    )
    sft = tmp / "sft" / "checkpoints" / "final"

    def usable(ex) -> bool:
        return bool(re.search(r"\b(left|right)\b", ex.answer, re.IGNORECASE)) and swap_findings(ex.answer) != ex.answer

    every = [ex for ex in load_report_examples(manifest, "all", section="impression") if usable(ex)]
    train_st = [ex for ex in every if ex.split == "train"][:24]
    held = [ex for ex in every if ex.split != "train"]
    rng = np.random.default_rng(0)
    judge, lc_judge = OfflineGreenJudge(), OfflineGreenJudge(length_control=True)

    def build(studies):
        sets = [candidate_set(ex.answer, rng) for ex in studies]
        cands, kinds = [s[0] for s in sets], [s[1] for s in sets]
        refs = [ex.answer for ex, cs in zip(studies, cands) for _ in cs]
        flat = [c for cs in cands for c in cs]
        g = np.array([r.score for r in judge.judge(refs, flat)]).reshape(-1, 4)
        lc = np.array([r.score for r in lc_judge.judge(refs, flat)]).reshape(-1, 4)
        return cands, kinds, g, lc

    tr_c, tr_k, tr_g, tr_lc = build(train_st)
    ho_c, ho_k, ho_g, ho_lc = build(held)
    print(f"{len(train_st)} training studies, {len(held)} held-out studies", flush=True)

    def pairs_for(scores):
        recs = [
            {
                "id": ex.id,
                "images": [str(p) for p in ex.images],
                "prompt": ex.prompt,
                "candidates": cs,
                "scores": list(map(float, s)),
            }
            for ex, cs, s in zip(train_st, tr_c, scores)
        ]
        return build_pairs(recs)[0]

    pairs_green, pairs_lc = pairs_for(tr_g), pairs_for(tr_lc)
    answer = {ex.id: ex.answer for ex in train_st}
    verbose_chosen = float(np.mean([len(p["chosen"].split()) > len(answer[p["id"]].split()) for p in pairs_green]))

    model, proc = load_vlm(sft)
    base_ho = measure(model, proc, held, ho_c, ho_g, ho_lc, ho_k)
    base_tr = measure(model, proc, train_st, tr_c, tr_g, tr_lc, tr_k)
    base_tax = alignment_tax(model, proc, held, seed=0)
    del model

    runs = []
    # every DAA at both betas (seed 0); a second seed for DPO and R-DPO (the length claims); DPO on LC-GREEN pairs
    configs = [(a, b, 0, "green") for a in ALGOS for b in BETAS]
    configs += [(a, 0.1, s, "green") for a in ("dpo", "rdpo") for s in SEEDS[1:]]
    configs += [("dpo", 0.1, 0, "lc-green")]
    for algo, beta, seed, judge_name in configs:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        pairs = pairs_green if judge_name == "green" else pairs_lc
        rows = kto_rows(pairs) if algo == "kto" else pairs
        model, proc = load_vlm(sft)
        model.train()
        ref, _ = load_vlm(sft)
        opts = AlignOptions(
            steps=8,
            batch_size=4,
            grad_accum=1,
            lr=1e-2,
            warmup_ratio=0.0,
            scheduler="constant",
            max_length=256,
            checkpoint_every=10_000,
        )
        tr = build_trainer(
            algo,
            model,
            ref,
            proc,
            rows,
            opts,
            beta,
            tmp / f"run-{algo}-{beta}-{seed}-{judge_name}",
            seed=seed,
            device="cpu",
        )
        tr.train()
        pol = tr.model.eval()
        ho = measure(pol, proc, held, ho_c, ho_g, ho_lc, ho_k)
        trm = measure(pol, proc, train_st, tr_c, tr_g, tr_lc, tr_k)
        tax = alignment_tax(pol, proc, held, seed=0) if (beta, seed, judge_name) == (0.1, 0, "green") else None
        runs.append(
            {
                "algo": algo,
                "beta": beta,
                "seed": seed,
                "judge": judge_name,
                "held": ho,
                "train": trm,
                "tax": None if tax is None else tax["vqa_correct"],
                "seconds": time.perf_counter() - t0,
            }
        )
        print(
            f"{algo:5s} beta {beta:<4} seed {seed} {judge_name:8s}: held GREEN {ho['green'].mean():.3f} "
            f"(SFT {base_ho['green'].mean():.3f}), train GREEN {trm['green'].mean():.3f} "
            f"(SFT {base_tr['green'].mean():.3f}), words {trm['words'].mean():.1f} "
            f"(SFT {base_tr['words'].mean():.1f}) [{time.perf_counter() - t0:.0f} s]",
            flush=True,
        )
        del model, ref, tr, pol

    def avg(sel, split, key):
        vals = [r[split][key] for r in runs if sel(r)]
        return np.mean(vals, axis=0)

    claims, metrics = [], {"sft": {}, "runs": [], "setup": {}}
    metrics["setup"] = {
        "train_studies": len(train_st),
        "held_out_studies": len(held),
        "pairs_green": len(pairs_green),
        "pairs_lc_green": len(pairs_lc),
        "verbose_chosen_rate_green": verbose_chosen,
        "algorithms": list(ALGOS),
        "betas": list(BETAS),
        "seeds": list(SEEDS),
        "steps": 8,
    }
    for split, base in (("held", base_ho), ("train", base_tr)):
        metrics["sft"][split] = {k: float(v.mean()) for k, v in base.items()}
    for r in runs:
        metrics["runs"].append(
            {
                "algo": r["algo"],
                "beta": r["beta"],
                "seed": r["seed"],
                "judge": r["judge"],
                "seconds": round(r["seconds"], 1),
                "tax_vqa_accuracy": None if r["tax"] is None else float(r["tax"].mean()),
                **{
                    f"{s}_{k}": float(r[s][k].mean())
                    for s in ("held", "train")
                    for k in ("green", "lc_green", "words", "error", "verbose_margin")
                },
            }
        )
    # 1. every DAA improves the judge score over SFT (held-out; training studies reported alongside)
    for algo in ALGOS:
        sel = lambda r, a=algo: r["algo"] == a and r["judge"] == "green"  # noqa: E731
        for split, base in (("train", base_tr), ("held", base_ho)):
            after = avg(sel, split, "green")
            d = difference_ci(after, base["green"], seed=0)
            rel = float(after.mean() / max(base["green"].mean(), 1e-9) - 1)
            metrics.setdefault("delta_green", {})[f"{algo}_{split}"] = {"value": d.value, "ci": d.ci, "relative": rel}
            if split == "held":
                claims.append(
                    bench.claim(
                        f"{algo}_improves_judge_score_held_out",
                        d.value,
                        baseline=0.0,
                        ci=d.ci,
                        n=len(held),
                        note=f"relative {rel:+.1%}; on the training studies: "
                        f"{metrics['delta_green'][f'{algo}_train']['value']:+.3f} "
                        f"(CI {np.round(metrics['delta_green'][f'{algo}_train']['ci'], 3).tolist()}). The policy is a "
                        "tiny VLM trained 8 steps: held-out studies need image understanding it does not have.",
                    )
                )

    # 2. plain DPO (GREEN judge) lengthens reports; R-DPO and the LC judge limit it. Measured as the drift of the
    # policy's log-prob margin of the verbose (repeated) report over the correct one, aligned - SFT, in nats: positive
    # means alignment moved probability towards the longer report. (Expected words are reported in metrics: with
    # summed log-probs a report twice as long is far less likely, so they barely move at this scale.)
    def drift(sel):
        return avg(sel, "train", "verbose_margin") - base_tr["verbose_margin"]

    dpo_d = drift(lambda r: r["algo"] == "dpo" and r["judge"] == "green")
    rdpo_d = drift(lambda r: r["algo"] == "rdpo" and r["judge"] == "green")
    dpo01_d = drift(lambda r: r["algo"] == "dpo" and r["judge"] == "green" and r["beta"] == 0.1)
    lc_d = drift(lambda r: r["algo"] == "dpo" and r["judge"] == "lc-green")
    for name, r_sel in (("dpo", "dpo"), ("rdpo", "rdpo")):
        metrics.setdefault("words_ratio_vs_sft", {})[name] = float(
            avg(lambda r, a=r_sel: r["algo"] == a and r["judge"] == "green", "train", "words").sum()
            / base_tr["words"].sum()
        )
    d = mean_ci(dpo_d, seed=0)
    claims.append(
        bench.claim(
            "dpo_lengthens_reports",
            d.value,
            ci=d.ci,
            n=len(train_st),
            note=f"{verbose_chosen:.0%} of GREEN pairs chose the verbose (repeated) report; expected-words ratio "
            f"DPO/SFT {metrics['words_ratio_vs_sft']['dpo']:.3f}",
        )
    )
    d = difference_ci(rdpo_d, dpo_d, seed=0)
    claims.append(bench.claim("rdpo_limits_length", d.value, ci=d.ci, n=len(train_st)))
    d = difference_ci(lc_d, dpo01_d, seed=0)
    claims.append(bench.claim("lc_judge_limits_length", d.value, ci=d.ci, n=len(train_st)))
    # 3. no significant alignment tax (non-inferiority margin 5 accuracy points)
    tax = np.mean([r["tax"] for r in runs if r["tax"] is not None], axis=0)
    d = difference_ci(tax, base_tax["vqa_correct"], seed=0)
    claims.append(
        bench.claim(
            "no_alignment_tax",
            d.value,
            ci=d.ci,
            n=len(base_tax["vqa_correct"]),
            note="holds when the CI's lower bound is above -0.05 (non-inferiority); SFT accuracy "
            f"{base_tax['vqa_correct'].mean():.2f}"
            + (
                ": the tiny SFT policy answers at chance, so this check cannot detect a tax at this scale"
                if abs(base_tax["vqa_correct"].mean() - 0.5) < 0.1
                else ""
            ),
        )
    )
    metrics["sft_tax_vqa_accuracy"] = mean_ci(base_tax["vqa_correct"]).to_json()
    metrics["seconds"] = round(time.perf_counter() - t_start, 1)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([base_tr["words"].mean()], [base_tr["green"].mean()], marker="*", s=160, c="k", label="SFT")
    for algo, color in zip(ALGOS, ("C0", "C1", "C2", "C3", "C4")):
        for beta, mk in zip(BETAS, ("o", "s")):
            sel = [r for r in runs if r["algo"] == algo and r["beta"] == beta and r["judge"] == "green"]
            ax.scatter(
                [np.mean([r["train"]["words"].mean() for r in sel])],
                [np.mean([r["train"]["green"].mean() for r in sel])],
                c=color,
                marker=mk,
                label=f"{algo} beta {beta}",
            )
    sel = [r for r in runs if r["judge"] == "lc-green"]
    ax.scatter(
        [np.mean([r["train"]["words"].mean() for r in sel])],
        [np.mean([r["train"]["green"].mean() for r in sel])],
        c="C5",
        marker="^",
        label="dpo on LC-GREEN",
    )
    ax.set_xlabel("expected words under the policy (candidate set)")
    ax.set_ylabel("expected offline GREEN")
    ax.set_title("CheXalign on phantoms: judge score vs length (training studies)")
    ax.legend(fontsize=6, ncol=2)
    (ROOT / "results").mkdir(exist_ok=True)
    fig.savefig(ROOT / "results" / "chexalign_score_vs_length.png", dpi=110, bbox_inches="tight")
    out = bench.write(json.loads(json.dumps(metrics, default=float)))
    for c in claims:
        print(f"{c.id}: ours {c.ours} ci {c.ci} holds {c.holds}")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
