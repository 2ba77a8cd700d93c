"""Paper-style tables and plots from smmile runs' results.json (``medfm smmile report``).

Table 1 layout (SM-paper): one row per model and baseline; Judge 0-shot / Judge ICL / EM 0-shot / EM ICL /
MCQA 0-shot / MCQA ICL as "bootstrap mean ± std". Noise table: ICL vs random / targeted noise with the relative
change. Order table: relevant example last vs not last, first vs not first, and the recency split inside the
permutations. Plots: grouped bars per condition and model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

COLUMNS = (("judge", "zero_shot", "Judge 0-shot"), ("judge", "icl", "Judge ICL"), ("em", "zero_shot", "EM 0-shot"),
           ("em", "icl", "EM ICL"), ("mcqa", "zero_shot", "MCQA 0-shot"), ("mcqa", "icl", "MCQA ICL"))  # fmt: skip
BASELINE_NAMES = {
    "baseline_majority": "Majority",
    "baseline_random": "Random",
    "baseline_nearest_image": "Nearest image",
}


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "–"
    return f"{row['bootstrap_mean']:.2f} ± {row['bootstrap_std']:.2f}"


def model_table(runs: Sequence[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Rows of Table 1 from ``(model label, summary rows)`` pairs; baselines come from the first run."""
    out = []
    for i, (label, summary) in enumerate(runs):
        idx = {(r["metric"], r["condition"]): r for r in summary}
        if i == 0:
            for b, name in BASELINE_NAMES.items():
                cells = {}
                for metric, cond, col in COLUMNS:
                    task_rows = [r for r in summary if r["metric"] == b and r["condition"] == cond]
                    pick = next((r for r in task_rows if r["task"] == ("mcqa" if metric == "mcqa" else "open")), None)
                    cells[col] = _cell(pick) if metric != "judge" else "–"  # baselines are scored by match
                if any(v != "–" for v in cells.values()):
                    out.append({"model": name, **cells})
        out.append({"model": label, **{col: _cell(idx.get((m, c))) for m, c, col in COLUMNS}})
    return out


def effect_table(runs: Sequence[tuple[str, list[dict[str, Any]]]], names: Sequence[str]) -> list[dict[str, Any]]:
    """Effect rows (diff in points, relative %, 95 % CI) of the given effect names for every model."""
    rows = []
    for label, effects in runs:
        for e in effects:
            if e["effect"] in names:
                rows.append(
                    {
                        "model": label,
                        "effect": e["effect"],
                        "task": e["task"],
                        "metric": e["metric"],
                        "a": e["a"],
                        "b": e["b"],
                        "diff (points)": e["diff"],
                        "relative %": e.get("relative_pct"),
                        "95% CI": f"[{e['ci_low']}, {e['ci_high']}]" if e.get("ci_low") is not None else "",
                        "n": e["n"],
                    }
                )
    return rows


def plot_conditions(runs: Sequence[tuple[str, list[dict[str, Any]]]], metric: str) -> Any | None:
    """Grouped bars: accuracy (bootstrap mean ± std) per condition, one bar per model; None without data."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    conds: list[str] = []
    for _, summary in runs:
        conds += [r["condition"] for r in summary if r["metric"] == metric and r["condition"] not in conds]
    if not conds:
        return None
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(conds) + 1), 3.0))
    width = 0.8 / max(1, len(runs))
    for j, (label, summary) in enumerate(runs):
        idx = {r["condition"]: r for r in summary if r["metric"] == metric}
        means = [idx[c]["bootstrap_mean"] if c in idx else np.nan for c in conds]
        stds = [idx[c]["bootstrap_std"] if c in idx else 0 for c in conds]
        ax.bar(np.arange(len(conds)) + j * width, means, width, yerr=stds, label=label, capsize=2)
    ax.set_xticks(np.arange(len(conds)) + width * (len(runs) - 1) / 2)
    ax.set_xticklabels(conds, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"{metric} accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
