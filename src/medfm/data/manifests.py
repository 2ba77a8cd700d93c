"""Dataset manifests: Decathlon-style JSON datalists (3D) and CSV/JSONL image–report manifests.

Datalist (3D segmentation / pretraining), the Medical Segmentation Decathlon's ``dataset.json`` layout::

    {"name": "...", "modality": "CT" | {"0": "CT"}, "labels": {"0": "background", "1": "liver", ...},
     "training": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz", "id": "a",
                   "patient_id": "p1", "metadata": {...}}, ...],
     "validation": [...], "test": [{"image": ...} | "imagesTs/b.nii.gz", ...]}

Image–report manifest (CLIP pretraining, report generation, classifiers), CSV or JSONL with columns
``id``, ``image`` (one path, several joined by ``;``, or blank for text-only rows; a JSON list in JSONL),
``report``, ``split`` (train/val/test), ``patient_id`` and optional label columns such as CheXpert's
``Cardiomegaly`` or ``Pleural Effusion`` with values 1 = present, 0 = absent, -1 = uncertain, blank = not
mentioned. Column names are configurable (:class:`ManifestColumns`). Other columns are kept as metadata.

Paths inside a manifest are relative to the manifest's folder (absolute paths are kept as they are);
readers return absolute paths, writers write relative ones, atomically.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfm.core.errors import DataError
from medfm.core.files import atomic_write_text

log = logging.getLogger(__name__)

#: CheXpert's 14 observations (Irvin et al., 2019), the default label vocabulary.
CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
)  # fmt: skip

#: Canonical split names and the spellings accepted for them.
SPLITS: tuple[str, ...] = ("train", "val", "test")
_SPLIT_ALIASES = {
    "train": "train", "training": "train", "tr": "train",
    "val": "val", "valid": "val", "validation": "val", "validate": "val", "dev": "val",
    "test": "test", "testing": "test", "ts": "test",
}  # fmt: skip
_DATALIST_SPLITS = {"training": "train", "validation": "val", "test": "test"}

#: Manifests with at most this many image files are opened during validation unless told otherwise.
AUTO_CHECK_IMAGES_MAX = 200


def normalize_split(value: Any) -> str | None:
    """``"training"`` -> ``"train"`` etc.; blank -> None; unknown values raise ValueError."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    key = str(value).strip().lower()
    if key not in _SPLIT_ALIASES:
        raise ValueError(f"unknown split {value!r}; expected one of {', '.join(SPLITS)}")
    return _SPLIT_ALIASES[key]


def parse_label(value: Any) -> int | None:
    """A label cell: 1 present, 0 absent, -1 uncertain, blank/None/NaN not mentioned. Others raise ValueError."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        if isinstance(value, float) and math.isnan(value):
            return None
        if value in (1, 0, -1):
            return int(value)
        raise ValueError(f"label value {value!r} is not 1, 0, -1 or blank")
    text = str(value).strip()
    if not text or text.lower() in {"nan", "none", "null"}:
        return None
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"label value {value!r} is not 1, 0, -1 or blank") from None
    if number not in (1.0, 0.0, -1.0):
        raise ValueError(f"label value {value!r} is not 1, 0, -1 or blank")
    return int(number)


def _resolve(base: Path, rel: str) -> Path:
    p = Path(os.path.expanduser(str(rel)))
    return p if p.is_absolute() else (base / p).resolve()


def _relative(base: Path, path: str | Path) -> str:
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return Path(os.path.relpath(p, base.resolve())).as_posix()
    except ValueError:  # different drive on Windows
        return p.as_posix()


# ----------------------------------------------------------------------------------------------------------------------
# Decathlon-style datalists


@dataclass
class VolumeRecord:
    """One 3D item of a datalist.

    Attributes:
        image: absolute path of the image (NIfTI or DICOM folder).
        label: absolute path of the label map, or None.
        id: item id (defaults to the image file name without its suffixes).
        split: ``"train"``, ``"val"`` or ``"test"``.
        patient_id: patient the image belongs to (used for leakage checks), or None.
        metadata: free-form facts (spacing, site, pathology, ...).
    """

    image: Path
    label: Path | None = None
    id: str = ""
    split: str = "train"
    patient_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image = Path(self.image)
        self.label = Path(self.label) if self.label is not None else None
        if not self.id:
            self.id = _stem(self.image)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".npy", ".npz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass
class Datalist:
    """A Decathlon-style dataset description. ``labels`` maps label value -> structure name."""

    records: list[VolumeRecord]
    name: str = ""
    modality: Any = ""
    labels: dict[int, str] = field(default_factory=dict)
    description: str = ""
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> list[VolumeRecord]:
        """Records of one split (``train``/``training``, ``val``/``validation``, ``test``)."""
        key = normalize_split(name)
        return [r for r in self.records if r.split == key]

    def save(self, path: str | Path) -> Path:
        return write_datalist(path, self.records, name=self.name, modality=self.modality, labels=self.labels,
                              description=self.description, extra=self.extra)  # fmt: skip


def read_datalist(path: str | Path) -> Datalist:
    """Read a Decathlon-style JSON datalist; paths become absolute (relative to the file's folder).

    Raises:
        DataError: missing file, invalid JSON, or an entry without ``image``, naming the file and entry.
    """
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: a datalist must be a JSON object with 'training'/'validation'/'test' lists")
    base = path.parent.resolve()
    records: list[VolumeRecord] = []
    present = [k for k in _DATALIST_SPLITS if k in data]
    if not present:
        raise DataError(f"{path}: no 'training', 'validation' or 'test' list; keys found: {', '.join(data) or 'none'}")
    for key in present:
        entries = data[key]
        if not isinstance(entries, list):
            raise DataError(f"{path}: '{key}' must be a list, got {type(entries).__name__}")
        for i, entry in enumerate(entries):
            if isinstance(entry, str):
                entry = {"image": entry}
            if not isinstance(entry, dict) or not entry.get("image"):
                raise DataError(f"{path}: {key}[{i}] has no 'image' (expected {{'image': path, 'label': path}})")
            image = entry["image"]
            if isinstance(image, list):  # multi-channel entries: keep the first, the rest as metadata
                image = image[0]
            meta = entry.get("metadata") or {}
            if not isinstance(meta, dict):
                raise DataError(f"{path}: {key}[{i}] 'metadata' must be an object")
            known = {"image", "label", "id", "patient_id", "metadata"}
            meta = {**{k: v for k, v in entry.items() if k not in known}, **meta}
            records.append(VolumeRecord(
                image=_resolve(base, image),
                label=_resolve(base, entry["label"]) if entry.get("label") else None,
                id=str(entry.get("id") or ""),
                split=_DATALIST_SPLITS[key],
                patient_id=str(entry["patient_id"]) if entry.get("patient_id") not in (None, "") else None,
                metadata=meta,
            ))  # fmt: skip
    labels: dict[int, str] = {}
    for k, v in (data.get("labels") or {}).items():
        try:
            labels[int(k)] = str(v)
        except (TypeError, ValueError):
            raise DataError(f"{path}: label key {k!r} is not an integer") from None
    known_top = {"name", "modality", "labels", "description", *_DATALIST_SPLITS}
    extra = {k: v for k, v in data.items() if k not in known_top}
    return Datalist(records, str(data.get("name", "")), data.get("modality", ""), labels,
                    str(data.get("description", "")), path, extra)  # fmt: skip


def write_datalist(
    path: str | Path,
    records: Iterable[VolumeRecord],
    *,
    name: str = "",
    modality: Any = "",
    labels: dict[int, str] | None = None,
    description: str = "",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a Decathlon-style JSON datalist atomically, with paths relative to its folder.

    Args:
        path: destination ``.json``.
        records: items; their ``split`` decides the list (train -> training, val -> validation, test -> test).
        name, modality, description: dataset facts.
        labels: label value -> structure name (``{0: "background", 1: "liver"}``).
        extra: more top-level keys (e.g. ``"numTraining"``, ``"tensorImageSize"``).
    """
    path = Path(path)
    base = path.parent
    base.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"name": name, "description": description, "modality": modality,
                           "labels": {str(k): v for k, v in sorted((labels or {}).items())}}  # fmt: skip
    out.update(extra or {})
    lists: dict[str, list[dict[str, Any]]] = {"training": [], "validation": [], "test": []}
    back = {v: k for k, v in _DATALIST_SPLITS.items()}
    for rec in records:
        split = normalize_split(rec.split) or "train"
        entry: dict[str, Any] = {"id": rec.id, "image": _relative(base, rec.image)}
        if rec.label is not None:
            entry["label"] = _relative(base, rec.label)
        if rec.patient_id is not None:
            entry["patient_id"] = rec.patient_id
        if rec.metadata:
            entry["metadata"] = rec.metadata
        lists[back[split]].append(entry)
    out.update(lists)
    from medfm.core.files import _json_safe

    atomic_write_text(path, json.dumps(_json_safe(out), indent=2, allow_nan=False) + "\n")
    return path


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: manifest file does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


# ----------------------------------------------------------------------------------------------------------------------
# Image–report manifests


@dataclass(frozen=True)
class ManifestColumns:
    """Column names of an image–report manifest.

    Attributes:
        id, image, report, split, patient_id: the names of those columns in the file.
        labels: label columns; None detects them: CheXpert names present in the file plus any other column
            whose non-blank values are all 1, 0 or -1.
        required: which of the roles above must be present as columns.
        image_separator: separator of several image paths in one cell.
    """

    id: str = "id"
    image: str = "image"
    report: str = "report"
    split: str = "split"
    patient_id: str = "patient_id"
    labels: tuple[str, ...] | None = None
    required: tuple[str, ...] = ("image", "report")
    image_separator: str = ";"

    def role_names(self) -> dict[str, str]:
        return {"id": self.id, "image": self.image, "report": self.report, "split": self.split,
                "patient_id": self.patient_id}  # fmt: skip


@dataclass
class ReportRecord:
    """One row of an image–report manifest.

    Attributes:
        id: row id (the 0-based row number when the file has no id column or the cell is empty).
        images: absolute image paths (empty for text-only rows).
        report: the report text.
        split: ``"train"``, ``"val"``, ``"test"`` or None.
        patient_id: patient id or None.
        labels: label name -> 1 present, 0 absent, -1 uncertain, None not mentioned.
        metadata: every other column, as read.
    """

    id: str
    images: list[Path] = field(default_factory=list)
    report: str = ""
    split: str | None = None
    patient_id: str | None = None
    labels: dict[str, int | None] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def image(self) -> Path | None:
        """The first image, or None."""
        return self.images[0] if self.images else None


def manifest_format(path: str | Path) -> str:
    """``"csv"``, ``"jsonl"`` or ``"datalist"`` (``.json``) from the suffix; DataError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "datalist"
    raise DataError(f"{path}: unknown manifest format '{suffix}'; expected .csv, .tsv, .jsonl or .json (datalist)")


def read_table(path: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Read a CSV/TSV/JSONL manifest as (columns in file order, rows). Raises DataError naming the file/line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest file does not exist")
    fmt = manifest_format(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if fmt == "csv":
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
            rows = list(reader)
        except csv.Error as exc:
            raise DataError(f"{path}: malformed CSV ({exc})") from None
        columns = list(reader.fieldnames or [])
        for i, row in enumerate(rows, start=2):
            if None in row:
                raise DataError(f"{path}: line {i} has more cells than the header's {len(columns)} columns")
        return columns, rows
    if fmt == "jsonl":
        columns: list[str] = []
        seen: set[str] = set()
        rows = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {i} is not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}: line {i} is not a JSON object")
            for k in obj:
                if k not in seen:
                    seen.add(k)
                    columns.append(k)
            rows.append(obj)
        return columns, rows
    raise DataError(f"{path}: a .json datalist is not a table; use read_datalist()")


def _detect_label_columns(columns: Sequence[str], rows: list[dict[str, Any]], cols: ManifestColumns) -> list[str]:
    if cols.labels is not None:
        return list(cols.labels)
    roles = set(cols.role_names().values())
    found = []
    for c in columns:
        if c in roles:
            continue
        if c in CHEXPERT_LABELS:
            found.append(c)
            continue
        values = [r.get(c) for r in rows]
        nonblank = [v for v in values if v not in (None, "") and not (isinstance(v, float) and math.isnan(v))]
        if not nonblank or any(isinstance(v, list | dict) for v in nonblank):
            continue
        try:
            [parse_label(v) for v in nonblank]
        except ValueError:
            continue
        found.append(c)
    return found


def _split_images(value: Any, sep: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [p.strip() for p in str(value).split(sep) if p.strip()]


def _cell(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def read_report_manifest(path: str | Path, columns: ManifestColumns | None = None) -> list[ReportRecord]:
    """Read a CSV/JSONL image–report manifest into :class:`ReportRecord` objects (absolute image paths).

    Raises:
        DataError: on the first structural problem (missing required column with the columns found, a bad
            label or split value naming the row). Use :func:`validate_manifest` to list every problem.
    """
    path = Path(path)
    cols = columns or ManifestColumns()
    header, rows = read_table(path)
    roles = cols.role_names()
    missing = [roles[r] for r in cols.required if roles[r] not in header]
    if missing:
        raise DataError(f"{path}: missing required column(s) {', '.join(missing)}; "
                        f"columns found: {', '.join(header) or 'none'}")  # fmt: skip
    label_cols = _detect_label_columns(header, rows, cols)
    base = path.parent.resolve()
    used = set(roles.values()) | set(label_cols)
    out = []
    for i, row in enumerate(rows):
        where = _row_name(path, i)
        try:
            split = normalize_split(row.get(cols.split))
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from None
        labels: dict[str, int | None] = {}
        for c in label_cols:
            try:
                labels[c] = parse_label(row.get(c))
            except ValueError as exc:
                raise DataError(f"{where}: column {c!r}: {exc}") from None
        rid = _cell(row.get(cols.id)) or str(i)
        out.append(ReportRecord(
            id=rid,
            images=[_resolve(base, p) for p in _split_images(row.get(cols.image), cols.image_separator)],
            report=_cell(row.get(cols.report)) or "",
            split=split,
            patient_id=_cell(row.get(cols.patient_id)),
            labels=labels,
            metadata={k: v for k, v in row.items() if k not in used},
        ))  # fmt: skip
    return out


def _row_name(path: Path, index: int) -> str:
    """Human position of row ``index`` (0-based data row): CSV line numbers count the header."""
    return f"{path}: line {index + 2}" if manifest_format(path) == "csv" else f"{path}: line {index + 1}"


def write_report_manifest(
    path: str | Path,
    records: Iterable[ReportRecord],
    columns: ManifestColumns | None = None,
    label_names: Sequence[str] | None = None,
) -> Path:
    """Write an image–report manifest atomically as CSV or JSONL (from the suffix), image paths relative.

    Args:
        path: ``.csv``, ``.tsv`` or ``.jsonl``.
        records: rows; their ``metadata`` keys become extra columns.
        columns: column names to use.
        label_names: label columns in order (default: every label seen, in first-seen order).
    """
    path = Path(path)
    cols = columns or ManifestColumns()
    fmt = manifest_format(path)
    if fmt == "datalist":
        raise DataError(f"{path}: image–report manifests are .csv, .tsv or .jsonl; .json is for 3D datalists")
    records = list(records)
    base = path.parent
    if label_names is None:
        label_names = list(dict.fromkeys(k for r in records for k in r.labels))
    meta_names = list(dict.fromkeys(k for r in records for k in r.metadata))
    header = [cols.id, cols.image, cols.report, cols.split, cols.patient_id, *label_names, *meta_names]
    rows = []
    for r in records:
        row: dict[str, Any] = {
            cols.id: r.id,
            cols.image: [_relative(base, p) for p in r.images],
            cols.report: r.report,
            cols.split: r.split,
            cols.patient_id: r.patient_id,
        }
        for name in label_names:
            row[name] = r.labels.get(name)
        for name in meta_names:
            row[name] = r.metadata.get(name)
        rows.append(row)
    if fmt == "jsonl":
        from medfm.core.files import _json_safe

        text = "".join(json.dumps(_json_safe(row), ensure_ascii=False) + "\n" for row in rows)
    else:
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=header, delimiter="\t" if path.suffix.lower() == ".tsv" else ",",
                                lineterminator="\n")  # fmt: skip
        writer.writeheader()
        for row in rows:
            flat = {}
            for k, v in row.items():
                if k == cols.image:
                    v = cols.image_separator.join(v)
                elif isinstance(v, list | dict):
                    v = json.dumps(v, ensure_ascii=False)
                flat[k] = "" if v is None else v
            writer.writerow(flat)
        text = buf.getvalue()
    base.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# Validation


@dataclass(frozen=True)
class Problem:
    """One problem found in a manifest. ``kind`` is a stable keyword; ``message`` names the file/row/column."""

    kind: str  # missing_file | missing_column | unreadable_image | duplicate_id | patient_leakage | empty_report
    # | bad_value | bad_manifest
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


def _check_image(path: Path) -> str | None:
    """Open an image fully; return the error line or None when it reads."""
    from medfm.core.errors import MedfmError
    from medfm.data.io import load_image

    try:
        img = load_image(path)
        arr = getattr(img, "array", None)
        if arr is not None and getattr(arr, "size", 1) == 0:
            return f"{path}: image is empty"
    except MedfmError as exc:
        return str(exc).splitlines()[0]
    except Exception as exc:  # any decoder failure is an unreadable image
        return f"{path}: cannot read ({type(exc).__name__}: {exc})"
    return None


def validate_manifest(
    path: str | Path,
    columns: ManifestColumns | None = None,
    check_images: bool | None = None,
) -> list[Problem]:
    """Every problem of a manifest (datalist ``.json`` or image–report ``.csv``/``.tsv``/``.jsonl``).

    Checks: missing required columns (listing the columns found), bad label/split values, missing files,
    unreadable images (each file is opened when ``check_images`` is True; None opens them when the manifest
    has at most :data:`AUTO_CHECK_IMAGES_MAX` image files), duplicate ids, patients in more than one split,
    empty reports.

    Returns:
        A list of :class:`Problem`, empty when the manifest is clean.

    Raises:
        DataError: only when the manifest itself cannot be read (missing file, unknown format, invalid JSON).
    """
    path = Path(path)
    fmt = manifest_format(path)
    if fmt == "datalist":
        return _validate_datalist(path, check_images)
    return _validate_table(path, columns or ManifestColumns(), check_images)


def _common_checks(
    items: list[tuple[str, str, str | None, str | None]],
) -> list[Problem]:
    """Duplicate ids and patient leakage. ``items`` = (where, id, split, patient_id)."""
    problems: list[Problem] = []
    first: dict[str, str] = {}
    for where, rid, _split, _pid in items:
        if rid in first:
            problems.append(Problem("duplicate_id", f"{where}: id {rid!r} already used at {first[rid]}"))
        else:
            first[rid] = where
    splits_of: dict[str, set[str]] = {}
    for _where, _rid, split, pid in items:
        if pid is not None and split is not None:
            splits_of.setdefault(pid, set()).add(split)
    for pid, splits in splits_of.items():
        if len(splits) > 1:
            order = [s for s in SPLITS if s in splits]
            problems.append(Problem("patient_leakage", f"patient {pid!r} appears in splits {', '.join(order)}"))
    return problems


def _file_checks(entries: list[tuple[str, Path]], check_images: bool | None) -> list[Problem]:
    problems = []
    existing = []
    for where, p in entries:
        if not p.exists():
            problems.append(Problem("missing_file", f"{where}: file {p} does not exist"))
        else:
            existing.append((where, p))
    do_open = check_images if check_images is not None else len(entries) <= AUTO_CHECK_IMAGES_MAX
    if do_open:
        for where, p in existing:
            err = _check_image(p)
            if err:
                problems.append(Problem("unreadable_image", f"{where}: {err}"))
    elif check_images is None and entries:
        log.info("%d image files: not opening them (pass check_images=True to)", len(entries))
    return problems


def _validate_datalist(path: Path, check_images: bool | None) -> list[Problem]:
    data = _load_json(path)
    problems: list[Problem] = []
    if not isinstance(data, dict):
        return [Problem("bad_manifest", f"{path}: a datalist must be a JSON object")]
    present = [k for k in _DATALIST_SPLITS if k in data]
    if not present:
        return [Problem("missing_column", f"{path}: no 'training', 'validation' or 'test' list; "
                                          f"keys found: {', '.join(data) or 'none'}")]  # fmt: skip
    base = path.parent.resolve()
    items: list[tuple[str, str, str | None, str | None]] = []
    files: list[tuple[str, Path]] = []
    for key in present:
        entries = data[key]
        if not isinstance(entries, list):
            problems.append(Problem("bad_manifest", f"{path}: '{key}' must be a list"))
            continue
        for i, entry in enumerate(entries):
            where = f"{path}: {key}[{i}]"
            if isinstance(entry, str):
                entry = {"image": entry}
            if not isinstance(entry, dict) or not entry.get("image"):
                found = ", ".join(entry) if isinstance(entry, dict) else type(entry).__name__
                problems.append(Problem("missing_column", f"{where}: no 'image'; keys found: {found or 'none'}"))
                continue
            images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
            for im in images:
                files.append((where, _resolve(base, str(im))))
            if entry.get("label"):
                files.append((where, _resolve(base, str(entry["label"]))))
            rid = str(entry.get("id") or _stem(Path(str(images[0]))))
            pid = entry.get("patient_id")
            items.append((where, rid, _DATALIST_SPLITS[key], str(pid) if pid not in (None, "") else None))
    labels = data.get("labels") or {}
    for k in labels:
        try:
            int(k)
        except (TypeError, ValueError):
            problems.append(Problem("bad_value", f"{path}: label key {k!r} is not an integer"))
    problems += _file_checks(files, check_images)
    problems += _common_checks(items)
    return problems


def _validate_table(path: Path, cols: ManifestColumns, check_images: bool | None) -> list[Problem]:
    header, rows = read_table(path)
    problems: list[Problem] = []
    roles = cols.role_names()
    missing = [roles[r] for r in cols.required if roles[r] not in header]
    if missing:
        problems.append(Problem("missing_column", f"{path}: missing required column(s) {', '.join(missing)}; "
                                                  f"columns found: {', '.join(header) or 'none'}"))  # fmt: skip
    if cols.labels is not None:
        for c in cols.labels:
            if c not in header:
                problems.append(Problem("missing_column", f"{path}: label column {c!r} not found; "
                                                          f"columns found: {', '.join(header)}"))  # fmt: skip
    label_cols = [c for c in _detect_label_columns(header, rows, cols) if c in header]
    if not rows:
        problems.append(Problem("bad_manifest", f"{path}: manifest has no rows"))
    base = path.parent.resolve()
    items: list[tuple[str, str, str | None, str | None]] = []
    files: list[tuple[str, Path]] = []
    has_report = cols.report in header
    for i, row in enumerate(rows):
        where = _row_name(path, i)
        rid = _cell(row.get(cols.id))
        if rid is None and cols.id in header:
            problems.append(Problem("bad_value", f"{where}: empty id"))
        try:
            split = normalize_split(row.get(cols.split))
        except ValueError as exc:
            problems.append(Problem("bad_value", f"{where}: column {cols.split!r}: {exc}"))
            split = None
        for c in label_cols:
            try:
                parse_label(row.get(c))
            except ValueError as exc:
                problems.append(Problem("bad_value", f"{where}: column {c!r}: {exc}"))
        if has_report and not _cell(row.get(cols.report)):
            problems.append(Problem("empty_report", f"{where}: empty report (id {rid or i})"))
        for p in _split_images(row.get(cols.image), cols.image_separator):
            files.append((where, _resolve(base, p)))
        items.append((where, rid if rid is not None else f"#{i}", split, _cell(row.get(cols.patient_id))))
    problems += _file_checks(files, check_images)
    problems += _common_checks([it for it in items if not it[1].startswith("#")])
    return problems
