"""Head Entropy benchmark (spec A, CPU replication): SmolLM2-135M-Instruct on three offline QA domains.

Domains (none hand-written; see medfm.methods.headentropy.qa):
  arithmetic    generated closed-book sums/differences/products with exact answers (TriviaQA-like, no context)
  iu-mesh       yes/no questions on real IU chest X-ray reports (torchxrayvision's NLMCXR_reports.tgz),
                answered by the reports' manual MeSH tags (HotpotQA-like: context given)
  radlabels-mc  4-option "which finding is definitely present" on the 1,000 labelled radlabels reports,
                gold from the labels (MedMCQA-like)

It measures, side by side in one run: in-domain and transfer AUROC (95 % bootstrap CIs) of Head Entropy
(answer span, pre-generation question span, 1 - sum a^2) and the baselines (Lookback-Lens ratio probe,
last-layer hidden-state probe, LLM-Check attention score, token probability / entropy, verbalised
certainty); and the cost of the features against a plain forward pass at T = 256, 1024, 2048 (time ratio
and peak-memory growth, each memory point in a fresh subprocess).

    python benchmarks/headentropy.py                  # 600 items per domain (the issue's minimum)
    python benchmarks/headentropy.py --n 200          # smaller run; features are cached in --cache
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ("arithmetic", "iu-mesh", "radlabels-mc")
log = logging.getLogger("benchmarks.headentropy")


# ----------------------------------------------------------------------------------------------------------------------
# cost of the features vs a plain forward pass


def _spans_for(t: int) -> object:
    from medfm.methods.headentropy.extract import Spans

    return Spans(template_end=8, question_end=t // 2, prompt_len=t // 2 + 4, answer_end=t - 4, length=t)


def time_ratio(backend: object, lengths: list[int], reps: int) -> dict[str, dict[str, float]]:
    """Median wall time of a plain forward (the model's default attention, last logits only) and of the feature
    pass (row statistics + answer logits), alternating, on the same random token ids."""
    import torch

    from medfm.methods.headentropy.extract import teacher_forced_batch

    model = backend.model
    default_impl = "sdpa"
    out = {}
    g = torch.Generator().manual_seed(0)
    for t in lengths:
        ids = torch.randint(100, 40000, (t,), generator=g).tolist()
        spans = _spans_for(t)
        plain, feats, eager = [], [], []
        for _ in range(reps):
            model.set_attn_implementation(default_impl)
            t0 = time.perf_counter()
            with torch.inference_mode():
                model(input_ids=torch.tensor([ids]), logits_to_keep=1, use_cache=False)
            plain.append(time.perf_counter() - t0)
            model.set_attn_implementation("eager")
            t0 = time.perf_counter()
            with torch.inference_mode():
                model(input_ids=torch.tensor([ids]), logits_to_keep=1, use_cache=False)
            eager.append(time.perf_counter() - t0)
            model.set_attn_implementation(default_impl)
            t0 = time.perf_counter()
            teacher_forced_batch(model, [(ids, spans)])
            feats.append(time.perf_counter() - t0)
        p, e, f = float(np.median(plain)), float(np.median(eager)), float(np.median(feats))
        out[str(t)] = {"plain_sdpa_s": p, "plain_eager_s": e, "features_s": f, "ratio_vs_sdpa": f / p,
                       "ratio_vs_eager": f / e}  # fmt: skip
        log.info("T=%d plain %.3fs eager %.3fs features %.3fs (x%.2f vs sdpa)", t, p, e, f, f / p)
    return out


_MEM_CHILD = r"""
import json, resource, sys, torch
from medfm.backends.hf import shared_backend

def peak_mib():  # VmHWM (resettable) on Linux, else the process's max RSS
    try:
        with open("/proc/self/status") as fh:
            return next(int(x.split()[1]) for x in fh if x.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

mode, t = sys.argv[1], int(sys.argv[2])
b = shared_backend(); m = b.model
ids = torch.randint(100, 40000, (t,), generator=torch.Generator().manual_seed(0)).tolist()
with torch.inference_mode():
    m(input_ids=torch.tensor([ids[:16]]), logits_to_keep=1)  # warm-up: allocator, kernels
try:  # reset the peak to the current RSS so a transient peak while loading the model cannot hide the pass
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
except OSError:
    pass
base = peak_mib()
if mode == "features":
    from medfm.methods.headentropy.extract import Spans, teacher_forced_batch
    teacher_forced_batch(m, [(ids, Spans(8, t // 2, t // 2 + 4, t - 4, t))])
elif mode == "eager_attentions":
    b.attentions_for_ids(ids)
else:
    with torch.inference_mode():
        m(input_ids=torch.tensor([ids]), logits_to_keep=1, use_cache=False)
print(json.dumps({"peak_delta_mib": peak_mib() - base}))
"""


def peak_memory(mode: str, t: int) -> float:
    """Peak resident-memory growth (MiB) of one pass in a fresh process, above the loaded model."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    out = subprocess.run([sys.executable, "-c", _MEM_CHILD, mode, str(t)], capture_output=True, text=True, env=env,
                         timeout=1800, check=True)  # fmt: skip
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_delta_mib"])


# ----------------------------------------------------------------------------------------------------------------------
# QA experiment


def extract_domain(backend: object, name: str, n: int, cache: Path, max_new_tokens: int, seed: int) -> Path:
    """Extract (or resume) features of ``n`` items of a builtin domain into ``cache/<name>`` (FeatureStore)."""
    from medfm.methods.headentropy.extract import FeatureStore, extract_items
    from medfm.methods.headentropy.qa import load_qa

    items = load_qa(f"builtin:{name}", limit=n, seed=seed)
    store = FeatureStore(cache / name)
    store.init({"data": f"builtin:{name}", "domain": name, "model": backend.model_name,
                "max_new_tokens": max_new_tokens, "prefill": "Answer:", "seed": seed,
                "layers": int(backend.model.config.num_hidden_layers),
                "heads": int(backend.model.config.num_attention_heads)})  # fmt: skip
    chunk = 32
    for k in range((len(items) + chunk - 1) // chunk):
        if store.chunk_done(k):
            continue
        t0 = time.perf_counter()
        arrays, rows = extract_items(backend, items[k * chunk : (k + 1) * chunk], max_new_tokens)
        store.write_chunk(k, arrays, rows)
        log.info("%s chunk %d: %d items in %.1fs", name, k, len(rows), time.perf_counter() - t0)
    return store.dir


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=600, help="items per domain")
    ap.add_argument("--max_new_tokens", type=int, default=12)
    ap.add_argument("--lengths", default="256,1024,2048")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=str(ROOT / "runs" / "benchmarks" / "headentropy"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "headentropy.json"))
    ap.add_argument("--skip_perf", action="store_true")
    ap.add_argument("--domains", default=",".join(DOMAINS), help="comma-separated builtin domains")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from medfm.backends.hf import shared_backend
    from medfm.core.claims import claim, write_benchmark
    from medfm.methods.headentropy.probe import SCORERS, transfer_matrix
    from medfm.methods.headentropy.runner import load_domain

    backend = shared_backend()
    metrics: dict[str, object] = {"model": backend.model_name, "n_per_domain_requested": args.n,
                                  "max_new_tokens": args.max_new_tokens}  # fmt: skip
    claims = []
    t_start = time.perf_counter()

    # -- QA: extract, then in-domain + transfer
    cache = Path(args.cache)
    folders = [
        extract_domain(backend, d, args.n, cache, args.max_new_tokens, args.seed) for d in args.domains.split(",")
    ]
    metrics["extract_wall_s"] = time.perf_counter() - t_start
    domains = [load_domain(f, 0.3, args.seed) for f in folders]
    metrics["domains"] = {d.name: {"n": len(d.y), "accuracy": float(d.y.mean()), "n_test": len(d.test)}
                          for d in domains}  # fmt: skip
    names = ["head_entropy", "head_entropy_pregen", "trace_jacobian", "lookback_ratio", "hidden_state",
             "mean_head_entropy", "mean_head_entropy_pregen", "attn_score", "token_prob", "token_entropy",
             "certainty"]  # fmt: skip
    rows, _ = transfer_matrix(domains, [SCORERS[s] for s in names], seed=args.seed, n_resamples=args.bootstrap)
    metrics["auroc_rows"] = rows
    cell = {(r["train"], r["test"], r["method"]): r for r in rows}

    def mean_of(method: str, in_domain: bool) -> float | None:
        v = [r["auroc"] for r in rows
             if r["method"] == method and r["in_domain"] == in_domain and r["auroc"] is not None]  # fmt: skip
        return float(np.mean(v)) if v else None

    summary = {m: {"in_domain": mean_of(m, True), "transfer": mean_of(m, False)} for m in names}
    metrics["summary_mean_auroc"] = summary
    n_test = sum(len(d.test) for d in domains)
    he_in = summary["head_entropy"]["in_domain"]
    for base in ("lookback_ratio", "hidden_state"):
        claims.append(claim(f"in_domain_vs_{base}", "Head Entropy matches or exceeds trained baselines in-domain "
                            "(repo: HE 0.867 vs LLR 0.818, hidden-state 0.868)", f"mean in-domain AUROC vs {base}",
                            he_in, baseline=summary[base]["in_domain"], n=n_test,
                            note="mean over the 3 domains; per-domain paired CIs in metrics.auroc_rows"))  # fmt: skip
    diffs = [
        cell[(a.name, b.name, "head_entropy")]["auroc"] - cell[(a.name, b.name, "lookback_ratio")]["auroc"]
        for a in domains
        for b in domains
        if a.name != b.name
        and cell.get((a.name, b.name, "head_entropy"), {}).get("auroc") is not None
        and cell.get((a.name, b.name, "lookback_ratio"), {}).get("auroc") is not None  # undefined on one-class splits
    ]
    claims.append(
        claim(
            "ood_vs_lookback",
            "OOD, Head Entropy beats the lookback-lens ratio by +8.5 % AUROC on average (repo: 0.740 vs 0.613)",
            f"mean transfer AUROC difference HE - LLR over {len(diffs)} cells",
            float(np.mean(diffs)) if diffs else None,
            threshold=0.0,
            n=len(diffs),
            note="each cell's paired bootstrap CI is in metrics.auroc_rows (diff_lo/diff_hi)",
        )
    )
    for d in domains:
        r = cell[(d.name, d.name, "head_entropy_pregen")]
        claims.append(
            claim(
                f"pregen_signal_{d.name}",
                "the pre-generation (question/context span) variant carries "
                "signal (+17.7 % AUROC over the closest baseline; pilot 0.77)",
                f"in-domain AUROC, question span probe, {d.name}",
                r["auroc"],
                threshold=0.5,
                ci=(r["auroc_lo"], r["auroc_hi"]) if r["auroc_lo"] is not None else None,
                n=r["n"],
            )
        )
    tf = {m: summary[m]["in_domain"] for m in ("attn_score", "token_prob", "token_entropy", "certainty")
          if summary[m]["in_domain"] is not None}  # fmt: skip
    best_tf = max(tf, key=tf.get) if tf else None
    claims.append(claim("training_free", "training-free -mean(H) is the best training-free score (0.736 vs LLM-Check "
                        "0.685, token prob 0.640)", "mean in-domain AUROC of -mean(H2) vs best other training-free",
                        summary["mean_head_entropy"]["in_domain"], baseline=tf.get(best_tf), n=n_test,
                        note=f"best other training-free score: {best_tf}"))  # fmt: skip

    # -- cost
    if not args.skip_perf:
        lengths = [int(x) for x in args.lengths.split(",")]
        perf = time_ratio(backend, lengths, args.reps)
        metrics["time"] = perf
        worst = max(v["ratio_vs_sdpa"] for v in perf.values())
        claims.append(claim("time_overhead", "features cost at most 1.2x a plain forward pass (issue 7; repo: <1 % "
                            "overhead when piggy-backed on generation)", "max over T of time(features)/time(plain sdpa)",
                            worst, threshold=1.2, expect="less", n=len(lengths),
                            note="ratios vs eager attention in metrics.time"))  # fmt: skip
        mem = {str(t): {"plain_mib": peak_memory("plain", t), "features_mib": peak_memory("features", t)}
               for t in lengths}  # fmt: skip
        for t in lengths[:1]:
            mem[str(t)]["eager_attentions_mib"] = peak_memory("eager_attentions", t)
        metrics["memory"] = mem
        x = np.log([float(t) for t in lengths])
        extra = np.array([mem[str(t)]["features_mib"] for t in lengths])
        # a pass that did not raise the measured peak gives no slope (and no claim), not a flat one
        slope = float(np.polyfit(x, np.log(extra), 1)[0]) if (extra > 0).all() else None
        metrics["memory_growth_exponent"] = slope
        cfg = backend.model.config
        metrics["eager_stack_mib_analytic"] = {str(t): cfg.num_hidden_layers * cfg.num_attention_heads * t * t * 4 / 2**20
                                               for t in lengths}  # fmt: skip
        claims.append(
            claim(
                "memory_linear",
                "peak memory grows as O(L*H*T), not O(L*H*T^2) (issue 7)",
                "log-log slope of the feature pass's peak memory over T",
                slope,
                threshold=1.5,
                expect="less",
                n=len(lengths),
                note="an O(T^2) attention stack would give a slope near 2; see eager_stack_mib_analytic; "
                "no slope when a pass did not raise the measured peak memory",
            )
        )
    metrics["wall_s"] = time.perf_counter() - t_start
    metrics["data_note"] = (
        "bigbench is not installed here, so the domains are derived offline: generated "
        "arithmetic, IU report MeSH yes/no, radlabels multiple choice; 70/30 stratified split."
    )
    cmd = "python benchmarks/headentropy.py " + " ".join(sys.argv[1:])
    write_benchmark(args.out, "headentropy", cmd.strip(), claims, metrics)
    for c in claims:
        print(f"{c.id:<32} ours={c.ours} baseline={c.baseline} ci={c.ci} holds={c.holds}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
