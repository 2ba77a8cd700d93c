"""Chest X-ray phantoms: determinism, masks where findings belong, prevalence, spurious feature, reports, CLI."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from medfm.cli import main
from medfm.data.phantoms import cxr
from medfm.data.phantoms.config import CXRPhantomConfig

SAMPLED = cxr.SAMPLED


def test_rle_box_and_cramers_v_hand_values():
    m = np.array([[0, 1, 1], [0, 0, 1]], bool)
    assert cxr.rle_encode(m) == [1, 2, 2, 1]
    assert cxr.rle_encode(~m) == [0, 1, 2, 2, 1]
    assert (cxr.rle_decode(cxr.rle_encode(m), m.shape) == m).all()
    assert cxr.mask_box(m) == [1, 0, 3, 2]
    assert cxr.mask_box(np.zeros((3, 3), bool)) is None
    # 2x2 table n11=30, n10=10, n01=20, n00=40: phi = (30*40-10*20)/sqrt(40*60*50*50) = 1000/2449.49
    a = np.array([1] * 40 + [0] * 60, bool)
    b = np.array([1] * 30 + [0] * 10 + [1] * 20 + [0] * 40, bool)
    assert cxr.cramers_v(a, b) == pytest.approx(1000 / np.sqrt(40 * 60 * 50 * 50))
    assert cxr.spurious_rates(0.2, 0.5) == pytest.approx((0.6, 0.1))


def test_same_seed_identical_bytes_prefix_and_batch_invariance(tmp_path):
    cfg = CXRPhantomConfig(n=30, size=64, seed=3)
    cfg.spurious.label = "Support Devices"
    cxr.write_cxr_dataset(cfg, tmp_path / "a")
    cxr.write_cxr_dataset(cfg, tmp_path / "b")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 33  # 30 PNGs, manifest, annotations, findings.json
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    full = cxr.generate_cxr(30, seed=3, size=64)
    head = cxr.generate_cxr(12, seed=3, size=64, batch_size=5)
    assert np.array_equal(full.images[:12], head.images)
    assert [r["report"] for r in full.records[:12]] == [r["report"] for r in head.records]
    other = cxr.generate_cxr(12, seed=4, size=64)
    assert not np.array_equal(other.images, head.images)


def _only(name: str | None, uncertain: float = 0.0) -> dict:
    prev = {f.replace(" ", "_"): 0.0 for f in SAMPLED}
    if name:
        prev[name.replace(" ", "_")] = 1.0
    return {"prevalence": prev, "uncertain_rate": uncertain}


@pytest.mark.parametrize("uncertain", [0.0, 1.0])
def test_each_finding_is_rendered_inside_its_mask(uncertain):
    n, size = 16, 96
    base = cxr.generate_cxr(n, seed=11, size=size, **_only(None))
    for name in SAMPLED:
        if uncertain and name == "Support Devices":
            continue  # devices are never uncertain
        got = cxr.generate_cxr(n, seed=11, size=size, **_only(name, uncertain))
        k = cxr.FINDINGS.index(name)
        assert got.present[:, k].all()
        assert (got.labels[:, k] == (-1 if uncertain else 1)).all()
        for j in range(n):
            mask = got.masks[j][name]
            assert mask.sum() > 0, (name, j)
            if got.records[j]["view"] != base.records[j]["view"]:
                continue  # view changes heart magnification
            diff = np.abs(got.images[j] - base.images[j])
            near = ndimage.binary_dilation(mask, iterations=3)
            assert diff.sum() > 0.2, (name, j)  # visibly rendered (sum of |change| in [0, 1] units)
            assert diff[near].sum() / diff.sum() > 0.9, (name, j)
            side = got.records[j]["sides"].get(name)
            cx = ndimage.center_of_mass(mask)[1] / size
            if side == "right":
                assert cx < 0.5, (name, j)  # patient's right is the image left
            elif side == "left":
                assert cx > 0.5, (name, j)
        cy = np.mean([ndimage.center_of_mass(got.masks[j][name])[0] / size for j in range(n)])
        if name in ("Pleural Effusion", "Atelectasis"):
            assert cy > 0.55  # basal
        if name == "Pneumothorax":
            assert cy < 0.5  # apical
    cm = cxr.generate_cxr(n, seed=11, size=size, **_only("Cardiomegaly"))
    assert min(r["ctr"] for r in cm.records) > 0.55 > max(r["ctr"] for r in base.records)


def test_prevalence_within_tolerance_of_config():
    cfg = CXRPhantomConfig(size=32, duplicate_rate=0.0)
    cfg.prevalence.Cardiomegaly = 0.5
    batch = cxr.generate_cxr(2500, seed=2, size=32, cfg=cfg)
    prev = cfg.prevalence.as_dict()
    for name in SAMPLED:
        p, rate = prev[name], batch.present[:, cxr.FINDINGS.index(name)].mean()
        assert abs(rate - p) <= 4 * np.sqrt(p * (1 - p) / 2500) + 0.005, (name, rate, p)
    # hierarchy: No Finding exactly when no pathology is present, Lung Lesion = Nodule or Mass
    path = [cxr.FINDINGS.index(f) for f in SAMPLED if f != "Support Devices"]
    nf = batch.labels[:, cxr.FINDINGS.index("No Finding")]
    assert np.array_equal(nf == 1, ~batch.present[:, path].any(1))
    lesion = batch.present[:, [cxr.FINDINGS.index("Nodule"), cxr.FINDINGS.index("Mass")]].any(1)
    assert np.array_equal(batch.present[:, cxr.FINDINGS.index("Lung Lesion")], lesion)
    # near-duplicates: same patient, same labels, slightly different pixels
    dup = cxr.generate_cxr(400, seed=2, size=32, duplicate_rate=0.5)
    pairs = [(i, r) for i, r in enumerate(dup.records) if r["duplicate_of"]]
    assert 0.2 < len(pairs) / 400 < 0.5
    for i, r in pairs[:20]:
        j = int(r["duplicate_of"].split("_")[1])
        assert dup.records[j]["patient_id"] == r["patient_id"] and dup.records[j]["labels"] == r["labels"]
        assert 0 < np.abs(dup.images[i] - dup.images[j]).mean() < 0.1


@pytest.mark.parametrize(
    ("label", "v"), [("Pneumothorax", 0.6), ("Pleural Effusion", 0.3), ("No Finding", 0.9), ("Pneumothorax", 0.0)]
)
def test_spurious_feature_reaches_requested_cramers_v(label, v):
    cfg = CXRPhantomConfig(size=32)
    cfg.prevalence.Pneumothorax = 0.2
    batch = cxr.generate_cxr(3000, seed=7, size=32, cfg=cfg, spurious={"label": label, "cramers_v": v})
    y = batch.labels[:, cxr.FINDINGS.index(label)] == 1
    assert cxr.cramers_v(y, batch.spurious) == pytest.approx(v, abs=0.05)
    box = batch.records[int(np.flatnonzero(batch.spurious)[0])]["spurious_box"] if batch.spurious.any() else None
    if box:
        x0, y0, x1, y1 = box
        on = batch.images[batch.spurious][:, y0:y1, x0:x1].max(axis=(1, 2))
        assert (on == 1.0).all()
        assert all(r["spurious_box"] is None for r in np.array(batch.records)[~batch.spurious])


_KEYS = {
    "Cardiomegaly": r"cardiomegaly|heart|cardiac silhouette",
    "Enlarged Cardiomediastinum": r"mediastin",
    "Edema": r"edema",
    "Consolidation": r"consolidation",
    "Pneumonia": r"pneumonia",
    "Atelectasis": r"atelectasis",
    "Pneumothorax": r"pneumothorax",
    "Pleural Effusion": r"effusion",
    "Pleural Other": r"pleural thickening",
    "Fracture": r"fracture",
    "Support Devices": r"catheter|pacemaker",
    "Nodule": r"nodule",
    "Mass": r"\bmass\b",
}
_HEDGE = r"possible|cannot be excluded|questionable|may represent"
_NEG = r"\bno\b|\bnot\b|negative for|normal"


def _read_report(text: str) -> dict[str, float]:
    """A tiny rule-based labeller (keyword + hedge/negation cue per sentence), independent of the generator."""
    out: dict[str, float] = {}
    for sent in re.split(r"(?<=\.)\s+|\n", text.lower()):
        for name, pat in _KEYS.items():
            if re.search(pat, sent):
                val = -1.0 if re.search(_HEDGE, sent) else 0.0 if re.search(_NEG, sent) else 1.0
                prev = out.get(name)
                out[name] = val if prev is None else max(prev, val) if val != -1 and prev != -1 else -1.0
    return out


def test_reports_agree_with_labels_and_sides():
    batch = cxr.generate_cxr(600, seed=5, size=32, uncertain_rate=0.3)
    phrasings = set()
    for rec in batch.records:
        assert rec["report"].startswith("FINDINGS:") and "\nIMPRESSION:" in rec["report"]
        read = _read_report(rec["report"])
        for name in SAMPLED:
            want = rec["labels"][name]
            assert read.get(name) == (None if want is None else float(want)), (name, want, rec["report"])
        for name, side in rec["sides"].items():
            sent = [s for s in re.split(r"(?<=\.)\s+|\n", rec["report"].lower()) if re.search(_KEYS[name], s)]
            assert any(side in s for s in sent), (name, side, rec["report"])
        phrasings.add(rec["report"].split("IMPRESSION:")[0])
    assert len(phrasings) > 500  # varied phrasing


def test_cli_writes_manifest_annotations_and_pngs(tmp_path):
    out = tmp_path / "cxr"
    rc = main(
        [
            "phantom",
            "cxr",
            "--n",
            "24",
            "--size",
            "64",
            "--bit_depth",
            "16",
            "--output_dir",
            str(out),
            "--prevalence.Pleural_Effusion",
            "0.5",
            "--spurious.label",
            "Pleural Effusion",
            "--spurious.cramers_v",
            "1.0",
        ]
    )
    assert rc == 0
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert len(rows) == 24
    need = ["id", "image", "report", "split", "patient_id", "age", "sex", "view", "site", *cxr.FINDINGS, "spurious"]
    assert list(rows[0].keys()) == need
    anns = [json.loads(line) for line in (out / "annotations.jsonl").read_text().splitlines()]
    assert [a["id"] for a in anns] == [r["id"] for r in rows]
    for row, ann in zip(rows, anns):
        img = Image.open(out / row["image"])
        assert img.size == (64, 64) and img.mode.startswith("I;16")
        assert row["Pleural Effusion"] in {"1", "0", "-1", ""}
        assert row["spurious"] == ("1" if row["Pleural Effusion"] == "1" else "0")  # V = 1
        for f in ann["findings"]:
            mask = cxr.rle_decode(f["mask_rle"], (64, 64))
            assert cxr.mask_box(mask) == f["box"] and row[f["finding"]] in {"1", "-1"}
    assert {r["split"] for r in rows} <= {"train", "valid", "test"}
    assert main(["phantom", "cxr", "--n", "2", "--spurious.label", "Nope", "--output_dir", str(tmp_path / "x")]) == 2
    assert main(["phantom", "cxr", "--n", "5", "--dry_run", "--output_dir", str(tmp_path / "dry")]) == 0
    assert not Path(tmp_path / "dry" / "manifest.csv").exists()


def test_demo_step_writes_report_with_figures(tmp_path):
    from medfm.data.phantoms.demo import run_demo

    outcome = run_demo(tmp_path / "demo", seed=0)
    html = outcome.report.read_text()
    assert html.count("<img") >= 2 and "Cramér" in outcome.summary
    assert (tmp_path / "demo" / "ct" / "dataset.json").is_file()
    assert (tmp_path / "demo" / "cxr" / "manifest.csv").is_file()
