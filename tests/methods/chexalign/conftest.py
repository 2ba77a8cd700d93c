"""Shared CheXalign fixtures: one set of CXR phantoms and one tiny SFT'd VLM per test session."""

from __future__ import annotations

import pytest

from medfm.cli import main


@pytest.fixture(scope="session")
def cxr_phantoms(tmp_path_factory):
    out = tmp_path_factory.mktemp("chexalign_cxr")
    assert main(["phantom", "cxr", "--n", "16", "--size", "32", "--seed", "3", "--output_dir", str(out)]) == 0
    return out / "manifest.csv"


@pytest.fixture(scope="session")
def sft_policy(cxr_phantoms, tmp_path_factory):
    """The tiny VLM after a few SFT steps on the phantoms' impressions (`medfm vlm train --config preset:tiny`)."""
    out = tmp_path_factory.mktemp("chexalign_sft")
    argv = [
        "vlm",
        "train",
        "--config",
        "preset:tiny",
        "--data.reports",
        str(cxr_phantoms),
        "--data.split",
        "all",
        "--train.steps",
        "4",
        "--seed",
        "0",
        "--output_dir",
        str(out),
    ]
    assert main(argv) == 0
    return out / "checkpoints" / "final"
