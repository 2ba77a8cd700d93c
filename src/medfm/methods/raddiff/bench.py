"""An offline RadDiffBench: chest X-ray phantom set pairs whose true difference is known.

A pool of phantoms (boosted prevalences, a corner marker planted independently of every finding) is
generated once; each pair draws disjoint A and B images from it by a rule on the ground truth: a finding's
presence (easy), its side, its prevalence shift, a device, a burned-in marker or the view (medium), severity,
bilaterality, small findings, weaker prevalence shifts and sex (breast shadows) (hard). Set sizes differ
within a pair like RadDiffBench's. Written in the RadDiffBench layout (JSONL + difficulty CSV) plus a
``reports.csv`` (path -> report) for the report-based upper bound.

Patient age is not rendered by the phantoms (and not mentioned in their reports), so it cannot be a
visible difference here; sex, which is rendered, is the demographic pair.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

Rule = Callable[[dict[str, Any]], bool]

BOOSTED_PREVALENCE = {
    "Enlarged Cardiomediastinum": 0.15, "Cardiomegaly": 0.25, "Edema": 0.2, "Consolidation": 0.2,
    "Pneumonia": 0.12, "Atelectasis": 0.25, "Pneumothorax": 0.2, "Pleural Effusion": 0.35, "Pleural Other": 0.1,
    "Fracture": 0.12, "Support Devices": 0.3, "Nodule": 0.12, "Mass": 0.08,
}  # fmt: skip


def _pos(f: str) -> Rule:
    return lambda r: r["labels"].get(f) == 1


def _neg(f: str) -> Rule:
    return lambda r: r["labels"].get(f) not in (1, -1)


def _side(f: str, side: str) -> Rule:
    return lambda r: r["labels"].get(f) == 1 and r["sides"].get(f) == side


def _height(r: dict[str, Any], f: str) -> int:
    b = r["boxes"].get(f)
    return 0 if not b else b[3] - b[1]


@dataclass(frozen=True)
class PairSpec:
    """A set pair: ``frac_a`` of A satisfies ``rule_pos`` (the rest ``rule_neg``), ``frac_b`` of B likewise."""

    name: str
    kind: str
    difficulty: int
    gt_a: str
    gt_b: str
    rule_pos: Rule
    rule_neg: Rule
    frac_a: float = 1.0
    frac_b: float = 0.0


def pair_specs(large_cut: int = 0, small_cut: int = 0) -> list[PairSpec]:
    """The 32 pair definitions (cuts: pleural-effusion box heights in pixels for the severity pair)."""
    e = "Pleural Effusion"
    specs = [
        PairSpec("effusion", "prevalence", 1, "pleural effusion", "no pleural effusion", _pos(e), _neg(e)),
        PairSpec("cardiomegaly", "prevalence", 1, "cardiomegaly", "normal heart size", _pos("Cardiomegaly"),
                 _neg("Cardiomegaly")),
        PairSpec("pneumothorax", "prevalence", 1, "pneumothorax", "no pneumothorax", _pos("Pneumothorax"),
                 _neg("Pneumothorax")),
        PairSpec("devices", "device", 1, "support devices", "no support devices", _pos("Support Devices"),
                 _neg("Support Devices")),
        PairSpec("mass", "prevalence", 1, "lung mass", "no lung mass", _pos("Mass"), _neg("Mass")),
        PairSpec("edema", "prevalence", 1, "pulmonary edema", "no pulmonary edema", _pos("Edema"), _neg("Edema")),
        PairSpec("consolidation", "prevalence", 1, "consolidation", "no consolidation", _pos("Consolidation"),
                 _neg("Consolidation")),
        PairSpec("atelectasis", "prevalence", 1, "atelectasis", "no atelectasis", _pos("Atelectasis"),
                 _neg("Atelectasis")),
        PairSpec("mediastinum", "prevalence", 1, "widened mediastinum", "normal mediastinum",
                 _pos("Enlarged Cardiomediastinum"), _neg("Enlarged Cardiomediastinum")),
        PairSpec("effusion_side", "laterality", 2, "left pleural effusion", "right pleural effusion",
                 _side(e, "left"), _side(e, "right")),
        PairSpec("pneumothorax_side", "laterality", 2, "left pneumothorax", "right pneumothorax",
                 _side("Pneumothorax", "left"), _side("Pneumothorax", "right")),
        PairSpec("consolidation_side", "laterality", 2, "left consolidation", "right consolidation",
                 _side("Consolidation", "left"), _side("Consolidation", "right")),
        PairSpec("atelectasis_side", "laterality", 2, "left atelectasis", "right atelectasis",
                 _side("Atelectasis", "left"), _side("Atelectasis", "right")),
        PairSpec("effusion_75_15", "prevalence shift", 2, "pleural effusion", "no pleural effusion", _pos(e),
                 _neg(e), 0.75, 0.15),
        PairSpec("cardiomegaly_75_15", "prevalence shift", 2, "cardiomegaly", "normal heart size",
                 _pos("Cardiomegaly"), _neg("Cardiomegaly"), 0.75, 0.15),
        PairSpec("pneumothorax_75_15", "prevalence shift", 2, "pneumothorax", "no pneumothorax",
                 _pos("Pneumothorax"), _neg("Pneumothorax"), 0.75, 0.15),
        PairSpec("edema_75_15", "prevalence shift", 2, "pulmonary edema", "no pulmonary edema", _pos("Edema"),
                 _neg("Edema"), 0.75, 0.15),
        PairSpec("devices_75_15", "device", 2, "support devices", "no support devices", _pos("Support Devices"),
                 _neg("Support Devices"), 0.75, 0.15),
        PairSpec("marker", "acquisition", 2, "corner marker", "no corner marker", lambda r: bool(r["spurious"]),
                 lambda r: not r["spurious"]),
        PairSpec("ap_view", "acquisition", 2, "portable ap view", "pa view", lambda r: r["view"] == "AP",
                 lambda r: r["view"] == "PA"),
        PairSpec("nodule", "prevalence", 2, "lung nodule", "no lung nodule", _pos("Nodule"), _neg("Nodule")),
        PairSpec("pneumonia", "prevalence", 2, "pneumonia", "no pneumonia", _pos("Pneumonia"), _neg("Pneumonia")),
        PairSpec("effusion_severity", "severity", 3, "large pleural effusion", "small pleural effusion",
                 lambda r: r["labels"].get(e) == 1 and _height(r, e) >= large_cut,
                 lambda r: r["labels"].get(e) in (1, -1) and _height(r, e) <= small_cut),
        PairSpec("effusion_bilateral", "laterality", 3, "bilateral pleural effusion", "unilateral pleural effusion",
                 _side(e, "bilateral"), lambda r: r["labels"].get(e) == 1 and r["sides"].get(e) in ("left", "right")),
        PairSpec("fracture", "prevalence", 3, "rib fracture", "no rib fracture", _pos("Fracture"), _neg("Fracture")),
        PairSpec("pleural_thickening", "prevalence", 3, "pleural thickening", "no pleural thickening",
                 _pos("Pleural Other"), _neg("Pleural Other")),
        PairSpec("subtle_effusion", "severity", 3, "small pleural effusion", "no pleural effusion",
                 lambda r: r["labels"].get(e) == -1, _neg(e)),
        PairSpec("effusion_50_25", "prevalence shift", 3, "pleural effusion", "no pleural effusion", _pos(e),
                 _neg(e), 0.5, 0.25),
        PairSpec("cardiomegaly_50_25", "prevalence shift", 3, "cardiomegaly", "normal heart size",
                 _pos("Cardiomegaly"), _neg("Cardiomegaly"), 0.5, 0.25),
        PairSpec("atelectasis_50_25", "prevalence shift", 3, "atelectasis", "no atelectasis", _pos("Atelectasis"),
                 _neg("Atelectasis"), 0.5, 0.25),
        PairSpec("female", "demographic", 3, "female patient", "male patient", lambda r: r["sex"] == "F",
                 lambda r: r["sex"] == "M"),
        PairSpec("nodule_side", "laterality", 3, "left lung nodule", "right lung nodule", _side("Nodule", "left"),
                 _side("Nodule", "right")),
    ]  # fmt: skip
    return specs


def generate_pool(n: int, seed: int, size: int) -> Any:
    """The phantom pool (a :class:`medfm.data.phantoms.cxr.CXRBatch`) with boosted prevalences and a marker
    planted independently of the findings (Cramér's V 0 with Support Devices, so P(marker) = 0.3)."""
    from medfm.data.phantoms.cxr import generate_cxr

    return generate_cxr(n, seed=seed, size=size, prevalence=dict(BOOSTED_PREVALENCE),
                        spurious={"label": "Support Devices", "cramers_v": 0.0})  # fmt: skip


def select_pairs(records: list[dict[str, Any]], specs: list[PairSpec], set_size: int, seed: int,
                 min_size: int = 6) -> list[dict[str, Any]]:  # fmt: skip
    """Draw A and B indices per spec (disjoint within a pair). B is 0, 50 or 100 % larger than A by turn."""
    rng = np.random.default_rng(seed)
    out = []
    for k, s in enumerate(specs):
        pos = [i for i, r in enumerate(records) if s.rule_pos(r)]
        neg = [i for i, r in enumerate(records) if s.rule_neg(r) and not s.rule_pos(r)]
        rng.shuffle(pos)
        rng.shuffle(neg)
        na, nb = set_size, int(set_size * (1 + 0.5 * (k % 3)))
        need_pos = round(s.frac_a * na) + round(s.frac_b * nb)
        need_neg = na + nb - need_pos
        scale = min(1.0, len(pos) / max(need_pos, 1), len(neg) / max(need_neg, 1))
        na, nb = int(na * scale), int(nb * scale)
        if min(na, nb) < min_size:
            log.warning("pair %s skipped: only %d/%d candidate images", s.name, len(pos), len(neg))
            continue
        pa, pb = round(s.frac_a * na), round(s.frac_b * nb)
        a = pos[:pa] + neg[: na - pa]
        b = pos[pa : pa + pb] + neg[na - pa : na - pa + nb - pb]
        out.append({"spec": s, "a": sorted(a), "b": sorted(b)})
    return out


def build_benchmark(out_dir: str | Path, n_pool: int = 2400, size: int = 64, set_size: int = 40, seed: int = 0,
                    only: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Generate the pool, write images/, raddiffbench.jsonl, difficulty.csv and reports.csv into ``out_dir``.

    Returns a summary: number of pairs and images, per-difficulty counts, file paths.
    """
    import csv
    import io

    from medfm.core.files import atomic_write_text
    from medfm.data.phantoms.cxr import write_png
    from medfm.methods.raddiff.data import write_raddiffbench

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    pool = generate_pool(n_pool, seed, size)
    recs = pool.records
    heights = sorted(_height(r, "Pleural Effusion") for r in recs if r["labels"].get("Pleural Effusion") == 1)
    large_cut = heights[2 * len(heights) // 3] if heights else 0
    small_cut = heights[len(heights) // 3] if heights else 0
    specs = [s for s in pair_specs(large_cut, small_cut) if not only or s.name in only]
    chosen = select_pairs(recs, specs, set_size, seed)
    used = sorted({i for c in chosen for i in c["a"] + c["b"]})
    rel = {i: f"images/{recs[i]['id']}.png" for i in used}
    for i in used:
        write_png(out / rel[i], pool.images[i])
    rows = []
    for c in chosen:
        s: PairSpec = c["spec"]
        rows.append({"set1": s.gt_a, "set2": s.gt_b, "set1_images": [rel[i] for i in c["a"]],
                     "set2_images": [rel[i] for i in c["b"]], "name": s.name, "kind": s.kind,
                     "difficulty": s.difficulty, "frac_a": s.frac_a, "frac_b": s.frac_b})  # fmt: skip
    write_raddiffbench(rows, out / "raddiffbench.jsonl", out / "difficulty.csv")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "report"])
    for i in used:
        w.writerow([rel[i], recs[i]["report"]])
    atomic_write_text(out / "reports.csv", buf.getvalue())
    by_diff = {d: sum(1 for r in rows if r["difficulty"] == d) for d in (1, 2, 3)}
    log.info("RadDiff phantom benchmark: %d pairs (%s) over %d images in %s", len(rows), by_diff, len(used), out)
    return {"pairs": len(rows), "images": len(used), "by_difficulty": by_diff, "jsonl": str(out / "raddiffbench.jsonl"),
            "difficulty_csv": str(out / "difficulty.csv"), "reports_csv": str(out / "reports.csv")}  # fmt: skip


def train_concept_ranker(
    out_dir: str | Path, n: int = 1500, size: int = 64, seed: int = 1, feature_size: int = 24
) -> Path:
    """Train the offline concept ranker on phantoms disjoint from the benchmark pool (another seed) and save it."""
    from medfm.methods.raddiff.concept import ConceptEmbedder

    pool = generate_pool(n, seed, size)
    emb = ConceptEmbedder.fit(pool.images, pool.records, feature_size=feature_size)
    return emb.save(out_dir)
