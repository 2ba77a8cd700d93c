"""``medfm demo`` step: describe the difference between phantoms with and without pleural effusion."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from medfm.demo import Headline, StepOutcome


def run_demo(out_dir: Path, seed: int) -> StepOutcome:
    """Tiny real run: build two phantom sets, train the offline concept ranker, run ``describe``."""
    from medfm.cli import main
    from medfm.core.files import atomic_write_text
    from medfm.core.results import Results
    from medfm.methods.raddiff.bench import build_benchmark, train_concept_ranker

    out_dir = Path(out_dir)
    bench = out_dir / "bench"
    build_benchmark(bench, n_pool=300, size=48, set_size=12, seed=seed, only=["effusion"])
    ranker = out_dir / "ranker"
    if not (ranker / "config.json").is_file():
        train_concept_ranker(ranker, n=500, size=48, seed=seed + 1000, feature_size=16)
    pair = json.loads((bench / "raddiffbench.jsonl").read_text().splitlines()[0])
    reports = dict(csv.reader(io.StringIO((bench / "reports.csv").read_text())))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "group", "report"])
    for group, key in (("effusion", "set1_images"), ("no_effusion", "set2_images")):
        for rel in pair[key]:
            w.writerow([f"bench/{rel}", group, reports[rel]])
    atomic_write_text(out_dir / "sets.csv", buf.getvalue())
    run_dir = out_dir / "describe"
    code = main(["raddiff", "describe", str(out_dir / "sets.csv"), "--config", "preset:tiny", "--ranker.model",
                 f"concept:{ranker}", "--output_dir", str(run_dir), "--cache_dir", str(out_dir / "cache"),
                 "--gt_a", pair["set1"], "--gt_b", pair["set2"], "--seed", str(seed)])  # fmt: skip
    if code != 0:
        raise RuntimeError(f"raddiff describe exited with {code}")
    res = Results.load(run_dir / "results.json")
    top = res.tables["hypotheses"]
    last = max(r["iteration"] for r in top)
    best = [r for r in top if r["iteration"] == last][:3]
    gt = res.metrics.get("ground_truth_auroc")
    acc1 = res.metrics.get("acc@1")
    summary = "; ".join(f"{r['text']} (AUROC {r['auroc']:.2f})" for r in best)
    top1 = res.metrics.get("top1_auroc")
    compare = "chance 0.5" + (f"; the true difference scored by the same ranker {gt.value:.2f}" if gt else "")
    return StepOutcome(
        run_dir / "report.html",
        f"effusion vs none, {len(pair['set1_images'])} + {len(pair['set2_images'])} images: {summary}; top "
        f"hypothesis matches the truth (acc@1) {acc1.value:.0f}. One set pair, and the offline proposer reads the "
        "sets' reports: acc@k over many pairs and an image-reading proposer are the benchmark's job."
        if acc1
        else summary,
        figure=run_dir / "plots" / "top1_examples.png",
        headline=Headline.of("top hypothesis AUROC separating set A from B", top1, compare=compare) if top1 else None,
        smoke=True,  # one pair (n = 1 for acc@k) decides nothing about the method
        benchmark="raddiff",
    )
