"""Demo step: sample -> judge -> pairs -> DPO -> held-out evaluation on CXR phantoms through the real CLI (~1 min).

The policy is the ``vlm`` demo step's 200-step SFT model when that step ran (else a fresh 50-step SFT). At this
budget it writes near-identical reports whatever the image, so the preference signal is thin; the held-out
difference aligned - SFT is measured and reported with its CI, and the page calls it smoke scale unless the CI
excludes 0. The effect-scale comparison is benchmarks/results/chexalign.json.
"""

from __future__ import annotations

from pathlib import Path

N_STUDIES = 24  # training studies sampled (x 4 candidates); the held-out split of the same phantoms is evaluated
DPO_STEPS = 24


def run_demo(out_dir: Path, seed: int):
    """Sample 4 candidates for 24 phantom studies, judge them (offline GREEN, and length-controlled BERTScore,
    which rarely ties on short text), build pairs, train DPO, then ``chexalign evaluate`` aligned vs SFT on the
    held-out split; the key figure is the SFT and aligned reports beside each held-out image."""
    from medfm.cli import main
    from medfm.core.report import Report
    from medfm.core.results import Results
    from medfm.demo import Headline, StepOutcome

    out_dir = Path(out_dir)
    s = str(seed)
    ph = out_dir / "phantoms"
    policy = out_dir.parent / "vlm" / "train" / "checkpoints" / "final"

    def run(argv: list[str]) -> None:
        code = main(argv)
        if code != 0:
            raise RuntimeError(f"medfm {' '.join(argv[:2])} exited with {code}")

    # a generator seed the VLM step did not train on: every study here is new to the policy
    run(["phantom", "cxr", "--n", "120", "--size", "32", "--seed", str(seed + 1), "--output_dir", str(ph)])
    manifest = str(ph / "manifest.csv")
    if not (policy / "config.json").is_file():
        policy = out_dir / "sft" / "checkpoints" / "final"
        run(["vlm", "train", "--config", "preset:tiny", "--data.reports", manifest, "--train.steps", "50",
             "--train.batch_size", "8", "--seed", s, "--output_dir", str(out_dir / "sft")])  # fmt: skip
    run(["chexalign", "sample", "--policy", str(policy), "--data.reports", manifest, "--limit", str(N_STUDIES),
         "--n", "4", "--max_new_tokens", "24", "--seed", s, "--output_dir", str(out_dir / "sample")])  # fmt: skip
    run(["chexalign", "judge", "--candidates", str(out_dir / "sample"), "--output_dir", str(out_dir / "judge_green")])
    run(["chexalign", "judge", "--candidates", str(out_dir / "sample"), "--judge.kind", "bertscore",
         "--judge.length_control", "true", "--output_dir", str(out_dir / "judge")])  # fmt: skip
    run(["chexalign", "pairs", "--judged", str(out_dir / "judge"), "--output_dir", str(out_dir / "pairs")])
    run(["chexalign", "train", "--config", "preset:tiny", "--policy", str(policy), "--pairs", str(out_dir / "pairs"),
         "--algorithm", "dpo", "--train.steps", str(DPO_STEPS), "--train.checkpoint_every", str(DPO_STEPS), "--seed",
         s, "--output_dir", str(out_dir / "train")])  # fmt: skip
    aligned = out_dir / "train" / "checkpoints" / "final"
    ev = out_dir / "evaluate"
    run(["chexalign", "evaluate", "--model", str(aligned), "--baseline", str(policy), "--data.reports", manifest,
         "--max_new_tokens", "40", "--tax", "false", "--bertscore", "false", "--bootstrap", "1000", "--seed", s,
         "--output_dir", str(ev)])  # fmt: skip

    jg = Results.load(out_dir / "judge_green" / "results.json")
    pr = Results.load(out_dir / "pairs" / "results.json")
    tr = Results.load(out_dir / "train" / "results.json")
    er = Results.load(ev / "results.json")
    rep = Report("CheXalign (tiny): sample -> judge -> pairs -> DPO -> evaluate",
                 subtitle=f"seed {seed}; policy {policy}")  # fmt: skip
    rep.add_metrics({
        "offline GREEN of candidates": jg.metrics["mean_reward"],
        **pr.metrics,
        **{f"{k} (beta 0.1)": v for k, v in tr.groups.get("beta=0.1", {}).items()},
        **{k: v for k, v in er.metrics.items() if k.startswith("delta_") or k == "length_ratio_vs_sft"},
    })  # fmt: skip
    for name, sub in (("Sampled candidates", "sample"), ("Judged candidates", "judge"), ("Preference pairs", "pairs")):
        for png in sorted((out_dir / sub / "plots").glob("*.png")):
            rep.add_figure(f"{name}: {png.stem.replace('_', ' ')}", png)
    key = ev / "plots" / "sft_vs_aligned.png"
    if key.is_file():
        rep.add_figure("Held-out reports: SFT vs aligned", key)
    rep.add_links("Runs", [(n, f"{n}/report.html", "") for n in
                           ("sample", "judge_green", "judge", "pairs", "train", "evaluate")])  # fmt: skip
    report = rep.save(out_dir / "report.html")
    import json

    held = [json.loads(x) for x in (ev / "samples.jsonl").read_text().splitlines() if x.strip()]
    distinct = len({r["sft"] for r in held})
    delta = er.metrics.get("delta_green")
    n_pairs = int(pr.metrics["pairs"].value or 0)
    first = tr.groups.get("beta=0.1", {}).get("first_loss")
    final = tr.groups.get("beta=0.1", {}).get("final_loss")
    loss = f", DPO loss {first.value:.3f} -> {final.value:.3f}" if first and final and first.value is not None else ""
    return StepOutcome(
        report,
        f"{n_pairs} preference pairs from {N_STUDIES} studies x 4 candidates{loss} ({DPO_STEPS} steps); aligned vs "
        f"SFT on {len(held)} held-out studies, where the SFT policy wrote {distinct} distinct report(s): a policy "
        "that does not read its image gives the judge wording, not findings, to rank.",
        figure=key if key.is_file() else None,
        headline=Headline.of("offline GREEN, aligned - SFT (held-out, paired)", delta, compare="no change 0")
        if delta is not None
        else None,
        smoke=delta is None or delta.ci is None or delta.ci[0] <= 0,
        benchmark="chexalign",
    )
