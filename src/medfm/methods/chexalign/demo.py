"""Demo step: a tiny sample -> judge -> pairs -> DPO run on CXR phantoms through the real CLI (seconds)."""

from __future__ import annotations

from pathlib import Path


def run_demo(out_dir: Path, seed: int):
    """Sample 4 candidates for 6 phantom studies from a tiny SFT'd VLM (the ``vlm`` demo step's model when it ran,
    else a fresh 4-step SFT), judge them (LC-BERTScore, which never ties on noisy text, and the offline GREEN judge
    for reference), build pairs, run a few DPO steps and show one study's reports before and after alignment."""
    import json

    from medfm.cli import main
    from medfm.core.report import Report
    from medfm.core.results import Results
    from medfm.demo import StepOutcome
    from medfm.methods.chexalign.judges import OfflineGreenJudge
    from medfm.methods.vlm.config import GenerationOptions
    from medfm.methods.vlm.data import load_report_examples
    from medfm.methods.vlm.infer import generate
    from medfm.methods.vlm.model import load_vlm

    out_dir = Path(out_dir)
    s = str(seed)
    ph = out_dir / "phantoms"
    policy = out_dir.parent / "vlm" / "train" / "checkpoints" / "final"

    def run(argv: list[str]) -> None:
        code = main(argv)
        if code != 0:
            raise RuntimeError(f"medfm {' '.join(argv[:2])} exited with {code}")

    run(["phantom", "cxr", "--n", "16", "--size", "32", "--seed", s, "--output_dir", str(ph)])
    manifest = str(ph / "manifest.csv")
    if not (policy / "config.json").is_file():
        policy = out_dir / "sft" / "checkpoints" / "final"
        run(
            [
                "vlm",
                "train",
                "--config",
                "preset:tiny",
                "--data.reports",
                manifest,
                "--data.split",
                "all",
                "--train.steps",
                "4",
                "--seed",
                s,
                "--output_dir",
                str(out_dir / "sft"),
            ]
        )
    run(
        [
            "chexalign",
            "sample",
            "--policy",
            str(policy),
            "--data.reports",
            manifest,
            "--data.split",
            "all",
            "--limit",
            "6",
            "--n",
            "4",
            "--max_new_tokens",
            "12",
            "--seed",
            s,
            "--output_dir",
            str(out_dir / "sample"),
        ]
    )
    run(["chexalign", "judge", "--candidates", str(out_dir / "sample"), "--output_dir", str(out_dir / "judge_green")])
    run(
        [
            "chexalign",
            "judge",
            "--candidates",
            str(out_dir / "sample"),
            "--judge.kind",
            "bertscore",
            "--judge.length_control",
            "true",
            "--output_dir",
            str(out_dir / "judge"),
        ]
    )
    run(["chexalign", "pairs", "--judged", str(out_dir / "judge"), "--output_dir", str(out_dir / "pairs")])
    run(
        [
            "chexalign",
            "train",
            "--config",
            "preset:tiny",
            "--policy",
            str(policy),
            "--pairs",
            str(out_dir / "pairs"),
            "--algorithm",
            "dpo",
            "--train.steps",
            "3",
            "--seed",
            s,
            "--output_dir",
            str(out_dir / "train"),
        ]
    )
    aligned = out_dir / "train" / "checkpoints" / "final"
    ex = load_report_examples(manifest, "all", section="impression")[:2]
    judge = OfflineGreenJudge()
    rows = []
    for name, src in (("SFT", policy), ("DPO-aligned", aligned)):
        model, proc = load_vlm(src)
        texts = generate(model, proc, ex, opts=GenerationOptions(max_new_tokens=16)).texts
        for e, t, r in zip(ex, texts, judge.judge([e.answer for e in ex], texts)):
            rows.append(
                {
                    "model": name,
                    "study": e.id,
                    "reference": e.answer[:100],
                    "generated": t[:100],
                    "GREEN (offline)": r.score,
                }
            )
    pairs = [json.loads(x) for x in (out_dir / "pairs" / "pairs.jsonl").read_text().splitlines()]
    jg = Results.load(out_dir / "judge_green" / "results.json")
    pr = Results.load(out_dir / "pairs" / "results.json")
    tr = Results.load(out_dir / "train" / "results.json")
    rep = Report(
        "CheXalign (tiny): sample -> judge -> pairs -> DPO",
        subtitle=f"seed {seed}; policy {policy} (a few SFT steps: expect noisy text at this scale)",
    )
    rep.add_metrics(
        {
            "offline GREEN of candidates": jg.metrics["mean_reward"],
            **pr.metrics,
            **{f"{k} (beta 0.1)": v for k, v in tr.groups.get("beta=0.1", {}).items()},
        }
    )
    rep.add_table(
        "Preference pairs (LC-BERTScore judge)",
        [
            {
                "study": p["id"],
                "chosen": p["chosen"][:80],
                "chosen score": p["chosen_score"],
                "rejected": p["rejected"][:80],
                "rejected score": p["rejected_score"],
            }
            for p in pairs
        ],
    )
    rep.add_table("Before / after alignment (greedy)", rows)
    report = rep.save(out_dir / "report.html")
    first = tr.groups.get("beta=0.1", {}).get("first_loss")
    final = tr.groups.get("beta=0.1", {}).get("final_loss")
    loss = f", DPO loss {first.value:.3f} -> {final.value:.3f}" if first and final and first.value is not None else ""
    return StepOutcome(report, f"{len(pairs)} pairs from 6 studies x 4 candidates{loss} (smoke scale)")
