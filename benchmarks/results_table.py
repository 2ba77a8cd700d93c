"""Regenerate the README's capability and results tables from benchmarks/results/*.json."""

from __future__ import annotations

import sys
from pathlib import Path

from medfm.core.claims import update_readme

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    changed = update_readme(ROOT / "README.md", ROOT / "benchmarks" / "results")
    print("README.md updated" if changed else "README.md already up to date")
    sys.exit(0)
