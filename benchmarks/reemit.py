"""Re-decide committed results files from their measured numbers under the current schema and declarations.

Usage: ``python benchmarks/reemit.py [method ...]`` (default: every file in benchmarks/results/).

Nothing is measured again: each claim keeps the numbers of the run that produced it (``ours``, ``baseline``,
``ci``, ``n``, ``seeds``, controls, class counts, levels, notes) and its commit; the declarations in
``benchmarks/claims/<method>.yaml`` (paper statement, min_effect, threshold, what the CI resampled, ...)
and the status rules of medfm.core.claims are applied anew. Files of the first schema (before the evidence
standard) take the facts a reader can check in the old file (``legacy`` blocks: the run's scale and
seeds, controls and levels read off its notes and metrics). A re-emitted file records ``reemitted_at``.

Changing a declaration after seeing a result and re-emitting is tuning the benchmark: revise
declarations for reasons stated in the YAML, and prefer rerunning the benchmark.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path

from medfm.core.bench import declared_claim, load_declarations
from medfm.core.claims import SCHEMA, git_state, write_benchmark

HERE = Path(__file__).resolve().parent
MEASURED = ("baseline", "ci", "n", "seeds", "controls", "positives", "negatives", "levels", "degenerate", "note")


def reemit(path: Path) -> Path:
    old = json.loads(path.read_text())
    method = old["method"]
    decl = load_declarations(method, HERE)
    decls = decl.get("claims", {})
    is_legacy = old.get("schema") != SCHEMA or bool(old.get("legacy_run"))  # numbers from a schema-1 run
    legacy_run = decl.get("legacy", {}) if is_legacy else {}
    claims = []
    stored = {c["id"]: c for c in old["claims"]}
    unknown = sorted(set(stored) - set(decls))
    if unknown:
        raise SystemExit(f"{path.name}: claim(s) {unknown} have no declaration in benchmarks/claims/{method}.yaml")
    for cid, d in decls.items():
        c = stored.get(cid)
        if c is None:
            claims.append(declared_claim(d, cid, None, note="not measured by this run"))
            continue
        measured = {k: c[k] for k in MEASURED if c.get(k) is not None}
        measured.setdefault("seeds", legacy_run.get("seeds", 1))
        measured.update((d.get("legacy") or {}) if is_legacy else {})
        ours = measured.pop("ours", c.get("ours"))
        claims.append(declared_claim(d, cid, ours, **measured))
    commit, dirty = old.get("commit"), old.get("dirty")
    if dirty is None and commit:
        commit, dirty = commit.removesuffix("-dirty"), commit.endswith("-dirty")
    now_commit, now_dirty = git_state(HERE)
    extra = {
        "reemitted_at": {
            "commit": now_commit,
            "dirty": now_dirty,
            "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        },
        "run_created_at": old.get("run_created_at", old.get("created_at")),
        "machine": old.get("machine"),  # the machine the numbers were measured on
        **({"legacy_run": True} if is_legacy else {}),
    }
    return write_benchmark(
        path,
        method,
        old["command"],
        claims,
        old.get("metrics", {}),
        scale=old.get("scale", legacy_run.get("scale", "smoke")),
        seeds=old.get("seeds", legacy_run.get("seeds", 1)),
        wall_s=old.get("wall_s", legacy_run.get("wall_s")),
        device=old.get("device", legacy_run.get("device", "cpu")),
        commit=commit,
        dirty=bool(dirty),
        extra=extra,
    )


if __name__ == "__main__":
    wanted = set(sys.argv[1:])
    for p in sorted((HERE / "results").glob("*.json")):
        if wanted and p.stem not in wanted:
            continue
        out = reemit(p)
        doc = json.loads(out.read_text())
        counts = {s: sum(c["status"] == s for c in doc["claims"]) for s in ("holds", "fails", "inconclusive")}
        print(f"{p.name}: {doc['scale']}, {counts}")
