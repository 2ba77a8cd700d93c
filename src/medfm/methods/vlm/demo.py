"""Demo step: train the tiny VLM on chest X-ray phantoms through the real CLI, then evaluate it (~40 s).

200 SFT steps teach the tiny model the reports' language (it writes fluent impressions), not yet to read the
image: at this budget it writes the commonest impression and answers VQA near the majority answer, so the
step is smoke scale; the benchmark (benchmarks/results/vlm.json) holds the image-vs-text-only comparison.
"""

from __future__ import annotations

from pathlib import Path


def run_demo(out_dir: Path, seed: int):
    """Write 96 CXR phantoms and their VQA pairs, SFT the ``tiny`` VLM for 200 steps with ``medfm vlm train``,
    evaluate finding F1 / VQA accuracy with ``medfm vlm evaluate`` and write ``out_dir/report.html`` with sample
    generations and the model card."""
    import json

    from medfm.cli import main
    from medfm.core.cards import load_card
    from medfm.core.report import Report
    from medfm.core.results import Results
    from medfm.demo import Headline, StepOutcome

    out_dir = Path(out_dir)
    ph, prep, train, ev = (out_dir / n for n in ("phantoms", "prepare", "train", "evaluate"))
    s = str(seed)
    steps = [
        ["phantom", "cxr", "--n", "96", "--size", "32", "--seed", s, "--output_dir", str(ph)],
        ["vlm", "prepare", "--reports", str(ph / "manifest.csv"), "--seed", s, "--output_dir", str(prep)],
        ["vlm", "train", "--config", "preset:tiny", "--data.reports", str(ph / "manifest.csv"), "--data.vqa",
         str(prep / "vqa.csv"), "--train.steps", "200", "--train.batch_size", "8", "--train.checkpoint_every", "100",
         "--train.log_every", "20", "--seed", s, "--output_dir", str(train)],
        ["vlm", "evaluate", "--model", str(train / "checkpoints" / "final"), "--data.reports", str(ph / "manifest.csv"),
         "--data.vqa", str(prep / "vqa.csv"), "--data.split", "test", "--generation.max_new_tokens", "40",
         "--bootstrap", "200", "--seed", s, "--output_dir", str(ev)],
    ]  # fmt: skip
    for argv in steps:
        code = main(argv)
        if code != 0:
            raise RuntimeError(f"medfm {' '.join(argv[:2])} exited with {code}")
    res = Results.load(ev / "results.json")
    train_res = Results.load(train / "results.json")
    card = load_card(train / "checkpoints" / "final")
    samples = [json.loads(x) for x in (ev / "samples.jsonl").read_text().splitlines()]
    rep = Report("Radiology VLM (tiny preset)", subtitle=f"seed {seed}: LLaVA-style SigLIP tower + projector + LM")
    rep.add_metrics({**train_res.metrics, **res.metrics})
    rep.add_figure("Generated vs reference reports", ev / "plots" / "generated_vs_reference.png")
    rep.add_table("Sample generations (200 SFT steps on 96 phantoms)", [
        {"kind": r["kind"], "question": r.get("question", ""), "generated": r["generated"][:120],
         "reference": r["reference"][:120]} for r in samples[:8]
    ])  # fmt: skip
    rep.add_html("Model card", card.to_html())
    report = rep.save(out_dir / "report.html")
    f1 = res.metrics["finding_f1"].value
    vqa = [r for r in samples if r["kind"] == "vqa"]
    yes = sum(r["reference"].strip().lower() == "yes" for r in vqa) / max(len(vqa), 1)
    distinct = len({r["generated"] for r in samples if r["kind"] == "report"})
    return StepOutcome(
        report,
        f"tiny VLM (3.2 M parameters) trained 200 steps on 96 phantoms: finding F1 {f1:.2f} on the test split, "
        f"{distinct} distinct report(s) over {sum(r['kind'] == 'report' for r in samples)} test images",
        figure=ev / "plots" / "generated_vs_reference.png",
        headline=Headline.of(
            "VQA accuracy (yes/no, test split)",
            res.metrics["vqa_accuracy"],
            compare=f"always the majority answer {max(yes, 1 - yes):.2f}",
        ),
        smoke=True,
        benchmark="vlm",
    )
