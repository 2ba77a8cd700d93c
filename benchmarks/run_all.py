"""Run the effect-scale benchmarks in dependency order, then regenerate the README tables.

Usage: ``python benchmarks/run_all.py [--quick] [--device cuda] [name ...]``

Each script writes ``benchmarks/results/<name>.json`` (with ``--quick``: a CI-size run under
runs/bench-quick/, nothing written into benchmarks/results/ and the README left alone). Scripts that share a
base model (the chest X-ray CLIP, the radiology VLM) come after the script that defines it, and build it
through ``Benchmark.cached`` under a key of its config and code hash, so a second script or a rerun reuses
it. A failing script is reported and the others still run; the exit code is 1 when any failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Dependency order: a script after the ones whose base models or results it uses.
ORDER = [
    "foundation",  # CLI start-up; no models
    "backends",  # served SmolLM2
    "mass",
    "medvae",
    "chexficient",  # chest X-ray CLIP
    "ravl",  # audits a CLIP
    "vlm",  # radiology VLM (CheXficient-style tower)
    "chexalign",  # aligns a VLM
    "smmile",  # the VLM of vlm.py as an ICL model
    "raddiff",
    "headentropy",
    "srrg",
]
NOT_BENCHMARKS = {"run_all", "results_table", "reemit"}


def scripts() -> list[str]:
    found = {p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_") and p.stem not in NOT_BENCHMARKS}
    missing = found - set(ORDER)
    if missing:  # a new script must be placed in the order deliberately
        raise SystemExit(f"benchmarks/run_all.py: add {sorted(missing)} to ORDER")
    return [name for name in ORDER if name in found]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="benchmarks to run (default: all, in dependency order)")
    ap.add_argument("--quick", action="store_true", help="CI-size runs; nothing written to benchmarks/results/")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    todo = scripts()
    unknown = set(args.names) - set(todo)
    if unknown:
        ap.error(f"unknown benchmark(s) {sorted(unknown)}; known: {', '.join(todo)}")
    failed = []
    for name in todo:
        if args.names and name not in args.names:
            continue
        cmd = [sys.executable, str(HERE / f"{name}.py"), "--device", args.device] + (["--quick"] if args.quick else [])
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=HERE.parent).returncode
        print(f"== {name}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(name)
    if not args.quick:
        subprocess.run([sys.executable, str(HERE / "results_table.py")], cwd=HERE.parent, check=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
