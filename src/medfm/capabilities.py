"""The capabilities medfm is built to provide, and the CLI group that provides each (torch-free).

This table drives ``medfm --help``, ``medfm list``, ``medfm env``, the demo and the README's
capability table. A capability is *available* when its group module exists in this installation.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Capability:
    name: str  # CLI group: `medfm <name> ...`
    title: str
    summary: str
    module: str  # module that defines GROUP

    @property
    def available(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False


METHODS: tuple[Capability, ...] = (
    Capability(
        "mass",
        "MASS",
        "3D self-supervised in-context segmentation pretraining on automatic masks; "
        "few-shot segmentation, fine-tuning, frozen-encoder classification",
        "medfm.methods.mass.cli",
    ),
    Capability(
        "medvae",
        "MedVAE",
        "2D/3D medical autoencoders (two-stage) that downsize images into latents",
        "medfm.methods.medvae.cli",
    ),
    Capability(
        "chexficient",
        "CheXficient",
        "CLIP-style image–report pretraining with online prototype curation",
        "medfm.methods.chexficient.cli",
    ),
    Capability(
        "ravl",
        "RaVL",
        "discover and mitigate spurious correlations of a fine-tuned VLM from region clusters",
        "medfm.methods.ravl.cli",
    ),
    Capability(
        "headentropy",
        "Head Entropy",
        "predict LLM answer correctness from per-head attention 2-Rényi entropies",
        "medfm.methods.headentropy.cli",
    ),
    Capability(
        "srrg",
        "SRRG",
        "structure free-text reports; SRR-BERT finding classifier; F1-SRR-BERT metric",
        "medfm.methods.srrg.cli",
    ),
    Capability(
        "chexalign",
        "CheXalign",
        "judge-scored preference pairs and direct alignment (DPO, IPO, KTO, ORPO, R-DPO)",
        "medfm.methods.chexalign.cli",
    ),
    Capability("smmile", "SMMILE", "multimodal in-context learning benchmark harness", "medfm.methods.smmile.cli"),
    Capability(
        "raddiff",
        "RadDiff",
        "proposer–ranker agent describing differences between two image sets",
        "medfm.methods.raddiff.cli",
    ),
    Capability(
        "vlm",
        "Radiology VLM",
        "small LLaVA-style report generation / VQA model shared by the methods",
        "medfm.methods.vlm.cli",
    ),
    Capability(
        "card",
        "Model cards",
        "model cards in the radiology foundation-model review's terminology",
        "medfm.core.cards_cli",
    ),
)

GLOBAL: tuple[Capability, ...] = (
    Capability("env", "Environment", "versions, device and installed offline assets", "medfm.core.builtin"),
    Capability("list", "List", "methods, verbs and presets", "medfm.core.builtin"),
    Capability("report", "Report", "re-render report.html of a finished run of any method", "medfm.core.builtin"),
    Capability(
        "demo",
        "Demo",
        "run every available capability on embedded defaults; writes runs/demo/report.html",
        "medfm.demo",
    ),
    Capability(
        "phantom", "Phantoms", "synthetic CT volumes and chest X-rays with ground truth", "medfm.data.phantoms.cli"
    ),
    Capability("data", "Data", "validate manifests; list offline assets", "medfm.data.cli"),
    Capability(
        "models", "Models", "list trained artefacts under a folder with their key facts", "medfm.core.cards_cli"
    ),
    Capability("serve", "Serve", "serve a local model as an OpenAI-compatible endpoint", "medfm.backends.cli"),
)

# Attribute of the group module that holds each group's declaration (modules may declare several groups).
GROUP_ATTR = {
    "env": "ENV",
    "list": "LIST",
    "report": "REPORT",
    "phantom": "PHANTOM",
    "data": "DATA",
    "card": "CARD",
    "models": "MODELS",
    "demo": "GROUP",
    "serve": "SERVE",
}


def all_capabilities() -> tuple[Capability, ...]:
    return METHODS + GLOBAL


def get(name: str) -> Capability | None:
    return next((c for c in all_capabilities() if c.name == name), None)
