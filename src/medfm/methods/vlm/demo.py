"""Demo step: train the tiny VLM on chest X-ray phantoms through the real CLI, then evaluate it (seconds)."""

from __future__ import annotations

from pathlib import Path


def run_demo(out_dir: Path, seed: int):
    """Write 32 CXR phantoms and their VQA pairs, SFT the ``tiny`` VLM for a few steps with ``medfm vlm train``,
    evaluate finding F1 / VQA accuracy with ``medfm vlm evaluate`` and write ``out_dir/report.html`` with sample
    generations and the model card."""
    import json

    from medfm.cli import main
    from medfm.core.cards import load_card
    from medfm.core.report import Report
    from medfm.core.results import Results
    from medfm.demo import StepOutcome

    out_dir = Path(out_dir)
    ph, prep, train, ev = (out_dir / n for n in ("phantoms", "prepare", "train", "evaluate"))
    s = str(seed)
    steps = [
        ["phantom", "cxr", "--n", "32", "--size", "32", "--seed", s, "--output_dir", str(ph)],
        ["vlm", "prepare", "--reports", str(ph / "manifest.csv"), "--seed", s, "--output_dir", str(prep)],
        ["vlm", "train", "--config", "preset:tiny", "--data.reports", str(ph / "manifest.csv"), "--data.vqa",
         str(prep / "vqa.csv"), "--train.steps", "6", "--seed", s, "--output_dir", str(train)],
        ["vlm", "evaluate", "--model", str(train / "checkpoints" / "final"), "--data.reports", str(ph / "manifest.csv"),
         "--data.vqa", str(prep / "vqa.csv"), "--data.split", "all", "--limit", "6", "--generation.max_new_tokens", "12",
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
    rep.add_table("Sample generations (6 training steps: expect mostly noise)", [
        {"kind": r["kind"], "question": r.get("question", ""), "generated": r["generated"][:120],
         "reference": r["reference"][:120]} for r in samples[:8]
    ])  # fmt: skip
    rep.add_html("Model card", card.to_html())
    report = rep.save(out_dir / "report.html")
    f1 = res.metrics["finding_f1"].value
    acc = res.metrics["vqa_accuracy"].value
    return StepOutcome(report, f"tiny VLM trained 6 steps: finding F1 {f1:.2f}, VQA accuracy {acc:.2f} (smoke scale)")
