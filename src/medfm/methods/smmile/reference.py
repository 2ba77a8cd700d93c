"""Reference models for the phantom problem set (scripted backends with known behaviour).

``oracle_icl_backend``: perfect perception (reads each image's ground-truth class from ``truth.jsonl``) plus
in-context learning of the labelling convention: it answers the query with the answer an in-context example of
the same class had, or a default vocabulary ("Yes."/"No.", "left", "0.5") when no example shows that class
(always so zero-shot). It is the harness's upper bound: ICL must lift it from near 0 to near 100 % EM.

``recency_backend``: answers with the last in-context example's answer (a pure recency-biased copier).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medfm.backends.base import GenerationRequest, image_digest
from medfm.backends.scripted import ScriptedBackend
from medfm.methods.smmile.data import Problem

DEFAULT_VOCAB = {"pos": "Yes.", "neg": "No.", "left": "left", "right": "right", "bilateral": "bilateral"}


def image_classes(problems: Sequence[Problem], truth: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    """``{image content digest: ground-truth class}`` for every row of ``problems``."""
    out = {}
    for p in problems:
        for r in p.rows:
            t = truth.get((p.problem_id, r.order))
            if t is not None and r.image is not None:
                out[image_digest(r.image)] = t["class"]
    return out


def oracle_icl_backend(problems: Sequence[Problem], truth: dict[tuple[str, int], dict[str, Any]]) -> ScriptedBackend:
    """The perfect-perception in-context learner (see module docstring)."""
    classes = image_classes(problems, truth)

    def answer(req: GenerationRequest) -> str:
        msgs = req.messages
        query = msgs[-1]
        if not query.images:
            return "unknown"
        qc = classes.get(image_digest(query.images[0]))
        shown: dict[Any, str] = {}
        for i, m in enumerate(msgs[:-1]):
            if m.role == "user" and m.images and i + 1 < len(msgs) and msgs[i + 1].role != "user":
                shown[classes.get(image_digest(m.images[0]))] = msgs[i + 1].content
        if qc in shown:
            return shown[qc]
        return DEFAULT_VOCAB.get(qc, str(qc)) if isinstance(qc, str) else f"{qc:.1f}"

    return ScriptedBackend(answer, model="oracle-icl")


def recency_backend() -> ScriptedBackend:
    """Answers with the last in-context answer (``"unknown"`` zero-shot)."""

    def answer(req: GenerationRequest) -> str:
        msgs = req.messages
        answers = [msgs[i + 1].content for i in range(len(msgs) - 2) if msgs[i].role == "user"]
        return answers[-1] if answers else "unknown"

    return ScriptedBackend(answer, model="recency-copier")
