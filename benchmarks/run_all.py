"""Run every benchmark script in this folder (each writes benchmarks/results/<method>.json), then
regenerate the README tables. Usage: python benchmarks/run_all.py [name ...]"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = {"run_all.py", "results_table.py"}

if __name__ == "__main__":
    wanted = set(sys.argv[1:])
    scripts = [p for p in sorted(HERE.glob("*.py")) if p.name not in SKIP and not p.name.startswith("_")]
    failed = []
    for script in scripts:
        if wanted and script.stem not in wanted:
            continue
        print(f"== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)], cwd=HERE.parent).returncode != 0:
            failed.append(script.name)
    subprocess.run([sys.executable, str(HERE / "results_table.py")], cwd=HERE.parent, check=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)
