"""`make setup` ends with tools/install_size.py: what was installed and how large it is (issue 28)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_install_size_names_the_environment_the_torch_build_and_the_largest_packages():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "install_size.py"), "--top", "3"], capture_output=True,
                         text=True, timeout=120, check=True).stdout.splitlines()  # fmt: skip
    assert re.fullmatch(r"setup: \d+ packages, \d+\.\d GiB in .+; torch \S+ \(CUDA .+\)", out[0])
    sizes = [int(m.group(1)) for line in out if (m := re.match(r"\s+(\d+) MiB\s+\S+==\S+", line))]
    assert len(sizes) == 3 and sizes == sorted(sizes, reverse=True)
