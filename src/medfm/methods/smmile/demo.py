"""``medfm demo`` step: a small SMMILE run on phantom problems (text-only SmolLM2, with a scripted oracle).

The oracle reference is scripted (it answers from the in-context examples by construction): it shows what the
protocol's ICL gain looks like, and is never the finding. The headline is SmolLM2's measured ICL gain, weighed
against the answer-prior baselines that need no image.
"""

from __future__ import annotations

from pathlib import Path

N_PROBLEMS = 40  # an ICL gain of ~20 points needs ~40 problems for a CI that excludes 0


def run_demo(out_dir: Path, seed: int):
    """Generate 40 phantom problems, run the oracle reference (scripted) and text-only SmolLM2 on 0-shot and ICL
    through the real CLI verbs, and render the comparison report (``out_dir/report.html``)."""
    import json

    from medfm.cli import main
    from medfm.demo import Headline, StepOutcome
    from medfm.methods.smmile.config import RunConfig
    from medfm.methods.smmile.data import load_problems
    from medfm.methods.smmile.phantom_set import load_truth
    from medfm.methods.smmile.reference import oracle_icl_backend
    from medfm.methods.smmile.verbs import execute

    out_dir = Path(out_dir)
    data = out_dir / "problems"
    if main(["smmile", "prepare", "--n_problems", str(N_PROBLEMS), "--size", "64", "--parquet", "false", "--seed", str(seed),
             "--output_dir", str(data)]) != 0:  # fmt: skip
        raise RuntimeError("smmile prepare failed")
    lm_dir = out_dir / "smollm2_text_only"
    args = ["smmile", "run", "--config", "preset:tiny", "--backend", "hf:default", "--data", str(data),
            "--max_tokens", "12", "--seed", str(seed), "--output_dir", str(lm_dir)]  # fmt: skip
    if main(args) != 0:
        raise RuntimeError("smmile run (SmolLM2) failed")
    # the oracle reference is a Python backend, so it goes through the same execute() the CLI uses
    from medfm.core.runs import Run

    ps = load_problems(data)
    cfg = RunConfig(data=str(data), judge="contains", max_tokens=12, seed=seed, output_dir=str(out_dir / "oracle"))
    with Run("smmile", "run", cfg) as run:
        execute(cfg, run, ps, oracle_icl_backend(ps.problems, load_truth(data / "truth.jsonl")), "contains")
    if main(["smmile", "report", str(out_dir / "oracle"), str(lm_dir), "--output_dir", str(out_dir / "report")]) != 0:
        raise RuntimeError("smmile report failed")
    summ = {}
    for name in ("oracle", "smollm2_text_only"):
        d = json.loads((out_dir / name / "results.json").read_text())["metrics"]
        summ[name] = (d["zero_shot/open/em"]["value"], d["icl/open/em"]["value"])
    lm = json.loads((lm_dir / "results.json").read_text())
    gain = next((e for e in lm["tables"]["effects"] if e["effect"] == "icl_gain" and e["task"] == "open"
                 and e["metric"] == "em"), None)  # fmt: skip
    base = {k: lm["metrics"].get(f"icl/open/baseline_{k}", {}).get("value") for k in ("majority", "nearest_image")}
    from medfm.core.report import Report

    rep = Report("SMMILE demo", subtitle=f"{len(ps.problems)} CXR-phantom problems, seed {seed}")
    rep.add_table(
        "EM (%)",
        [{"model": k, "0-shot": v[0], "ICL": v[1]} for k, v in summ.items()],
    )
    rep.add_links("Reports", [("comparison", "report/report.html", ""), ("oracle run", "oracle/report.html", ""),
                              ("SmolLM2 text-only run", "smollm2_text_only/report.html", "")])  # fmt: skip
    key = out_dir / "report" / "plots" / "accuracy_em.png"
    if key.is_file():
        rep.add_figure("Exact match by condition", key)
    path = rep.save(out_dir / "report.html")
    o, t = summ["oracle"], summ["smollm2_text_only"]
    headline, smoke = None, True
    if gain is not None:
        ci = (gain["ci_low"], gain["ci_high"]) if gain["ci_low"] is not None else None
        headline = Headline("SmolLM2 (text-only) ICL gain in exact match, ICL - 0-shot", gain["diff"], ci,
                            "points", compare=f"0-shot {t[0]:.0f} %, ICL {t[1]:.0f} %; the examples' majority "
                            f"answer scores {base['majority']:.0f} %, the nearest image's answer "
                            f"{base['nearest_image']:.0f} %")  # fmt: skip
        # a finding only when the gain's CI excludes 0 *and* ICL beats the answer prior it could simply copy
        smoke = ci is None or ci[0] <= 0 or (base["majority"] is not None and t[1] <= base["majority"])
    return StepOutcome(
        path,
        f"{len(ps.problems)} problems; EM 0-shot -> ICL: SmolLM2 text-only {t[0]:.0f} -> {t[1]:.0f} %; the scripted "
        f"oracle reference (answers from the examples by construction) {o[0]:.0f} -> {o[1]:.0f} %",
        figure=key if key.is_file() else None,
        headline=headline,
        smoke=smoke,
        benchmark="smmile",
    )
