"""CT phantoms: determinism, anatomy/label/HU agreement, pathologies, prevalence, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from medfm.cli import main
from medfm.data.io import load_nifti
from medfm.data.phantoms import ct3d
from medfm.data.phantoms.config import CTPhantomConfig

SMALL = {"shape": [40, 40, 40], "spacing": [9.6, 9.6, 15.6]}


def _cfg(**kw) -> CTPhantomConfig:
    cfg = CTPhantomConfig(**{k: v for k, v in kw.items() if k != "pathology"})
    for k, v in kw.get("pathology", {}).items():
        setattr(cfg.pathology, k, v)
    return cfg


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_identical_bytes_and_patient_independent_of_n(tmp_path):
    a = ct3d.write_ct_dataset(_cfg(n=2, seed=5, **SMALL), tmp_path / "a")
    ct3d.write_ct_dataset(_cfg(n=2, seed=5, **SMALL), tmp_path / "b")
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa.keys() == fb.keys() and len(fa) == 6
    assert fa == fb
    ct3d.write_ct_dataset(_cfg(n=1, seed=5, **SMALL), tmp_path / "c")
    fc = _files(tmp_path / "c")
    assert fc["imagesTr/ct_0000.nii.gz"] == fa["imagesTr/ct_0000.nii.gz"]  # patient 0 does not depend on n
    ct3d.write_ct_dataset(_cfg(n=1, seed=6, **SMALL), tmp_path / "d")
    assert _files(tmp_path / "d")["imagesTr/ct_0000.nii.gz"] != fa["imagesTr/ct_0000.nii.gz"]
    assert a["numTraining"] == 2


def test_structures_hu_and_layout_match_labels():
    p = ct3d.generate_ct_patient(_cfg(seed=1), 0)
    assert p.image.dtype == np.int16 and p.label.dtype == np.uint8 and p.image.shape == (96, 96, 96)
    normal = {n for i, n in ct3d.LABELS.items() if i and n not in {v[0] for v in ct3d.PATHOLOGIES.values()}}
    present = {ct3d.LABELS[i] for i in np.unique(p.label) if i}
    assert len(normal & present) >= 30, sorted(normal - present)
    checked = 0
    for lid, name in ct3d.LABELS.items():
        inner = ndimage.binary_erosion(p.label == lid)
        if inner.sum() < 20:
            continue
        lo, hi = ct3d.hu_range(name)
        mean = float(p.image[inner].mean())
        assert lo <= mean <= hi, (name, mean, lo, hi)
        checked += 1
    assert checked >= 25
    # anatomy where it belongs: +x is the patient's right, +z superior
    com = {
        n: ndimage.center_of_mass(p.label == ct3d.LABEL_IDS[n])
        for n in ("liver", "spleen", "lung_right", "lung_left", "urinary_bladder", "heart_myocardium")
    }
    assert com["liver"][0] > 48 > com["spleen"][0]
    assert com["lung_right"][0] > 48 > com["lung_left"][0]
    assert com["lung_right"][2] > com["heart_myocardium"][2] > com["liver"][2] > com["urinary_bladder"][2]


def test_pathologies_are_painted_where_recorded():
    cfg = _cfg(seed=3, pathology={"tumour": 1.0, "cyst": 1.0, "nodule": 1.0, "effusion": 1.0}, **SMALL)
    cfg.shape, cfg.spacing = [64, 64, 64], [6.0, 6.0, 9.75]
    p = ct3d.generate_ct_patient(cfg, 0)
    assert all(p.metadata["present"].values())
    for les in p.metadata["pathologies"]:
        lid = ct3d.LABEL_IDS[les["label"]]
        assert les["voxels"] > 0 and (p.label == lid).sum() >= les["voxels"]
        if "center_voxel" in les:  # grows inside its organ: the lesion's neighbourhood is the organ or itself
            ring = ndimage.binary_dilation(p.label == lid, iterations=1) & (p.label != lid)
            organs = {ct3d.LABEL_IDS[o] for o in ct3d.PATHOLOGIES[les["type"]][1]}
            assert np.isin(p.label[ring], list(organs)).mean() > 0.3
    tum, liver = p.image[p.label == ct3d.LABEL_IDS["liver_tumour"]], p.image[p.label == ct3d.LABEL_IDS["liver"]]
    assert liver.mean() - tum.mean() > 30  # hypo-attenuating
    none = ct3d.generate_ct_patient(_cfg(seed=3, pathology=dict.fromkeys(ct3d.PATHOLOGIES, 0.0), **SMALL), 0)
    assert not any(none.metadata["present"].values())
    assert none.label.max() < ct3d.LABEL_IDS["liver_tumour"]


def test_pathology_prevalence_within_tolerance():
    cfg = _cfg(
        seed=0,
        pathology={"tumour": 0.5, "cyst": 0.2, "nodule": 0.8, "effusion": 0.0},
        shape=[32, 32, 32],
        spacing=[12.0, 12.0, 19.5],
    )
    n = 60
    present = [ct3d.generate_ct_patient(cfg, i).metadata["present"] for i in range(n)]
    for kind, p in (("tumour", 0.5), ("cyst", 0.2), ("nodule", 0.8), ("effusion", 0.0)):
        rate = np.mean([d[kind] for d in present])
        assert abs(rate - p) <= 4 * np.sqrt(p * (1 - p) / n) + 0.05, (kind, rate, p)


def test_cli_writes_decathlon_datalist(tmp_path):
    out = tmp_path / "ct"
    rc = main(
        [
            "phantom",
            "ct",
            "--n",
            "2",
            "--shape",
            "32,32,32",
            "--spacing",
            "12,12,19.5",
            "--pathology.tumour",
            "1",
            "--output_dir",
            str(out),
        ]
    )
    assert rc == 0
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["modality"] == {"0": "CT"} and ds["numTraining"] == 2 and ds["labels"]["0"] == "background"
    assert len(ds["labels"]) == len(ct3d.LABELS) >= 31
    item = ds["training"][1]
    assert set(item) >= {"image", "label", "id", "patient_id", "metadata"}
    img, lab = load_nifti(out / item["image"]), load_nifti(out / item["label"])
    assert img.array.dtype == np.int16 and lab.array.dtype == np.uint8
    assert img.spacing == pytest.approx((12, 12, 19.5)) and img.array.shape == (32, 32, 32)
    assert item["metadata"]["present"]["tumour"] == bool((lab.array == ct3d.LABEL_IDS["liver_tumour"]).any())
    assert (out / "config.yaml").is_file() and (out / "labels.json").is_file()
    assert main(["phantom", "ct", "--shape", "32,32", "--output_dir", str(tmp_path / "bad")]) == 2
