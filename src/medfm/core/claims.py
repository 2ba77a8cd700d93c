"""Benchmark claims: ``benchmarks/results/<method>.json`` and the README's generated tables.

A claim is one line of a paper tested on our data. ``holds`` is computed here from the measured numbers,
never typed in: for ``expect="greater"`` the claim holds when the CI's lower bound (or, without a CI,
the value itself) exceeds the threshold; for ``"less"`` when the upper bound is below it. The threshold
is the baseline when one is given. Performance claims are ratios measured side by side in one run.

File format (ARCHITECTURE.md, "Benchmarks and claims")::

    {"method", "command", "commit", "machine", "created_at", "claims": [...], "metrics": {...}}
    claim: {"id", "paper", "metric", "ours", "baseline", "ci": [lo, hi], "n", "holds", "note"}
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from medfm.core.files import atomic_write_json, atomic_write_text

Expect = Literal["greater", "less"]


@dataclass
class Claim:
    id: str
    paper: str  # what the paper reports, in words and numbers
    metric: str
    ours: float | None
    baseline: float | None
    ci: list[float] | None
    n: int | None
    holds: bool
    note: str = ""


def holds(
    ours: float | None,
    threshold: float,
    expect: Expect = "greater",
    ci: tuple[float, float] | list[float] | None = None,
) -> bool:
    """Whether the measurement supports ``ours > threshold`` (or ``<``), using the CI bound when given."""
    if ours is None:
        return False
    if expect == "greater":
        return (ci[0] if ci is not None else ours) > threshold
    if expect == "less":
        return (ci[1] if ci is not None else ours) < threshold
    raise ValueError(f"expect must be 'greater' or 'less', got {expect!r}")


def claim(
    id: str,
    paper: str,
    metric: str,
    ours: float | None,
    *,
    baseline: float | None = None,
    threshold: float | None = None,
    expect: Expect = "greater",
    ci: tuple[float, float] | list[float] | None = None,
    n: int | None = None,
    note: str = "",
) -> Claim:
    """Build a claim with ``holds`` computed against ``threshold`` (default: ``baseline``).

    Example: a method beating a baseline with a paired-difference CI is
    ``claim(..., ours=diff, threshold=0.0, ci=diff_ci)``; an accuracy target is ``threshold=0.8``.
    """
    thr = threshold if threshold is not None else baseline
    if thr is None:
        raise ValueError(f"claim {id}: give a baseline or a threshold to compare against")
    return Claim(
        id=id,
        paper=paper,
        metric=metric,
        ours=ours,
        baseline=baseline,
        ci=list(ci) if ci is not None else None,
        n=n,
        holds=holds(ours, thr, expect, ci),
        note=note,
    )


def write_benchmark(path: str | Path, method: str, command: str, claims: list[Claim], metrics: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<method>.json`` atomically."""
    from medfm.core.runs import git_commit

    doc = {
        "method": method,
        "command": command.strip(),  # scripts that join sys.argv[1:] leave a trailing space when it is empty
        "commit": git_commit(Path(path).resolve().parent),
        "machine": f"{platform.machine()}, {_cpu_count()} CPU cores, {platform.system()} {platform.release()}",
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "claims": [asdict(c) for c in claims],
        "metrics": metrics,
    }
    return atomic_write_json(path, doc)


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_benchmarks(results_dir: str | Path) -> list[dict[str, Any]]:
    docs = []
    for p in sorted(Path(results_dir).glob("*.json")):
        doc = json.loads(p.read_text())
        doc["_file"] = p.name
        docs.append(doc)
    return docs


def _num(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


def _cell(text: object) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, on one line."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def results_table(results_dir: str | Path) -> str:
    """Markdown table of every claim in ``results_dir`` (one row per claim)."""
    docs = load_benchmarks(results_dir)
    if not docs:
        return "_No benchmark results yet._"
    lines = ["| method | claim | paper | ours | baseline | 95% CI | n | holds |", "|---|---|---|---|---|---|---|---|"]
    for doc in docs:
        for c in doc.get("claims", []):
            ci = f"[{_num(c['ci'][0])}, {_num(c['ci'][1])}]" if c.get("ci") else ""
            mark = "yes" if c.get("holds") else "**no**"
            lines.append(
                f"| {doc['method']} | {_cell(c['id'])}: {_cell(c['metric'])} | {_cell(c.get('paper', ''))} | "
                f"{_num(c.get('ours'))} | "
                f"{_num(c.get('baseline'))} | {ci} | {_num(c.get('n'))} | {mark} |"
            )
    cmds = sorted({f"`{d['command']}`" for d in docs if d.get("command")})
    lines += ["", "Reproduce: " + ", ".join(cmds)]
    return "\n".join(lines)


def capabilities_table() -> str:
    from medfm import capabilities

    lines = ["| command | capability | status |", "|---|---|---|"]
    for c in capabilities.METHODS:
        lines.append(f"| `medfm {c.name}` | {c.title} — {c.summary} | {'available' if c.available else 'planned'} |")
    return "\n".join(lines)


def replace_block(text: str, name: str, body: str) -> str:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    pattern = re.compile(rf"(<!-- {name}:start -->\n)(.*?)(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"README has no <!-- {name}:start --> ... <!-- {name}:end --> block")
    return pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(3), text)


def update_readme(readme: str | Path, results_dir: str | Path) -> bool:
    """Regenerate the capability and results tables of the README; True when it changed."""
    path = Path(readme)
    old = path.read_text()
    new = replace_block(old, "capabilities", capabilities_table())
    new = replace_block(new, "results", results_table(results_dir))
    if new != old:
        atomic_write_text(path, new)
    return new != old
