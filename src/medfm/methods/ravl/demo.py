"""``medfm demo`` step: train a tiny CLIP on chest X-ray phantoms with a planted marker, then let RaVL find it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def run_demo(out_dir: Path, seed: int):
    """Fine-tune a tiny CLIP on 64 px CXR phantoms whose corner marker tracks pleural effusion (Cramér's V 0.95),
    run discovery on marker-independent phantoms and report the top cluster's region grid and Precision@10."""
    import torch

    from medfm.cli import main
    from medfm.core.errors import MedfmError
    from medfm.demo import Headline, StepOutcome

    out_dir = Path(out_dir)
    common = ["--config", "preset:tiny", "--device", "cpu", "--seed", str(seed)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["ravl", "mitigate", *common, "--mitigation.init", "scratch", "--mitigation.method", "standard",
                     "--data.phantom_n", "560", "--data.phantom_seed", "0", "--data.cramers_v", "0.95",
                     "--mitigation.steps", "110", "--mitigation.batch_size", "48", "--mitigation.save_every", "0",
                     "--output_dir", str(out_dir / "finetune")])  # fmt: skip
        if code != 0:
            raise MedfmError(f"fine-tuning the audited model failed (exit {code})")
        code = main(["ravl", "discover", *common, "--model", str(out_dir / "finetune" / "checkpoints" / "final"),
                     "--data.phantom_n", "420", "--output_dir", str(out_dir / "discover")])  # fmt: skip
        if code != 0:
            raise MedfmError(f"discovery failed (exit {code})")
    finally:
        torch.set_num_threads(threads)
    res = json.loads((out_dir / "discover" / "results.json").read_text())
    p = res["metrics"].get("precision_at_10", {}).get("value")
    chance = res["metrics"].get("spurious_region_rate", {}).get("value")
    attr = res["meta"].get("spurious_attribute")
    summary = (f"{res['meta']['message']}; attribute '{attr}', Precision@10 {p:.2f} (chance {chance:.2f})"
               if p is not None else res["meta"]["message"])  # fmt: skip
    ci, smoke = None, True
    if p is not None and chance is not None:
        from scipy.stats import binomtest

        # Precision@10 is a proportion of (up to) 10 regions: Wilson 95 % interval; a finding when it clears chance
        n = int(res["metrics"]["precision_at_10"].get("n") or 10)
        w = binomtest(round(p * n), n).proportion_ci(method="wilson")
        ci, smoke = (float(w.low), float(w.high)), float(w.low) <= chance
    return StepOutcome(out_dir / "discover" / "report.html", summary,
                       figure=out_dir / "discover" / "plots" / "top_cluster_regions.png", benchmark="ravl", smoke=smoke,
                       headline=Headline("Precision@10 of the top cluster's regions on the planted marker", p, ci,
                                         compare=f"chance {chance:.2f}: the marker's share of all regions")
                       if p is not None else None)  # fmt: skip
