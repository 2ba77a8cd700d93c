"""Print what `make setup` installed and how large it is: the environment's size and its largest packages.

    python tools/install_size.py [--top 10]
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import sys
from pathlib import Path


def dist_size(dist: md.Distribution) -> int:
    """Bytes of the files a distribution installed (its RECORD), 0 when it lists none."""
    total = 0
    for f in dist.files or []:
        try:
            total += Path(dist.locate_file(f)).stat().st_size
        except OSError:
            continue
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args(argv)
    sizes = sorted(((dist_size(d), d.metadata["Name"], d.version) for d in md.distributions()), reverse=True)
    total = sum(s for s, _n, _v in sizes)
    cuda = sum(s for s, n, _v in sizes if n.lower().startswith(("nvidia-", "triton")))
    try:
        import torch  # noqa: F401  (only to name the build)

        build = f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none: CPU-only build'})"
    except ImportError:
        build = "torch not installed"
    print(f"setup: {len(sizes)} packages, {total / 2**30:.1f} GiB in {sys.prefix}; {build}")
    if cuda:
        print(f"setup: {cuda / 2**30:.1f} GiB of it are CUDA libraries and triton (unused without an NVIDIA GPU; "
              "a CPU-only torch build avoids them: see the README's install notes)")  # fmt: skip
    for s, name, version in sizes[: args.top]:
        print(f"  {s / 2**20:8.0f} MiB  {name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
