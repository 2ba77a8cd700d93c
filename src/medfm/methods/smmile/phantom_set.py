"""An offline SMMILE-style problem set built from the CXR phantoms, with ground truth.

Every problem uses a labelling convention that only its in-context examples reveal, so a model cannot score by
exact match zero-shot even when it perceives the image correctly, and a text-only model can learn the answer
vocabulary from the examples but not which answer the query image needs. Problem kinds (answer format,
cognitive process):

``binary``      "Is there pleural effusion?" answered in a per-problem vocabulary ("Positive." / "Negative.",
                "present" / "absent", "1" / "0", ... and sometimes plain "Yes." / "No.").
``laterality``  side of a present finding in a per-problem format ("Pleural effusion, left.", "L", ...).
``coded``       which of 2-3 findings the image shows, answered with an arbitrary per-problem code
                ("Category B", "Type II", ...): the mapping exists only in the examples (multiple choice).
``numerical``   cardiothoracic ratio to one decimal in a per-problem format ("0.5", "CTR 0.5", "50%").
``reasoning``   laterality whose query side appears in none of the examples ("reasoning classification":
                the format must be generalised; excluded from permutations as in SMMILE++).

Specialities are finding families: cardiac, pleural, pulmonary, devices, musculoskeletal, general (coded).
For non-reasoning problems the query's class always occurs among the examples. On disk
(:func:`write_problem_set`)::

    <out>/problems.jsonl                    SMMILE rows (image = relative PNG path)
    <out>/data/train-00000-of-00001.parquet the same rows in the Hugging Face layout (PNG bytes)
    <out>/images/<image_id>.png             the phantoms (8-bit grayscale)
    <out>/truth.jsonl                       per row: problem_id, order, image_id, kind, finding(s), class
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfm.methods.smmile.data import SmmileRow, write_jsonl, write_parquet

log = logging.getLogger(__name__)

SPECIALITY = {
    "Cardiomegaly": "cardiac",
    "Pleural Effusion": "pleural",
    "Pneumothorax": "pleural",
    "Consolidation": "pulmonary",
    "Atelectasis": "pulmonary",
    "Edema": "pulmonary",
    "Support Devices": "devices",
    "Fracture": "musculoskeletal",
}
BINARY_FINDINGS = tuple(SPECIALITY)
LATERAL_FINDINGS = ("Pleural Effusion", "Pneumothorax", "Consolidation", "Atelectasis")
CODED_FINDINGS = ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Support Devices", "Fracture")
BINARY_VOCABS = (
    ("Yes.", "No."),
    ("Positive.", "Negative."),
    ("present", "absent"),
    ("abnormal", "normal"),
    ("1", "0"),
    ("seen", "not seen"),
    ("Y", "N"),
    ("finding confirmed", "finding excluded"),
)
CODE_SETS = (
    ("Category A", "Category B", "Category C"),
    ("Type I", "Type II", "Type III"),
    ("Group alpha", "Group beta", "Group gamma"),
    ("Pattern X", "Pattern Y", "Pattern Z"),
)
SIDES = ("left", "right", "bilateral")
PREVALENCE = {
    "Cardiomegaly": 0.35,
    "Pleural Effusion": 0.35,
    "Pneumothorax": 0.3,
    "Consolidation": 0.25,
    "Atelectasis": 0.25,
    "Edema": 0.2,
    "Fracture": 0.25,
    "Support Devices": 0.35,
}
KIND_WEIGHTS = {"binary": 0.45, "laterality": 0.2, "coded": 0.15, "numerical": 0.08, "reasoning": 0.12}
N_EXAMPLES = {2: 0.3, 3: 0.3, 4: 0.2, 5: 0.12, 6: 0.08}


def _lateral_format(fmt: int, finding: str, side: str) -> str:
    if fmt == 0:
        return f"{finding}, {side}."
    if fmt == 1:
        return (
            f"Bilateral {finding.lower()}." if side == "bilateral" else f"{side.capitalize()}-sided {finding.lower()}."
        )
    if fmt == 2:
        return {"left": "L", "right": "R", "bilateral": "B"}[side]
    return f"{finding.lower()} ({side})"


def _numeric_format(fmt: int, value: float) -> str:
    return [f"{value:.1f}", f"CTR {value:.1f}", f"{round(value * 100)}%"][fmt]


@dataclass
class PhantomProblemSet:
    """Generated rows (images as PIL images) and one ground-truth record per row."""

    rows: list[SmmileRow]
    truth: list[dict[str, Any]]


def _pid(seed: int, i: int) -> str:
    return str(uuid.UUID(bytes=hashlib.sha256(f"smmile-phantom-{seed}-{i}".encode()).digest()[:16], version=4))


class _Pool:
    """Phantom images indexed by the class they show for each problem kind; images are used once."""

    def __init__(self, n: int, seed: int, size: int):
        from medfm.data.phantoms.cxr import FINDINGS, generate_cxr

        self.batch = generate_cxr(n, seed=seed, size=size, prevalence=PREVALENCE)
        self.fidx = {f: k for k, f in enumerate(FINDINGS)}
        self.used: set[int] = set()

    def label(self, i: int, f: str) -> float:
        return float(self.batch.labels[i, self.fidx[f]])

    def present(self, i: int, f: str) -> bool:
        return bool(self.batch.present[i, self.fidx[f]])

    def candidates(self, kind: str, key: Any, cls: Any) -> list[int]:
        out = []
        for i in range(len(self.batch.records)):
            if i in self.used:
                continue
            rec = self.batch.records[i]
            if kind == "binary":
                ok = self.label(i, key) == 1 if cls == "pos" else not self.present(i, key)
            elif kind in ("laterality", "reasoning"):
                ok = self.label(i, key) == 1 and rec["sides"].get(key) == cls
            elif kind == "coded":
                pos = [f for f in key if self.label(i, f) == 1]
                ok = pos == [cls] and not any(self.present(i, f) for f in key if f != cls)
            else:  # numerical
                ok = round(float(rec["ctr"]), 1) == cls
            if ok:
                out.append(i)
        return out


def make_problem_set(
    n_problems: int = 40, seed: int = 0, size: int = 128, pool_size: int | None = None
) -> PhantomProblemSet:
    """Generate ``n_problems`` problems from CXR phantoms (deterministic for a seed).

    Args:
        n_problems: number of problems.
        seed: seed of the phantoms and of every choice.
        size: image size in pixels (square).
        pool_size: phantoms generated to draw from (default ``max(400, 15 * n_problems)``).

    Returns:
        Rows in SMMILE schema (``image`` = PIL grayscale image, ``extra["image_id"]``) and truth records.
    """
    from PIL import Image

    from medfm.data.phantoms.cxr import to_png_array

    pool = _Pool(pool_size or max(400, 15 * n_problems), seed, size)
    rng = np.random.default_rng(seed + 7919)
    kinds, kw = list(KIND_WEIGHTS), np.array(list(KIND_WEIGHTS.values()))
    ks, kp = list(N_EXAMPLES), np.array(list(N_EXAMPLES.values()))
    rows: list[SmmileRow] = []
    truth: list[dict[str, Any]] = []
    made = attempts = 0
    while made < n_problems and attempts < 50 * n_problems:
        attempts += 1
        kind = kinds[int(rng.choice(len(kinds), p=kw / kw.sum()))]
        k = ks[int(rng.choice(len(ks), p=kp / kp.sum()))]
        for _try in range(20):  # retry the same kind (other finding/classes) so rare kinds keep their share
            plan = _plan(kind, k, rng)
            if plan is None:
                continue
            key, classes, render, question, speciality, fmt_name, cognitive = plan
            picked: list[tuple[int, Any]] = []
            taken: set[int] = set()
            for cls in classes:
                cands = [i for i in pool.candidates(kind, key, cls) if i not in taken]
                if not cands:
                    break
                i = cands[int(rng.integers(len(cands)))]
                taken.add(i)
                picked.append((i, cls))
            if len(picked) == len(classes):
                break
        else:
            continue
        pool.used |= taken
        pid = _pid(seed, made)
        prevalence = (
            np.mean([PREVALENCE.get(f, 0.3) for f in (key if isinstance(key, tuple) else [key])])
            if kind != "numerical"
            else 0.3
        )
        for order, (i, cls) in enumerate(picked):
            rec = pool.batch.records[i]
            img = Image.fromarray(to_png_array(pool.batch.images[i]))
            rows.append(
                SmmileRow(
                    problem_id=pid,
                    order=order,
                    question=question,
                    answer=render(cls),
                    image=img,
                    image_url="",
                    speciality=speciality,
                    flag_answer_format=fmt_name,
                    flag_image_type="X-Ray",
                    flag_cognitive_process=cognitive,
                    flag_rarity="common" if prevalence >= 0.3 else "uncommon",
                    flag_difficulty_llms="hard",
                    extra={"image_id": rec["id"]},
                )
            )
            truth.append(
                {
                    "problem_id": pid,
                    "order": order,
                    "image_id": rec["id"],
                    "kind": kind,
                    "finding": list(key) if isinstance(key, tuple) else key,
                    "class": cls,
                    "answer": render(cls),
                    "is_query": order == len(picked) - 1,
                }
            )
        made += 1
    if made < n_problems:
        log.warning("smmile phantoms: only %d of %d problems could be filled from the pool", made, n_problems)
    return PhantomProblemSet(rows, truth)


def _plan(kind: str, k: int, rng: np.random.Generator) -> tuple[Any, ...] | None:
    """Finding key, the classes of the k examples + query, the answer renderer and the problem's fields."""

    def classes_for(options: list[Any], reasoning: bool = False) -> list[Any]:
        if reasoning:
            q = options[int(rng.integers(len(options)))]
            rest = [o for o in options if o != q]
            ex = [rest[int(rng.integers(len(rest)))] for _ in range(k)]
            ex[: min(k, len(rest))] = rng.permutation(rest)[: min(k, len(rest))].tolist()
            return [*rng.permutation(ex).tolist(), q]
        base = list(rng.permutation(options))[: min(k, len(options))]
        ex = base + [options[int(rng.integers(len(options)))] for _ in range(k - len(base))]
        ex = rng.permutation(ex).tolist()
        q = ex[int(rng.integers(len(ex)))]  # the query's class occurs among the examples
        return [*ex, q]

    if kind == "binary":
        f = BINARY_FINDINGS[int(rng.integers(len(BINARY_FINDINGS)))]
        vocab = BINARY_VOCABS[int(rng.integers(len(BINARY_VOCABS)))]
        question = f"Is there {f.lower()} on this chest radiograph?"
        return (f, classes_for(["pos", "neg"]), lambda c: vocab[0] if c == "pos" else vocab[1], question,
                SPECIALITY[f], "binary", "classification/diagnosis")  # fmt: skip
    if kind in ("laterality", "reasoning"):
        f = LATERAL_FINDINGS[int(rng.integers(len(LATERAL_FINDINGS)))]
        fmt = int(rng.integers(4))
        question = f"On which side is the {f.lower()}?"
        cog = "reasoning classification" if kind == "reasoning" else "classification/diagnosis"
        return (f, classes_for(list(SIDES), reasoning=kind == "reasoning"), lambda c: _lateral_format(fmt, f, c),
                question, SPECIALITY[f], "free response", cog)  # fmt: skip
    if kind == "coded":
        m = 2 + int(rng.integers(2))
        fs = tuple(sorted(rng.choice(CODED_FINDINGS, size=m, replace=False).tolist()))
        codes = CODE_SETS[int(rng.integers(len(CODE_SETS)))]
        mapping = dict(zip(rng.permutation(list(fs)).tolist(), codes))
        if k < m:
            return None
        return (fs, classes_for(list(fs)), lambda c: mapping[c], "Which category does this radiograph belong to?",
                "general", "multiple choice", "classification/diagnosis")  # fmt: skip
    fmt = int(rng.integers(3))
    return (None, classes_for([0.4, 0.5, 0.6]), lambda c: _numeric_format(fmt, c),
            "What is the cardiothoracic ratio?", "cardiac", "numerical", "regression/quantitative")  # fmt: skip


def write_problem_set(ps: PhantomProblemSet, out_dir: str | Path, parquet: bool = True) -> dict[str, Path]:
    """Write images, ``problems.jsonl``, ``truth.jsonl`` and (optionally) the parquet layout under ``out_dir``."""
    import json

    from medfm.core.files import atomic_path, atomic_write_text

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    disk_rows = []
    for r in ps.rows:
        path = out / "images" / f"{r.extra['image_id']}.png"
        if not path.is_file():
            with atomic_path(path) as tmp:
                r.image.save(tmp, format="PNG")
        disk_rows.append(SmmileRow(**{**r.__dict__, "image": path}))
    paths = {"problems": write_jsonl(disk_rows, out / "problems.jsonl")}
    paths["truth"] = atomic_write_text(out / "truth.jsonl", "".join(json.dumps(t) + "\n" for t in ps.truth))
    if parquet:
        paths["parquet"] = write_parquet(disk_rows, out / "data" / "train-00000-of-00001.parquet")
    return paths


def load_truth(path: str | Path) -> dict[tuple[str, int], dict[str, Any]]:
    """``{(problem_id, order): truth record}`` from ``truth.jsonl``."""
    import json

    out = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            t = json.loads(line)
            out[(t["problem_id"], int(t["order"]))] = t
    return out
