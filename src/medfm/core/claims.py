"""Benchmark claims under one evidence standard: ``benchmarks/results/<method>.json`` and the README table.

A claim is one line of a paper tested on our data. Its ``status`` is computed here from the measured
numbers, never typed in, and every input of that decision is stored beside it, so a reader (and
:func:`validate_benchmark`) can recompute it from the file alone.

The decision (:func:`decide`), in order:

1. no measurement -> ``inconclusive / not_run`` (``degenerate`` when the benchmark says why it is undefined);
2. a declared control did not pass -> ``inconclusive / control_failed``;
3. ``degenerate``: a cause given by the benchmark (constant predictor, ...), a two-class cell with fewer
   than :data:`MIN_CLASS_COUNT` positives or negatives, an arm's level at the floor or ceiling of the
   metric's ``bounds``, or a resampled CI of zero width (no item varies, e.g. identical outputs);
4. ``underpowered``: fewer items / positives than declared, a comparison of trained arms with fewer than
   :data:`MIN_SEEDS_TRAINED` seeds or a CI that does not resample seeds, a resampled claim without CI,
   or a CI wider than ``2 x min_effect``;
5. otherwise, for ``expect="greater"``: ``holds`` when the CI's lower bound exceeds ``threshold``,
   ``fails`` when its upper bound is below ``threshold + min_effect`` (an effect that matters is
   excluded), else ``inconclusive / underpowered``. ``"less"`` mirrors it. Claims measured without
   resampling (``resample="none"``: exact counts, FLOPs) use the point value for both bounds.

File format (ARCHITECTURE.md, "Benchmarks and claims")::

    {"schema", "method", "command", "commit", "dirty", "scale", "seeds", "wall_s", "device", "machine",
     "created_at", "claims": [...], "metrics": {...}}
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from medfm.core.files import atomic_write_json, atomic_write_text
from medfm.core.metrics import MIN_CLASS_COUNT

SCHEMA = "medfm.claims/2"
Expect = Literal["greater", "less"]
STATUSES = ("holds", "fails", "inconclusive")
REASONS = ("underpowered", "degenerate", "control_failed", "not_run")
RESAMPLES = ("items", "seeds", "seeds×items", "none")
SCALES = ("smoke", "effect", "paper")
#: Trained arms are compared over at least this many seeds (training noise is per run, not per item).
MIN_SEEDS_TRAINED = 3
#: Files of these scales appear in the README's results table; smoke numbers never do.
VERDICT_SCALES = ("effect", "paper")


@dataclass
class Control:
    """A check the claim depends on (image shuffle, learned-shortcut gate, length baseline, ...).

    Attributes:
        id: short name, e.g. ``image_shuffle``.
        what: one sentence: what was checked and what passing means.
        passed: the measured outcome.
        value: the measured number behind ``passed`` (units of the control), when there is one.
    """

    id: str
    what: str
    passed: bool
    value: float | None = None


@dataclass
class Claim:
    """One paper statement tested on our data, with its verdict and every input of that verdict.

    Attributes:
        id: stable identifier within the method.
        paper: what the paper reports, in words and numbers.
        metric: what ``ours`` measures, with units.
        ours: the measured value (a difference for comparisons), None when not measured.
        baseline: the compared arm's value, for context (the decision uses ``threshold``).
        ci: ``[low, high]`` 95 % CI of ``ours``, or None.
        n: number of items (studies, volumes, questions, settings) behind ``ours``.
        seeds: number of independent training runs (1 when nothing is trained).
        resample: what the CI resamples: ``items``, ``seeds``, ``seeds×items`` or ``none`` (exact).
        min_effect: smallest difference that matters, in the metric's units (> 0).
        controls: checks the claim depends on.
        falsifiable_by: one sentence: the outcome that would have made it fail.
        status / reason / why: the verdict, its reason when inconclusive, and a sentence explaining it.
        holds: ``status == "holds"``.
        primary: the one claim that stands for its paper statement (the others are secondary).
        threshold / expect: ``ours`` is compared with ``threshold`` in direction ``expect``.
        trained: the claim compares trained arms (needs seeds).
        min_n / min_positives: declared minimum items and positives.
        positives / negatives: class counts of a two-class cell.
        bounds: ``[floor, ceiling]`` of the metric for the arms' levels (e.g. ``[0, 1]`` for AUROC).
        levels: each arm's value in metric units (``{"aligned": 0.62, "sft": 0.55}``), checked against bounds.
        degenerate: why the measurement is degenerate, when the benchmark detected it ("" otherwise).
        note: anything else a reader needs.
    """

    id: str
    paper: str
    metric: str
    ours: float | None
    baseline: float | None
    ci: list[float] | None
    n: int | None
    seeds: int
    resample: str
    min_effect: float
    controls: list[Control]
    falsifiable_by: str
    status: str
    reason: str | None
    why: str
    holds: bool
    primary: bool = True
    threshold: float = 0.0
    expect: str = "greater"
    trained: bool = False
    min_n: int | None = None
    min_positives: int | None = None
    positives: int | None = None
    negatives: int | None = None
    bounds: list[float] | None = None
    levels: dict[str, float] | None = None
    degenerate: str = ""
    note: str = ""


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def decide(
    *,
    ours: float | None,
    threshold: float,
    min_effect: float,
    expect: str = "greater",
    ci: Sequence[float] | None = None,
    n: int | None = None,
    seeds: int = 1,
    resample: str = "items",
    trained: bool = False,
    controls: Sequence[Control | Mapping[str, Any]] = (),
    min_n: int | None = None,
    min_positives: int | None = None,
    positives: int | None = None,
    negatives: int | None = None,
    bounds: Sequence[float] | None = None,
    levels: Mapping[str, float] | None = None,
    degenerate: str = "",
) -> tuple[str, str | None, str]:
    """The verdict ``(status, reason, why)`` of a claim from its measured numbers (see the module docstring)."""
    if expect not in ("greater", "less"):
        raise ValueError(f"expect must be 'greater' or 'less', got {expect!r}")
    if resample not in RESAMPLES:
        raise ValueError(f"resample must be one of {RESAMPLES}, got {resample!r}")
    if not _finite(min_effect) or min_effect <= 0:
        raise ValueError(f"min_effect must be a positive number in the metric's units, got {min_effect!r}")
    if not _finite(ours):
        if degenerate:
            return "inconclusive", "degenerate", degenerate
        return "inconclusive", "not_run", "no measurement"
    failed = [c for c in controls if not (c.passed if isinstance(c, Control) else c["passed"])]
    if failed:
        names = ", ".join(c.id if isinstance(c, Control) else c["id"] for c in failed)
        return "inconclusive", "control_failed", f"control(s) not passed: {names}"
    if degenerate:
        return "inconclusive", "degenerate", degenerate
    if positives is not None or negatives is not None:
        pos, neg = positives or 0, negatives or 0
        if min(pos, neg) < MIN_CLASS_COUNT:
            return "inconclusive", "degenerate", f"{pos} positives / {neg} negatives (< {MIN_CLASS_COUNT} of a class)"
    if bounds is not None:
        lo_b, hi_b = bounds
        tol = 1e-9 * max(1.0, abs(hi_b - lo_b))
        for name, v in (levels or {"ours": ours}).items():
            if v is not None and (abs(v - lo_b) <= tol or abs(v - hi_b) <= tol):
                where = "floor" if abs(v - lo_b) <= tol else "ceiling"
                return "inconclusive", "degenerate", f"{name} = {v:.4g} is at the metric's {where}"
    if min_n is not None and (n is None or n < min_n):
        return "inconclusive", "underpowered", f"n = {n} below the declared minimum {min_n}"
    if min_positives is not None and (positives is None or positives < min_positives):
        return "inconclusive", "underpowered", f"{positives} positives below the declared minimum {min_positives}"
    if trained:
        if seeds < MIN_SEEDS_TRAINED:
            return "inconclusive", "underpowered", f"trained arms compared on {seeds} seed(s) (< {MIN_SEEDS_TRAINED})"
        if "seeds" not in resample:
            return "inconclusive", "underpowered", f"trained arms with a CI over {resample} only, not seeds"
    if resample == "none":
        lo = hi = float(ours)
    else:
        if ci is None or not all(_finite(x) for x in ci):
            return "inconclusive", "underpowered", "no confidence interval"
        lo, hi = float(ci[0]), float(ci[1])
        if hi == lo:  # every resample gave the same value: nothing varies between items, the CI says nothing
            return "inconclusive", "degenerate", f"zero-width CI [{lo:.4g}, {hi:.4g}]: the measurement does not vary"
        if hi - lo > 2 * min_effect:
            return "inconclusive", "underpowered", f"CI width {hi - lo:.3g} > 2 x min_effect ({2 * min_effect:.3g})"
    low, high = ("value", "value") if resample == "none" else ("CI lower bound", "CI upper bound")
    if expect == "greater":
        if lo > threshold:
            return "holds", None, f"{low} {lo:.6g} > {threshold:.6g}"
        if hi < threshold + min_effect:
            return "fails", None, f"{high} {hi:.6g} < {threshold:.6g} + min_effect {min_effect:.3g}"
    else:
        if hi < threshold:
            return "holds", None, f"{high} {hi:.6g} < {threshold:.6g}"
        if lo > threshold - min_effect:
            return "fails", None, f"{low} {lo:.6g} > {threshold:.6g} - min_effect {min_effect:.3g}"
    return "inconclusive", "underpowered", "the CI contains both no effect and an effect of min_effect"


def claim(
    id: str,
    paper: str,
    metric: str,
    ours: float | None,
    *,
    min_effect: float,
    falsifiable_by: str,
    baseline: float | None = None,
    threshold: float | None = None,
    expect: Expect = "greater",
    ci: Sequence[float] | None = None,
    n: int | None = None,
    seeds: int = 1,
    resample: str = "items",
    trained: bool = False,
    controls: Sequence[Control] = (),
    primary: bool = True,
    min_n: int | None = None,
    min_positives: int | None = None,
    positives: int | None = None,
    negatives: int | None = None,
    bounds: Sequence[float] | None = None,
    levels: Mapping[str, float] | None = None,
    degenerate: str = "",
    note: str = "",
) -> Claim:
    """Build a claim with its status computed by :func:`decide`.

    ``threshold`` is what ``ours`` is compared with; without it the ``baseline`` value is the threshold.
    A threshold always wins over the baseline (the baseline is then context). Example: a method beating
    a baseline with a paired-difference CI is ``claim(..., ours=diff, threshold=0.0, ci=diff_ci)``.
    """
    thr = threshold if threshold is not None else baseline
    if thr is None:
        raise ValueError(f"claim {id}: give a baseline or a threshold to compare against")
    if not falsifiable_by.strip():
        raise ValueError(f"claim {id}: say which outcome would have made it fail (falsifiable_by)")
    ours_f = float(ours) if _finite(ours) else None
    ctrl = [c if isinstance(c, Control) else Control(**c) for c in controls]
    status, reason, why = decide(
        ours=ours_f,
        threshold=float(thr),
        min_effect=min_effect,
        expect=expect,
        ci=ci,
        n=n,
        seeds=seeds,
        resample=resample,
        trained=trained,
        controls=ctrl,
        min_n=min_n,
        min_positives=min_positives,
        positives=positives,
        negatives=negatives,
        bounds=bounds,
        levels=levels,
        degenerate=degenerate,
    )
    return Claim(
        id=id,
        paper=paper,
        metric=metric,
        ours=ours_f,
        baseline=float(baseline) if _finite(baseline) else None,
        ci=[float(x) for x in ci] if ci is not None else None,
        n=n,
        seeds=seeds,
        resample=resample,
        min_effect=float(min_effect),
        controls=ctrl,
        falsifiable_by=falsifiable_by.strip(),
        status=status,
        reason=reason,
        why=why,
        holds=status == "holds",
        primary=primary,
        threshold=float(thr),
        expect=expect,
        trained=trained,
        min_n=min_n,
        min_positives=min_positives,
        positives=positives,
        negatives=negatives,
        bounds=[float(b) for b in bounds] if bounds is not None else None,
        levels={k: float(v) for k, v in levels.items()} if levels is not None else None,
        degenerate=degenerate,
        note=note,
    )


def recheck(c: Mapping[str, Any]) -> tuple[str, str | None, str]:
    """Recompute the verdict of a stored claim (a dict from a results file) from its stored inputs."""
    return decide(
        ours=c.get("ours"),
        threshold=c["threshold"],
        min_effect=c["min_effect"],
        expect=c.get("expect", "greater"),
        ci=c.get("ci"),
        n=c.get("n"),
        seeds=c.get("seeds", 1),
        resample=c.get("resample", "items"),
        trained=c.get("trained", False),
        controls=c.get("controls", []),
        min_n=c.get("min_n"),
        min_positives=c.get("min_positives"),
        positives=c.get("positives"),
        negatives=c.get("negatives"),
        bounds=c.get("bounds"),
        levels=c.get("levels"),
        degenerate=c.get("degenerate", ""),
    )


# -- results files -----------------------------------------------------------------------------------------------------


def git_state(cwd: str | Path | None = None) -> tuple[str | None, bool]:
    """``(commit, dirty)`` of the checkout around ``cwd``; ``(None, False)`` outside a git checkout.

    The results files and the README table generated from them do not count: rerunning a benchmark rewrites
    its own previous results, which says nothing about the code that produced the new ones.
    """
    from medfm.core.runs import git_commit

    sha = git_commit(cwd, ignore=("benchmarks/results", "README.md"))
    if sha is None:
        return None, False
    return sha.removesuffix("-dirty"), sha.endswith("-dirty")


def machine() -> str:
    return f"{platform.machine()}, {_cpu_count()} CPU cores, {platform.system()} {platform.release()}"


def benchmark_doc(
    method: str,
    command: str,
    claims: Sequence[Claim],
    metrics: Mapping[str, Any],
    *,
    scale: str,
    seeds: int,
    wall_s: float | None,
    device: str,
    commit: str | None = None,
    dirty: bool | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The results-file document (validated before it is returned)."""
    if commit is None:
        commit, dirty = git_state(Path(__file__).resolve().parent)
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "method": method,
        "command": command.strip(),
        "commit": commit,
        "dirty": bool(dirty),
        "scale": scale,
        "seeds": seeds,
        "wall_s": round(float(wall_s), 1) if wall_s is not None else None,
        "device": device,
        "machine": machine(),
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **dict(extra or {}),
        "claims": [asdict(c) for c in claims],
        "metrics": dict(metrics),
    }
    doc = json.loads(json.dumps(doc, default=_json_default))  # exactly what a reader of the file will see
    errors = validate_benchmark(doc)
    if errors:
        raise ValueError(f"{method}: invalid results document: " + "; ".join(errors))
    return doc


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_benchmark(path: str | Path, method: str, command: str, claims: Sequence[Claim], metrics: Mapping[str, Any],
                    **kwargs: Any) -> Path:  # fmt: skip
    """Write ``benchmarks/results/<method>.json`` atomically (see :func:`benchmark_doc` for ``kwargs``)."""
    return atomic_write_json(path, benchmark_doc(method, command, claims, metrics, **kwargs))


_CLAIM_KEYS = {f.name for f in fields(Claim)}
_DOC_KEYS = ("schema", "method", "command", "commit", "dirty", "scale", "seeds", "wall_s", "device", "machine",
             "created_at", "claims", "metrics")  # fmt: skip


def validate_benchmark(doc: Mapping[str, Any]) -> list[str]:
    """Problems with a results document (empty when it follows the schema and its verdicts recompute)."""
    errs: list[str] = []
    missing = [k for k in _DOC_KEYS if k not in doc]
    if missing:
        return [f"missing key(s) {missing}"]
    if doc["schema"] != SCHEMA:
        errs.append(f"schema {doc['schema']!r} is not {SCHEMA!r}")
    if doc["scale"] not in SCALES:
        errs.append(f"scale {doc['scale']!r} not in {SCALES}")
    if not isinstance(doc["seeds"], int) or doc["seeds"] < 1:
        errs.append(f"seeds must be a positive integer, got {doc['seeds']!r}")
    if not isinstance(doc["dirty"], bool):
        errs.append("dirty must be true or false")
    if not isinstance(doc["claims"], list) or not doc["claims"]:
        return [*errs, "claims must be a non-empty list"]
    seen: set[str] = set()
    primaries: dict[str, int] = {}
    for c in doc["claims"]:
        cid = c.get("id", "?")
        miss = sorted(_CLAIM_KEYS - set(c))
        if miss:
            errs.append(f"{cid}: missing {miss}")
            continue
        if cid in seen:
            errs.append(f"{cid}: duplicate id")
        seen.add(cid)
        if c["status"] not in STATUSES:
            errs.append(f"{cid}: status {c['status']!r} not in {STATUSES}")
        if (c["status"] == "inconclusive") != (c["reason"] in REASONS):
            errs.append(f"{cid}: an inconclusive claim (and only one) carries a reason from {REASONS}")
        if c["holds"] is not (c["status"] == "holds"):
            errs.append(f"{cid}: holds must equal status == 'holds'")
        if not str(c["falsifiable_by"]).strip():
            errs.append(f"{cid}: empty falsifiable_by")
        if not isinstance(c["seeds"], int) or c["seeds"] < 1:
            errs.append(f"{cid}: seeds must be a positive integer")
        for ctl in c["controls"]:
            if not {"id", "what", "passed", "value"} <= set(ctl) or not isinstance(ctl["passed"], bool):
                errs.append(f"{cid}: control {ctl!r} needs id, what, passed (bool), value")
        try:
            got = recheck(c)
        except (ValueError, TypeError, KeyError) as exc:
            errs.append(f"{cid}: cannot recompute the status ({exc})")
            continue
        if (got[0], got[1]) != (c["status"], c["reason"]):
            errs.append(f"{cid}: stored status {c['status']}/{c['reason']} but the numbers give {got[0]}/{got[1]}")
        if c["primary"]:
            primaries[c["paper"]] = primaries.get(c["paper"], 0) + 1
    for paper, k in primaries.items():
        if k > 1:
            errs.append(f"{k} primary claims for one paper statement ({paper[:60]!r}); mark the others secondary")
    papers = {c.get("paper") for c in doc["claims"]}
    for paper in papers - set(primaries):
        errs.append(f"no primary claim for the paper statement {str(paper)[:60]!r}")
    return errs


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
        return f"{x:.3g}" if abs(x) < 999.5 else f"{x:,.0f}"  # 999.7 -> "1,000", never "1e+03"
    return str(x)


def _cell(text: object) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, on one line."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def status_text(c: Mapping[str, Any]) -> str:
    if c.get("status") == "holds":
        return "holds"
    if c.get("status") == "fails":
        return "**fails**"
    return f"inconclusive: {c.get('reason')}"


def results_table(results_dir: str | Path) -> str:
    """Markdown table of every claim in the effect- and paper-scale files of ``results_dir``.

    Smoke-scale files are listed below the table by name, never as verdicts."""
    docs = load_benchmarks(results_dir)
    verdicts = [d for d in docs if d.get("scale") in VERDICT_SCALES]
    smoke = [d for d in docs if d.get("scale") not in VERDICT_SCALES]
    lines = []
    if verdicts:
        lines += ["| method | claim | paper | ours | baseline | 95% CI | seeds | n | status |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for doc in verdicts:
            for c in doc.get("claims", []):
                ci = f"[{_num(c['ci'][0])}, {_num(c['ci'][1])}]" if c.get("ci") else ""
                tag = "" if c.get("primary", True) else " (secondary)"
                lines.append(
                    f"| {doc['method']} | {_cell(c['id'])}{tag}: {_cell(c['metric'])} | {_cell(c.get('paper', ''))} | "
                    f"{_num(c.get('ours'))} | {_num(c.get('baseline'))} | {ci} | {_num(c.get('seeds'))} | "
                    f"{_num(c.get('n'))} | {status_text(c)} |"
                )
    else:
        lines.append("_No effect- or paper-scale benchmark results yet._")
    if smoke:
        names = ", ".join(f"{d['method']} ({len(d.get('claims', []))} claims)" for d in smoke)
        lines += ["", f"Smoke-scale runs, not verdicts (files in benchmarks/results/): {names}."]
    cmds = sorted({f"`{d['command']}`" for d in verdicts if d.get("command")})
    if cmds:
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


__all__ = [
    "SCHEMA",
    "Claim",
    "Control",
    "benchmark_doc",
    "claim",
    "decide",
    "recheck",
    "results_table",
    "update_readme",
    "validate_benchmark",
    "write_benchmark",
]
