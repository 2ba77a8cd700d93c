"""SMMILE benchmark on the offline CXR-phantom problem set: zero-shot vs ICL, permutations, noise and ordering.

Models measured side by side in one run on the same problems:
  * text-only SmolLM2-135M-Instruct (hf:default; the paper's "text only" baseline: sees only example
    question/answer lines, no images);
  * Majority, Random and Nearest-image baselines (the last is a model-free multimodal in-context learner);
  * the oracle ICL reference (perfect perception + copying the convention from the examples; harness upper bound).
The small radiology VLM (medfm.methods.vlm) is not plugged in: no trained checkpoint existed when this ran.

Open answers are scored by normalised EM and by the rule stand-in judge ("contains"); MCQA on 0-shot/ICL.
Run: nice -n 10 .venv/bin/python benchmarks/smmile.py   (writes benchmarks/results/smmile.json)
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "smmile.json"
N_PROBLEMS = 16
PERM_CAP = 2  # the harness default is 24 (SMMILE++); 2 keeps the CPU run short on a shared 2-core box
OPEN_CONDITIONS = ["zero_shot", "icl", "permutations", "random_noise", "targeted_noise", "order_last",
                   "order_not_last"]  # fmt: skip


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from medfm.backends.hf import shared_backend
    from medfm.core.claims import claim, write_benchmark
    from medfm.methods.smmile.conditions import pixel_embedder
    from medfm.methods.smmile.data import load_problems
    from medfm.methods.smmile.experiment import run_experiment, summarise
    from medfm.methods.smmile.harness import HarnessOptions
    from medfm.methods.smmile.phantom_set import load_truth, make_problem_set, write_problem_set
    from medfm.methods.smmile.prompts import system_text
    from medfm.methods.smmile.reference import oracle_icl_backend

    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="smmile-bench-"))
    write_problem_set(make_problem_set(N_PROBLEMS, seed=0, size=64), tmp)
    ps = load_problems(tmp)
    truth = load_truth(tmp / "truth.jsonl")
    problems = ps.problems
    out: dict[str, dict] = {}
    timings: dict[str, float] = {}

    # text-only SmolLM2
    lm = shared_backend("default", device="cpu", threads=1)
    opts = HarnessOptions(system_prompt=system_text("text_only"), text_only=True, max_tokens=10,
                          answer_extraction="first_line", batch_size=8, seed=0)  # fmt: skip
    t = time.perf_counter()
    res_lm = run_experiment(problems, lm, conditions=OPEN_CONDITIONS, tasks=["open"], opts=opts, judge="contains",
                            embedder=pixel_embedder, perm_cap=PERM_CAP)  # fmt: skip
    res_lm.update(run_experiment(problems, lm, conditions=["zero_shot", "icl"], tasks=["mcqa"],
                                 opts=opts.__class__(**{**opts.__dict__, "max_tokens": 12}), embedder=pixel_embedder))  # fmt: skip
    timings["smollm2_s"] = time.perf_counter() - t
    out["smollm2_text_only"] = res_lm

    # oracle reference (images)
    oracle = oracle_icl_backend(problems, truth)
    opts_o = HarnessOptions(system_prompt=system_text("physician"), max_tokens=24, seed=0)
    t = time.perf_counter()
    out["oracle_icl"] = run_experiment(problems, oracle, conditions=OPEN_CONDITIONS, tasks=["open"], opts=opts_o,
                                       judge="contains", embedder=pixel_embedder, perm_cap=PERM_CAP)  # fmt: skip
    timings["oracle_s"] = time.perf_counter() - t

    summaries = {k: summarise(v) for k, v in out.items()}

    def acc(model: str, cond: str, metric: str, task: str = "open") -> dict:
        return next(r for r in summaries[model][0] if (r["condition"], r["task"], r["metric"]) == (cond, task, metric))

    def eff(model: str, effect: str, metric: str = "em", task: str = "open") -> dict | None:
        return next(
            (e for e in summaries[model][1] if (e["effect"], e["task"], e["metric"]) == (effect, task, metric)), None
        )

    vlm_note = (
        "VLM not plugged in (no trained medfm.methods.vlm checkpoint available when run); text-only LM + baselines."
    )
    claims = []
    g = eff("smollm2_text_only", "icl_gain")
    claims.append(claim("icl_gain_text_only", "ICL beats 0-shot: +8.01 judge points on average over 15 models; "
                        "text-only Llama-3.3-70B 5.32 -> 16.53", "EM ICL - EM 0-shot (points, paired)", g["diff"],
                        threshold=0.0, ci=(g["ci_low"], g["ci_high"]), n=g["n"],
                        note=f"SmolLM2-135M text-only: the examples reveal each problem's answer vocabulary. {vlm_note}"))  # fmt: skip
    g = eff("smollm2_text_only", "icl_gain", "judge")
    claims.append(claim("icl_gain_text_only_judge", "ICL gain in judge accuracy (+8.01 points mean)",
                        "judge(contains) ICL - 0-shot (points)", g["diff"], threshold=0.0,
                        ci=(g["ci_low"], g["ci_high"]), n=g["n"],
                        note="rule stand-in judge: normalised true answer contained in the output"))  # fmt: skip
    g = eff("oracle_icl", "icl_gain")
    claims.append(claim("icl_gain_oracle_reference", "harness check: a perfect-perception in-context learner must "
                        "gain from examples that reveal the labelling convention", "EM ICL - 0-shot (points)",
                        g["diff"], threshold=50.0, ci=(g["ci_low"], g["ci_high"]), n=g["n"],
                        note="scripted reference model, not a paper number"))  # fmt: skip
    for kind in ("random_noise", "targeted_noise"):
        e = eff("smollm2_text_only", kind)
        claims.append(claim(f"{kind}_hurts", "one noisy example costs 9.1 % (random) / 9.5 % (targeted) relative "
                            "judge accuracy (mean of 9 open models)", "EM with noise - EM ICL (points)", e["diff"],
                            threshold=0.0, expect="less", ci=(e["ci_low"], e["ci_high"]), n=e["n"],
                            note=f"relative change {e['relative_pct']} %; SmolLM2 text-only"))  # fmt: skip
    e = eff("smollm2_text_only", "recency_last")
    if e:
        claims.append(claim("recency_bias", "recency bias: up to +71 points when the matching example is last "
                            "(same direction for all 9 models)", "EM relevant-last - relevant-not-last (points)",
                            e["diff"], threshold=0.0, ci=(e["ci_low"], e["ci_high"]), n=e["n"],
                            note="answer-match relevance; SmolLM2 text-only"))  # fmt: skip
    e = eff("smollm2_text_only", "perm_last_matches")
    if e:
        claims.append(claim("recency_in_permutations", "SMMILE++: judge accuracy much higher when the last ICL "
                            "answer equals the query's (e.g. LLaVA-1.5-13B 76.0 vs 6.3)", "EM last-matches - "
                            "otherwise (points, unpaired)", e["diff"], threshold=0.0, ci=(e["ci_low"], e["ci_high"]),
                            n=e["n"], note=f"permutations capped at {PERM_CAP} per problem on CPU"))  # fmt: skip
    rb = acc("smollm2_text_only", "icl", "baseline_random")
    tl = acc("smollm2_text_only", "icl", "em")
    claims.append(claim("text_only_below_random", "text-only ICL (16.53) is below the Random baseline (27.86)",
                        "EM text-only ICL (%)", tl["accuracy"], baseline=rb["accuracy"], expect="less",
                        n=tl["n"], note="point comparison (no CI) against the Random baseline on the same problems"))  # fmt: skip
    metrics = {
        "n_problems": len(problems),
        "perm_cap": PERM_CAP,
        "summary": {k: v[0] for k, v in summaries.items()},
        "effects": {k: v[1] for k, v in summaries.items()},
        "seconds": {**timings, "total_s": time.perf_counter() - t0},
        "calls_per_s_smollm2": sum(len(r["records"]) for r in res_lm.values()) / max(1e-9, timings["smollm2_s"]),
    }
    write_benchmark(OUT, "smmile", "nice -n 10 .venv/bin/python benchmarks/smmile.py", claims, metrics)
    for c in claims:
        print(f"{c.id}: ours={c.ours} holds={c.holds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
