"""Conditions x tasks on one backend, and the paper's summaries (accuracies and effects) of the records.

``run_experiment`` expands problems under each condition, answers every instance per task through the harness
(resumable per condition/task store), judges open answers when a judge is given, and returns the records.
``summarise`` turns records into the summary table (metric, accuracy, bootstrap mean ± std, 95 % interval,
counts of call errors and format errors) and the effect table: ICL - 0-shot, noise - ICL, order (relevant last -
not last, first - not first), all paired on problems, plus the recency split inside permutations (last example
answer matches the query or not) and the share of problems whose correctness changes across permutations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medfm.backends.base import Backend
from medfm.methods.smmile.conditions import expand
from medfm.methods.smmile.data import Problem
from medfm.methods.smmile.harness import BASELINES, HarnessOptions, ResponseStore, judge_records, run_instances
from medfm.methods.smmile.metrics import bootstrap_accuracy

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (condition, task)
SCORES = {"open": ("em", "judge"), "mcqa": ("mcqa",)}


def run_experiment(
    problems: Sequence[Problem],
    backend: Backend,
    *,
    conditions: Sequence[str],
    tasks: Sequence[str],
    opts: HarnessOptions,
    judge: Backend | str | None = None,
    store_dir: str | Path | None = None,
    embedder: Callable[[Sequence[Any]], np.ndarray] | None = None,
    perm_cap: int = 24,
    relevance: str = "answer",
    exclude_reasoning: bool = True,
) -> dict[Key, dict[str, Any]]:
    """Records of every (condition, task): ``{key: {"records": [...], "excluded": [...], "judge_counts": {...}}}``."""
    out: dict[Key, dict[str, Any]] = {}
    for cond in conditions:
        instances, excluded = expand(
            problems,
            cond,
            seed=opts.seed,
            perm_cap=perm_cap,
            relevance=relevance,
            embedder=embedder,
            exclude_reasoning=exclude_reasoning,
        )
        baselines: dict[str, dict[str, Any]] = {}  # task-independent: computed once per instance
        for task in tasks:
            store = ResponseStore(Path(store_dir) / f"{cond}_{task}.jsonl") if store_dir else None
            recs = run_instances(instances, backend, replace(opts, task=task), store, embedder, desc=f"{cond}/{task}",
                                 baselines=baselines)  # fmt: skip
            counts: dict[str, int] = {}
            if judge is not None and task == "open":
                counts = judge_records(recs, judge, batch_size=opts.batch_size)
                if store is not None:
                    store.rewrite(recs)
            out[(cond, task)] = {"records": recs, "excluded": excluded, "judge_counts": counts}
            log.info("smmile %s/%s: %d instances (%d excluded)", cond, task, len(recs), len(excluded))
    return out


def _scores(recs: Sequence[dict[str, Any]], metric: str) -> dict[str, float]:
    """``{instance or problem id: score}`` for records that have ``metric``."""
    return {r["problem_id"]: float(r[metric]) for r in recs if r.get(metric) is not None}


def _by_problem(recs: Sequence[dict[str, Any]], metric: str) -> dict[str, float]:
    """Mean score per source problem (permutations are averaged)."""
    acc: dict[str, list[float]] = {}
    for r in recs:
        if r.get(metric) is not None:
            acc.setdefault(r.get("source_problem_id", r["problem_id"]), []).append(float(r[metric]))
    return {k: float(np.mean(v)) for k, v in acc.items()}


def summarise(
    results: dict[Key, dict[str, Any]], n_resamples: int = 1000, seed: int = 42
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(summary_rows, effect_rows)`` (accuracies and differences in percent / percentage points)."""
    summary: list[dict[str, Any]] = []
    for (cond, task), res in results.items():
        recs = res["records"]
        metrics = [*SCORES[task], *(f"baseline_{b}" for b in BASELINES)]
        for m in metrics:
            vals = [float(r[m]) for r in recs if r.get(m) is not None]
            if not vals:
                continue
            s = bootstrap_accuracy(vals, n_resamples, seed)
            row = {
                "condition": cond,
                "task": task,
                "metric": m,
                "accuracy": round(s.accuracy, 2),
                "bootstrap_mean": round(s.boot_mean, 2),
                "bootstrap_std": round(s.boot_std, 2),
                "ci_low": round(s.ci[0], 2) if s.ci else None,
                "ci_high": round(s.ci[1], 2) if s.ci else None,
                "n": s.n,
                "call_errors": sum(1 for r in recs if r.get("error")),
            }
            if m == "judge":
                row["format_errors"] = sum(1 for r in recs if r.get("judge_format_error"))
            if m == "mcqa":
                row["format_errors"] = sum(1 for r in recs if r.get("extraction_failed"))
            summary.append(row)
    return summary, effects(results, n_resamples, seed)


def _paired(a: dict[str, float], b: dict[str, float], n_resamples: int, seed: int) -> dict[str, Any] | None:
    keys = sorted(set(a) & set(b))
    if not keys:
        return None
    x = np.array([a[k] for k in keys])
    y = np.array([b[k] for k in keys])
    s = bootstrap_accuracy(x - y, n_resamples, seed)
    base = 100 * float(y.mean())
    return {
        "a": round(100 * float(x.mean()), 2),
        "b": round(base, 2),
        "diff": round(s.accuracy, 2),
        "relative_pct": round(100 * s.accuracy / base, 1) if base > 0 else None,
        "ci_low": round(s.ci[0], 2) if s.ci else None,
        "ci_high": round(s.ci[1], 2) if s.ci else None,
        "bootstrap_std": round(s.boot_std, 2),
        "n": len(keys),
    }


def _unpaired(x: Sequence[float], y: Sequence[float], n_resamples: int, seed: int) -> dict[str, Any] | None:
    if not len(x) or not len(y):
        return None
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    rng = np.random.default_rng(seed)
    d = np.array([rng.choice(xa, len(xa)).mean() - rng.choice(ya, len(ya)).mean() for _ in range(n_resamples)]) * 100
    lo, hi = np.percentile(d, [2.5, 97.5])
    diff = 100 * (xa.mean() - ya.mean())
    return {
        "a": round(100 * float(xa.mean()), 2),
        "b": round(100 * float(ya.mean()), 2),
        "diff": round(float(diff), 2),
        "relative_pct": round(float(100 * diff / (100 * ya.mean())), 1) if ya.mean() > 0 else None,
        "ci_low": round(float(lo), 2),
        "ci_high": round(float(hi), 2),
        "bootstrap_std": round(float(d.std()), 2),
        "n": len(xa) + len(ya),
    }


def effects(results: dict[Key, dict[str, Any]], n_resamples: int = 1000, seed: int = 42) -> list[dict[str, Any]]:
    """Effect rows: ``{"effect", "task", "metric", "a", "b", "diff", "relative_pct", "ci_low", "ci_high", ...}``."""
    rows: list[dict[str, Any]] = []
    pairs = [
        ("icl_gain", "icl", "zero_shot"),
        ("random_noise", "random_noise", "icl"),
        ("targeted_noise", "targeted_noise", "icl"),
        ("recency_last", "order_last", "order_not_last"),
        ("primacy_first", "order_first", "order_not_first"),
        ("last_vs_first", "order_last", "order_first"),
        ("permutation_mean_vs_icl", "permutations", "icl"),
    ]
    tasks = sorted({t for _, t in results})
    for task in tasks:
        for name, ca, cb in pairs:
            if (ca, task) not in results or (cb, task) not in results:
                continue
            for m in SCORES[task]:
                ra, rb = results[(ca, task)]["records"], results[(cb, task)]["records"]
                a = _by_problem(ra, m) if ca == "permutations" else _scores(ra, m)
                b = _scores(rb, m)
                d = _paired(a, b, n_resamples, seed)
                if d:
                    rows.append({"effect": name, "task": task, "metric": m, "a_condition": ca, "b_condition": cb, **d})
        if ("permutations", task) in results:
            recs = results[("permutations", task)]["records"]
            for m in SCORES[task]:
                last = [float(r[m]) for r in recs if r.get(m) is not None and r.get("last_example_matches")]
                other = [float(r[m]) for r in recs if r.get(m) is not None and not r.get("last_example_matches")]
                d = _unpaired(last, other, n_resamples, seed)
                if d:
                    rows.append({"effect": "perm_last_matches", "task": task, "metric": m,
                                 "a_condition": "last ICL answer = query answer", "b_condition": "otherwise", **d})  # fmt: skip
                per: dict[str, list[float]] = {}
                for r in recs:
                    if r.get(m) is not None:
                        per.setdefault(r["source_problem_id"], []).append(float(r[m]))
                flips = [float(0 < np.mean(v) < 1) for v in per.values() if len(v) > 1]
                if flips:
                    s = bootstrap_accuracy(flips, n_resamples, seed)
                    rows.append({"effect": "order_sensitive_problems", "task": task, "metric": m,
                                 "a_condition": "share of problems whose correctness changes across permutations",
                                 "b_condition": "", "a": round(s.accuracy, 2), "b": None, "diff": round(s.accuracy, 2),
                                 "relative_pct": None, "ci_low": round(s.ci[0], 2) if s.ci else None,
                                 "ci_high": round(s.ci[1], 2) if s.ci else None,
                                 "bootstrap_std": round(s.boot_std, 2), "n": s.n})  # fmt: skip
    return rows
