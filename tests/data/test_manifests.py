"""medfm.data.manifests and ``medfm data validate``: datalist and image–report manifest round trips, every
validation problem on a manifest with planted faults, and the CLI's exit codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from medfm.cli import main
from medfm.core.errors import DataError
from medfm.data import io
from medfm.data.manifests import (
    Datalist,
    ManifestColumns,
    ReportRecord,
    VolumeRecord,
    normalize_split,
    parse_label,
    read_datalist,
    read_report_manifest,
    validate_manifest,
    write_datalist,
    write_report_manifest,
)


def _png(path: Path, seed: int = 0) -> Path:
    return io.save_png(path, np.random.default_rng(seed).random((8, 8)))


def _nifti(path: Path) -> Path:
    return io.save_nifti(path, np.zeros((4, 4, 4), np.float32))


# ----------------------------------------------------------------------------------------------------------------------
# Small parsers


def test_parse_label_and_split_values():
    assert [parse_label(v) for v in ("1", "0", "-1", "1.0", "-1.0", "", None, float("nan"), 1, 0.0)] == [
        1, 0, -1, 1, -1, None, None, None, 1, 0,
    ]  # fmt: skip
    for bad in ("2", "yes", 0.5):
        with pytest.raises(ValueError):
            parse_label(bad)
    assert [normalize_split(s) for s in ("train", "Training", "validation", "val", "TEST", "", None)] == [
        "train", "train", "val", "val", "test", None, None,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="holdout"):
        normalize_split("holdout")


# ----------------------------------------------------------------------------------------------------------------------
# Datalists


def test_datalist_round_trip_relative_paths(tmp_path):
    root = tmp_path / "ds"
    recs = [
        VolumeRecord(_nifti(root / "imagesTr" / "a.nii.gz"), _nifti(root / "labelsTr" / "a.nii.gz"), "a", "train",
                     "p1", {"spacing": [1.0, 1.0, 2.0]}),
        VolumeRecord(_nifti(root / "imagesTr" / "b.nii.gz"), None, "", "val", "p2"),
        VolumeRecord(_nifti(root / "imagesTs" / "c.nii.gz"), split="test"),
    ]  # fmt: skip
    path = write_datalist(root / "dataset.json", recs, name="toy", modality="CT", labels={0: "background", 1: "liver"})
    raw = json.loads(path.read_text())
    assert raw["training"][0]["image"] == "imagesTr/a.nii.gz" and raw["training"][0]["label"] == "labelsTr/a.nii.gz"
    assert raw["labels"] == {"0": "background", "1": "liver"}
    assert len(raw["validation"]) == 1 and len(raw["test"]) == 1
    dl = read_datalist(path)
    assert [r.image for r in dl.records] == [r.image.resolve() for r in recs]
    assert dl.records[0].label == recs[0].label.resolve() and dl.records[1].label is None
    assert [r.id for r in dl.records] == ["a", "b", "c"]
    assert dl.records[0].metadata == {"spacing": [1.0, 1.0, 2.0]} and dl.records[0].patient_id == "p1"
    assert dl.labels == {0: "background", 1: "liver"} and dl.name == "toy" and dl.modality == "CT"
    assert [len(dl.split(s)) for s in ("training", "val", "test")] == [1, 1, 1]
    # Saving the read datalist elsewhere keeps the files it points to.
    moved = Datalist.save(dl, tmp_path / "elsewhere" / "dl.json")
    assert [r.image for r in read_datalist(moved).records] == [r.image for r in dl.records]
    assert validate_manifest(path) == []


def test_decathlon_test_list_of_strings_and_errors(tmp_path):
    _nifti(tmp_path / "imagesTs" / "x.nii.gz")
    (tmp_path / "d.json").write_text(json.dumps({"modality": {"0": "CT"}, "test": ["./imagesTs/x.nii.gz"]}))
    dl = read_datalist(tmp_path / "d.json")
    assert dl.records[0].image == (tmp_path / "imagesTs" / "x.nii.gz").resolve() and dl.records[0].split == "test"
    (tmp_path / "bad.json").write_text('{"training": [{"label": "l.nii.gz"}]}')
    with pytest.raises(DataError, match=r"training\[0\] has no 'image'"):
        read_datalist(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text('{"training": [')
    with pytest.raises(DataError, match="not valid JSON"):
        read_datalist(tmp_path / "broken.json")
    (tmp_path / "nolists.json").write_text('{"name": "x"}')
    with pytest.raises(DataError, match="keys found: name"):
        read_datalist(tmp_path / "nolists.json")


def test_datalist_validation_finds_every_problem(tmp_path):
    _nifti(tmp_path / "a.nii.gz")
    _nifti(tmp_path / "b.nii.gz")
    cut = _nifti(tmp_path / "cut.nii.gz")
    cut.write_bytes(cut.read_bytes()[:40])
    data = {
        "labels": {"0": "background", "x": "??"},
        "training": [{"image": "a.nii.gz", "id": "a", "patient_id": "p1"},
                     {"image": "missing.nii.gz", "id": "m"},
                     {"image": "cut.nii.gz", "id": "a"}],
        "validation": [{"image": "b.nii.gz", "id": "b", "patient_id": "p1"}, {"label": "b.nii.gz"}],
    }  # fmt: skip
    (tmp_path / "dl.json").write_text(json.dumps(data))
    problems = validate_manifest(tmp_path / "dl.json")
    kinds = sorted(p.kind for p in problems)
    assert kinds == sorted(["bad_value", "missing_file", "unreadable_image", "duplicate_id", "patient_leakage",
                            "missing_column"])  # fmt: skip
    text = "\n".join(map(str, problems))
    assert "missing.nii.gz" in text and "cut.nii.gz" in text and "'p1'" in text and "train, val" in text


# ----------------------------------------------------------------------------------------------------------------------
# Image–report manifests


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".tsv"])
def test_report_manifest_round_trip(tmp_path, suffix):
    imgs = [_png(tmp_path / "img" / f"{i}.png", i) for i in range(3)]
    recs = [
        ReportRecord("s1", [imgs[0], imgs[1]], "Heart is enlarged.\nSmall left effusion.", "train", "p1",
                     {"Cardiomegaly": 1, "Pleural Effusion": -1, "Pneumothorax": None}, {"view": "PA", "age": 71}),
        ReportRecord("s2", [imgs[2]], 'No acute findings, "clear" lungs; no effusion.', "test", "p2",
                     {"Cardiomegaly": 0, "Pleural Effusion": 0, "Pneumothorax": 0}, {"view": "AP", "age": 40}),
    ]  # fmt: skip
    path = write_report_manifest(tmp_path / f"m{suffix}", recs)
    back = read_report_manifest(path)
    assert [r.id for r in back] == ["s1", "s2"]
    assert back[0].images == [p.resolve() for p in imgs[:2]] and back[0].image == imgs[0].resolve()
    assert back[0].report == recs[0].report and back[1].report == recs[1].report
    assert [r.split for r in back] == ["train", "test"] and [r.patient_id for r in back] == ["p1", "p2"]
    assert back[0].labels == recs[0].labels and back[1].labels == recs[1].labels
    assert str(back[0].metadata["view"]) == "PA" and str(back[1].metadata["age"]) == "40"
    text = path.read_text()
    assert str(tmp_path) not in text, "image paths must be written relative to the manifest"
    assert validate_manifest(path) == []


def test_configurable_columns_and_jsonl_lists(tmp_path):
    _png(tmp_path / "a.png")
    rows = [{"study": "x1", "files": ["a.png"], "text": "Normal.", "fold": "training", "pid": "q",
             "Edema": 0, "age": 50}]  # fmt: skip
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cols = ManifestColumns(id="study", image="files", report="text", split="fold", patient_id="pid")
    (rec,) = read_report_manifest(tmp_path / "m.jsonl", cols)
    assert rec.id == "x1" and rec.images == [(tmp_path / "a.png").resolve()] and rec.split == "train"
    assert rec.labels == {"Edema": 0} and rec.metadata == {"age": 50}  # age is not a 1/0/-1 column
    assert validate_manifest(tmp_path / "m.jsonl", cols) == []
    with pytest.raises(DataError, match="missing required column"):
        read_report_manifest(tmp_path / "m.jsonl")


def test_read_errors_name_row_and_columns(tmp_path):
    (tmp_path / "nocol.csv").write_text("id,path,text\n1,a.png,hi\n")
    with pytest.raises(DataError, match=re.escape("missing required column(s) image, report; columns found: id, "
                                                  "path, text")):  # fmt: skip
        read_report_manifest(tmp_path / "nocol.csv")
    (tmp_path / "badlabel.csv").write_text("id,image,report,Cardiomegaly\n1,,ok,1\n2,,ok,2\n")
    cols = ManifestColumns(labels=("Cardiomegaly",))
    with pytest.raises(DataError, match=r"line 3: column 'Cardiomegaly'"):
        read_report_manifest(tmp_path / "badlabel.csv", cols)
    (tmp_path / "badsplit.jsonl").write_text('{"id": "1", "image": "", "report": "x", "split": "holdout"}\n')
    with pytest.raises(DataError, match="line 1: unknown split 'holdout'"):
        read_report_manifest(tmp_path / "badsplit.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"id": "1"}\n{"id": \n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        read_report_manifest(tmp_path / "broken.jsonl")
    (tmp_path / "ragged.csv").write_text("id,image,report\n1,a.png,x,extra\n")
    with pytest.raises(DataError, match="line 2 has more cells"):
        read_report_manifest(tmp_path / "ragged.csv")
    with pytest.raises(DataError, match="unknown manifest format"):
        validate_manifest(tmp_path / "m.parquet")
    with pytest.raises(DataError, match="does not exist"):
        validate_manifest(tmp_path / "absent.csv")


def _faulty_manifest(tmp_path: Path) -> Path:
    """A manifest with one instance of each problem kind (and two clean rows)."""
    _png(tmp_path / "ok1.png", 1)
    _png(tmp_path / "ok2.png", 2)
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    rows = [
        "id,image,report,split,patient_id,Cardiomegaly",
        "a,ok1.png,Normal heart.,train,p1,0",
        "b,ok2.png,Big heart.,val,p2,1",
        "c,missing.png,Something.,train,p3,",
        "d,garbage.png,Something else.,train,p4,-1",
        "a,ok1.png,Duplicate id.,train,p5,0",
        "e,ok2.png,Leaks.,test,p1,0",
        "f,ok1.png,,train,p6,0",
        "g,ok1.png,Bad label.,train,p7,5",
        "h,ok1.png,Bad split.,holdout,p8,0",
    ]
    path = tmp_path / "faulty.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_validate_reports_every_problem(tmp_path):
    path = _faulty_manifest(tmp_path)
    problems = validate_manifest(path, ManifestColumns(labels=("Cardiomegaly",)))
    by_kind: dict[str, list[str]] = {}
    for p in problems:
        by_kind.setdefault(p.kind, []).append(p.message)
    assert set(by_kind) == {"missing_file", "unreadable_image", "duplicate_id", "patient_leakage", "empty_report",
                            "bad_value"}  # fmt: skip
    assert len(by_kind["missing_file"]) == 1 and "missing.png" in by_kind["missing_file"][0]
    assert "line 4" in by_kind["missing_file"][0]  # header is line 1
    assert len(by_kind["unreadable_image"]) == 1 and "garbage.png" in by_kind["unreadable_image"][0]
    assert len(by_kind["duplicate_id"]) == 1 and "'a'" in by_kind["duplicate_id"][0]
    assert by_kind["patient_leakage"] == ["patient 'p1' appears in splits train, test"]
    assert len(by_kind["empty_report"]) == 1 and "line 8" in by_kind["empty_report"][0]
    assert len(by_kind["bad_value"]) == 2  # label 5 and split 'holdout'
    # Without opening images, the garbage file is not detected (opt-out works).
    no_open = validate_manifest(path, ManifestColumns(labels=("Cardiomegaly",)), check_images=False)
    assert "unreadable_image" not in {p.kind for p in no_open} and len(no_open) == len(problems) - 1


def test_validate_missing_columns_lists_found(tmp_path):
    (tmp_path / "m.csv").write_text("identifier,img,findings\nx,a.png,ok\n")
    (problem, *_rest) = validate_manifest(tmp_path / "m.csv", check_images=False)
    assert problem.kind == "missing_column"
    assert "image, report" in problem.message and "columns found: identifier, img, findings" in problem.message


def test_readme_manifest_columns_without_id_read_everywhere(tmp_path):
    """The README's contract: image, report, split, patient_id; an id is generated when the file has none."""
    from medfm.data.manifests import read_report_manifest

    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "m.csv").write_text(
        "image,report,split,patient_id\na.png,No effusion.,train,p1\na.png,Edema.,test,p2\n"
    )
    assert validate_manifest(tmp_path / "m.csv", check_images=False) == []
    recs = read_report_manifest(tmp_path / "m.csv")
    assert [r.id for r in recs] == ["0", "1"] and recs[1].split == "test" and recs[0].patient_id == "p1"


def test_raddiff_group_table_takes_image_and_the_originals_path_column(tmp_path):
    from medfm.methods.raddiff.data import load_group_table

    for col in ("image", "path"):
        (tmp_path / f"{col}.csv").write_text(f"{col},group\na.png,A\nb.png,B\nc.png,A\n")
        pair = load_group_table(tmp_path / f"{col}.csv", None, None)
        assert [p.path.name for p in pair.set_a] == ["a.png", "c.png"] and pair.set_b[0].path.name == "b.png"


# ----------------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_validate_exit_codes(tmp_path, capsys):
    bad = _faulty_manifest(tmp_path)
    assert main(["data", "validate", str(bad), "--columns.labels", "Cardiomegaly"]) == 3
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 7 + 1  # seven problems, then the summary line
    assert out[-1].startswith(f"{bad}: 7 problem(s)")
    assert any("[patient_leakage]" in line for line in out)
    # --check_images false: files are only checked to exist, so the garbage PNG is no longer reported.
    assert main(["data", "validate", str(bad), "--columns.labels", "Cardiomegaly", "--check_images", "false"]) == 3
    out = capsys.readouterr().out
    assert "unreadable_image" not in out and "6 problem(s)" in out
    good = write_report_manifest(tmp_path / "good.jsonl", [
        ReportRecord("a", [tmp_path / "ok1.png"], "Normal.", "train", "p1", {"Edema": 0}),
        ReportRecord("b", [tmp_path / "ok2.png"], "Edema.", "val", "p2", {"Edema": 1}),
    ])  # fmt: skip
    assert main(["data", "validate", str(good)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"{good}: OK, 2 item(s) (train 1, val 1), no problems found"]
    # Missing manifest: one error line, exit 3 (DataError).
    assert main(["data", "validate", str(tmp_path / "nope.csv")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.csv" in err[0] and "does not exist" in err[0]
    # Renamed columns through the CLI.
    (tmp_path / "renamed.csv").write_text("sid,path,text\nx,ok1.png,Fine.\n")
    argv = ["data", "validate", str(tmp_path / "renamed.csv"), "--columns.id", "sid", "--columns.image", "path",
            "--columns.report", "text"]  # fmt: skip
    assert main(argv) == 0
    assert main(["data", "validate", str(tmp_path / "renamed.csv")]) == 3
    assert "columns found: sid, path, text" in capsys.readouterr().out


def test_validate_accepts_a_datalist_of_dicom_series_folders(tmp_path):
    """`medfm data validate` follows the contract the verbs read: a series folder wherever a NIfTI file may be."""
    from tests.data.test_io import make_series

    series = make_series(tmp_path / "case1")
    (series / "export.txt").write_text("notes")  # stray file: skipped with a warning, as the verbs do
    (tmp_path / "dl.json").write_text('{"training": [{"image": "case1"}]}')
    assert validate_manifest(tmp_path / "dl.json", check_images=True) == []
    (tmp_path / "bad.json").write_text('{"training": [{"image": "missing_series"}]}')
    assert [p.kind for p in validate_manifest(tmp_path / "bad.json")] == ["missing_file"]
