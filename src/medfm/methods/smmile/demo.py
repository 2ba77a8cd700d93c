"""``medfm demo`` step: a tiny SMMILE run on phantom problems (oracle ICL reference vs text-only SmolLM2)."""

from __future__ import annotations

from pathlib import Path


def run_demo(out_dir: Path, seed: int):
    """Generate 6 phantom problems, run the oracle reference (scripted) and text-only SmolLM2 on 0-shot and ICL
    through the real CLI verbs, and render the comparison report (``out_dir/report.html``)."""
    import json

    from medfm.cli import main
    from medfm.demo import StepOutcome
    from medfm.methods.smmile.config import RunConfig
    from medfm.methods.smmile.data import load_problems
    from medfm.methods.smmile.phantom_set import load_truth
    from medfm.methods.smmile.reference import oracle_icl_backend
    from medfm.methods.smmile.verbs import execute

    out_dir = Path(out_dir)
    data = out_dir / "problems"
    if main(["smmile", "prepare", "--n_problems", "6", "--size", "64", "--parquet", "false", "--seed", str(seed),
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
    from medfm.core.report import Report

    rep = Report("SMMILE demo", subtitle=f"{len(ps.problems)} CXR-phantom problems, seed {seed}")
    rep.add_table(
        "EM (%)",
        [{"model": k, "0-shot": v[0], "ICL": v[1]} for k, v in summ.items()],
    )
    rep.add_links("Reports", [("comparison", "report/report.html", ""), ("oracle run", "oracle/report.html", ""),
                              ("SmolLM2 text-only run", "smollm2_text_only/report.html", "")])  # fmt: skip
    path = rep.save(out_dir / "report.html")
    o, t = summ["oracle"], summ["smollm2_text_only"]
    return StepOutcome(
        path,
        f"{len(ps.problems)} problems; EM 0-shot -> ICL: oracle reference {o[0]:.0f} -> {o[1]:.0f} %, "
        f"SmolLM2 text-only {t[0]:.0f} -> {t[1]:.0f} %",
    )
