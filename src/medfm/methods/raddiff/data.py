"""Image sets and set-pair benchmarks.

Inputs of ``describe``: a CSV/JSONL with one row per image (``path``, ``group``, optional ``report``) and two
group names, or two image–report manifests (one per set). Benchmarks use the RadDiffBench JSONL format (one
pair per line: ``set1``, ``set2`` ground-truth strings, ``set1_images``, ``set2_images`` relative paths) with an
optional difficulty CSV (``index, condition_A, condition_B, usefulness, difficulty``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfm.core.errors import DataError, UsageError

log = logging.getLogger(__name__)


@dataclass
class ImageItem:
    """One image of a set: ``path`` (absolute), ``id``, optional ``report``."""

    path: Path
    id: str
    report: str | None = None


@dataclass
class SetPair:
    """Two image sets to compare, with the ground truth when known.

    Attributes:
        name: pair id.
        set_a, set_b: the images.
        gt_a, gt_b: ground-truth descriptions of A and B (None when unknown).
        difficulty: 1 easy, 2 medium, 3 hard (None when unknown).
        kind: family of the difference (prevalence, laterality, severity, device, ...).
    """

    name: str
    set_a: list[ImageItem]
    set_b: list[ImageItem]
    gt_a: str | None = None
    gt_b: str | None = None
    difficulty: int | None = None
    kind: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def has_reports(self) -> bool:
        return all((it.report or "").strip() for it in self.set_a + self.set_b)


def load_group_table(path: str | Path, group_a: str | None, group_b: str | None, path_column: str = "image",
                     group_column: str = "group", report_column: str = "report") -> SetPair:  # fmt: skip
    """Read a table with one row per image and split it by ``group_column`` into A and B.

    The image column is ``image`` as in every medfm manifest; ``path`` (the originals' name) is accepted for it,
    as is ``group_name`` for ``group``. Group names default to the first two distinct values in file order.
    Relative paths are resolved against the table's folder; ``id`` is optional.
    """
    from medfm.data.manifests import read_table

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass a CSV/JSONL with columns {path_column}, {group_column}")
    header, rows = read_table(path)
    if group_column not in header and "group_name" in header:
        group_column = "group_name"
    if path_column not in header and "path" in header:
        path_column = "path"
    missing = [c for c in (path_column, group_column) if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; columns found: {', '.join(header)}")
    groups = list(dict.fromkeys(str(r[group_column]) for r in rows if r.get(group_column) not in (None, "")))
    group_a = group_a or (groups[0] if groups else None)
    group_b = group_b or (groups[1] if len(groups) > 1 else None)
    for g in (group_a, group_b):
        if g not in groups:
            raise DataError(f"{path}: group {g!r} not found in column {group_column!r}; groups: {', '.join(groups)}")
    base = path.parent.resolve()
    sets: dict[str, list[ImageItem]] = {group_a: [], group_b: []}  # type: ignore[dict-item]
    for i, r in enumerate(rows):
        g = str(r.get(group_column))
        if g in sets:
            p = Path(str(r[path_column]))
            rep = r.get(report_column)
            sets[g].append(ImageItem(p if p.is_absolute() else base / p, str(r.get("id") or f"{path.stem}-{i}"),
                                     str(rep) if rep not in (None, "") else None))  # fmt: skip
    return SetPair(f"{group_a} vs {group_b}", sets[group_a], sets[group_b])  # type: ignore[index]


def load_manifest_sets(manifest_a: str | Path, manifest_b: str | Path) -> SetPair:
    """Two image–report manifests (medfm.data.manifests format: id, image, optional report), one per set."""
    from medfm.data.manifests import ManifestColumns, read_report_manifest

    cols = ManifestColumns(required=("image",))
    sets = []
    for m in (manifest_a, manifest_b):
        if not Path(m).is_file():
            raise DataError(f"manifest {m} does not exist")
        recs = read_report_manifest(m, cols)
        sets.append([ImageItem(r.images[0], r.id, r.report or None) for r in recs if r.images])
    return SetPair(f"{Path(manifest_a).stem} vs {Path(manifest_b).stem}", sets[0], sets[1])


def check_images(items: Sequence[ImageItem], where: str) -> tuple[list[ImageItem], list[str]]:
    """Keep readable images; return (kept, one problem line per dropped image)."""
    from PIL import Image, UnidentifiedImageError

    kept, problems = [], []
    for it in items:
        try:
            if it.path.suffix.lower() in (".dcm", "") or not it.path.is_file():
                from medfm.data.io import read_radiograph

                read_radiograph(it.path)
            else:
                with Image.open(it.path) as im:
                    im.verify()
            kept.append(it)
        except (DataError, UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            problems.append(f"{where}: {it.path}: unreadable ({str(exc).splitlines()[0][:120]})")
    return kept, problems


def validate_pair(pair: SetPair, min_images: int = 2, imbalance_warn: float = 10.0) -> list[str]:
    """Drop unreadable images (in place) and check set sizes. Returns warnings; raises DataError when unusable."""
    warnings: list[str] = []
    for attr, label in (("set_a", "set A"), ("set_b", "set B")):
        kept, problems = check_images(getattr(pair, attr), f"{pair.name} {label}")
        for p in problems:
            log.warning(p)
        warnings += problems
        setattr(pair, attr, kept)
        if len(kept) < min_images:
            raise DataError(f"{pair.name}: {label} has {len(kept)} readable image(s) (need at least {min_images})"
                            + (f"; first problem: {problems[0]}" if problems else ""))  # fmt: skip
    na, nb = len(pair.set_a), len(pair.set_b)
    if max(na, nb) / min(na, nb) > imbalance_warn:
        w = (f"{pair.name}: set sizes differ a lot ({na} vs {nb}); AUROC is size-independent but the proposer "
             f"samples at most the smaller set's size per round")  # fmt: skip
        log.warning(w)
        warnings.append(w)
    return warnings


# ----------------------------------------------------------------------------------------------------------------------
# RadDiffBench format


def read_raddiffbench(path: str | Path, image_root: str | Path | None = None,
                      difficulty_csv: str | Path | None = None, reports: dict[str, str] | None = None) -> list[SetPair]:  # fmt: skip
    """Read a RadDiffBench-style JSONL (``set1``, ``set2``, ``set1_images``, ``set2_images``).

    Args:
        path: the JSONL file.
        image_root: folder the image paths are relative to (default: the JSONL's folder).
        difficulty_csv: optional ``index, condition_A, condition_B, usefulness, difficulty`` CSV (row i = line i).
        reports: optional relative image path -> report text.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"benchmark file {path} does not exist (expected RadDiffBench JSONL)")
    root = Path(image_root) if image_root else path.parent
    diff: dict[int, dict[str, str]] = {}
    if difficulty_csv:
        with open(difficulty_csv, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                diff[int(row["index"])] = row
    pairs = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{path}:{i + 1} is not valid JSON") from None
        need = [k for k in ("set1", "set2", "set1_images", "set2_images") if k not in row]
        if need:
            raise DataError(f"{path}:{i + 1} lacks {', '.join(need)} (RadDiffBench format)")
        reps = reports or {}

        def items(rel: list[str], tag: str, row_i: int = i, reps: dict[str, str] = reps) -> list[ImageItem]:
            return [ImageItem((root / r).resolve(), f"{row_i}{tag}{k}", reps.get(r)) for k, r in enumerate(rel)]

        d = diff.get(len(pairs), {})
        pairs.append(SetPair(
            name=str(row.get("name", f"pair{len(pairs):03d}")),
            set_a=items(row["set1_images"], "a"), set_b=items(row["set2_images"], "b"),
            gt_a=str(row["set1"]).strip(), gt_b=str(row["set2"]).strip(),
            difficulty=int(float(d["difficulty"])) if d.get("difficulty") else row.get("difficulty"),
            kind=str(row.get("kind", "")), meta={k: v for k, v in row.items() if not k.startswith("set")},
        ))  # fmt: skip
    if not pairs:
        raise DataError(f"{path} holds no set pairs")
    return pairs


def write_raddiffbench(
    pairs: Sequence[dict[str, Any]], path: str | Path, difficulty_csv: str | Path | None = None
) -> Path:
    """Write pairs (dicts with set1, set2, set1_images, set2_images and extra keys) and the difficulty CSV."""
    from medfm.core.files import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(p) + "\n" for p in pairs))
    if difficulty_csv:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["index", "condition_A", "condition_B", "usefulness", "difficulty"])
        for i, p in enumerate(pairs):
            w.writerow([i, p["set1"], p["set2"], p.get("usefulness", 3.0), p.get("difficulty", "")])
        atomic_write_text(difficulty_csv, buf.getvalue())
    return Path(path)


def read_reports_table(path: str | Path) -> dict[str, str]:
    """``path`` (relative image path) -> ``report`` from a CSV/JSONL with those columns."""
    from medfm.data.manifests import read_table

    header, rows = read_table(path)
    key = "path" if "path" in header else "image" if "image" in header else None
    if key is None or "report" not in header:
        raise UsageError(f"{path}: reports table needs columns path (or image) and report; found {', '.join(header)}")
    return {str(r[key]): str(r["report"] or "") for r in rows}
