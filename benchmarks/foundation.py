"""Foundation benchmark: the CLI answers --help without paying for torch.

Measured side by side in one run: wall time of `medfm --help`, `medfm <method> --help`-style group help
(`medfm demo --help`), and of a bare `python -c "import torch"` that any torch-importing CLI would pay.
Writes benchmarks/results/foundation.json.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from medfm.core.claims import claim, write_benchmark
from medfm.core.metrics import bootstrap_ci

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 7


def wall(argv: list[str]) -> list[float]:
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    py = sys.executable
    help_t = wall([py, "-m", "medfm.cli", "--help"])
    verb_t = wall([py, "-m", "medfm.cli", "demo", "--help"])
    torch_t = wall([py, "-c", "import torch"])
    med = statistics.median
    _, help_ci, _ = bootstrap_ci(lambda x: float(sum(x) / len(x)), help_t, seed=0)
    ratio = med(torch_t) / med(help_t)
    claims = [
        claim(
            "help_under_1s",
            "ARCHITECTURE: `medfm --help` returns in under a second",
            "seconds (mean, 95% CI)",
            sum(help_t) / len(help_t),
            threshold=1.0,
            expect="less",
            ci=help_ci,
            n=REPEATS,
        ),
        claim(
            "help_vs_import_torch",
            "--help never imports torch",
            "speedup_vs_import_torch (median ratio)",
            ratio,
            threshold=1.0,
            n=REPEATS,
            note=f"medians: --help {med(help_t):.3f} s, import torch {med(torch_t):.3f} s",
        ),
    ]
    write_benchmark(
        ROOT / "benchmarks" / "results" / "foundation.json",
        "foundation",
        "python benchmarks/foundation.py",
        claims,
        {"help_seconds": help_t, "verb_help_seconds": verb_t, "import_torch_seconds": torch_t},
    )
    for c in claims:
        print(f"{c.id}: {c.ours:.3f} holds={c.holds}")


if __name__ == "__main__":
    main()
