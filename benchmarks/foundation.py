"""Foundation benchmark: the CLI answers --help without paying for torch.

Measured side by side in one run, interleaved round by round: wall time of `medfm --help`, of a verb's
help (`medfm demo --help`), and of a bare `python -c "import torch"` that any torch-importing CLI would
pay. Writes benchmarks/results/foundation.json (about 1 min; `--quick`: 3 rounds, nothing written there).
"""

from __future__ import annotations

import logging
import statistics
import subprocess
import sys
import time

import numpy as np

from medfm.core.bench import Benchmark
from medfm.core.metrics import bootstrap_ci


def wall(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark("foundation", __doc__, default_seeds=1)
    bench.parser.add_argument("--rounds", type=int, default=15)
    args = bench.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rounds = bench.size(args.rounds, 3)
    py = sys.executable
    help_t, verb_t, torch_t = [], [], []
    for _ in range(rounds):  # interleaved, so slow phases of a shared machine hit every arm alike
        help_t.append(wall([py, "-m", "medfm.cli", "--help"]))
        verb_t.append(wall([py, "-m", "medfm.cli", "demo", "--help"]))
        torch_t.append(wall([py, "-c", "import torch"]))
    h, t = np.array(help_t), np.array(torch_t)
    mean_h, help_ci, _ = bootstrap_ci(np.mean, h, seed=0)
    ratio, ratio_ci, _ = bootstrap_ci(lambda a, b: float(np.median(a) / np.median(b)), h, t, seed=0)
    med = statistics.median
    bench.claim("help_under_1s", mean_h, ci=help_ci, n=rounds)
    bench.claim("help_vs_import_torch", ratio, ci=ratio_ci, n=rounds,
                note=f"medians: --help {med(help_t):.3f} s, import torch {med(torch_t):.3f} s")  # fmt: skip
    bench.write({"help_seconds": help_t, "verb_help_seconds": verb_t, "import_torch_seconds": torch_t})
    return 0


if __name__ == "__main__":
    sys.exit(main())
