"""The SMMILE problem schema, loaders (Hugging Face parquet layout, JSONL) and writers.

One row per (image, question, answer) triplet (spec §2.1). Rows are grouped by ``problem_id`` and sorted by
``order``; the last row of a problem is the **query**, the others are its in-context examples. Columns:

    problem_id, order, question, answer, image, image_url, speciality, flag_answer_format, flag_image_type,
    flag_cognitive_process, flag_rarity, flag_difficulty_llms   (other columns, e.g. author, are kept in ``extra``)

``image`` is, in JSONL, a path (relative to the JSONL file's folder, or absolute) or null; in the Hugging Face
parquet layout (``data/train-00000-of-00001.parquet``) it is the ``datasets.Image`` struct
``{"bytes": binary, "path": str}`` (or a path string). An image that is missing while ``image_url`` is an
``http(s)`` URL is looked up in ``image_dir`` (by the URL's file name, or ``<sha256(url)[:16]><ext>``); offline,
an uncached URL is a :class:`~medfm.core.errors.DataError` naming the row and where to put the file.

Bad problems are never silently dropped: a problem with one row, an empty answer, a duplicate ``order`` or a
missing image is left out of :attr:`ProblemSet.problems` and listed in :attr:`ProblemSet.skipped` with its reason
(the original harness skips problems with a missing image the same way).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from medfm.core.errors import DataError

log = logging.getLogger(__name__)

REQUIRED = ("problem_id", "order", "question", "answer")
FLAG_FIELDS = (
    "speciality",
    "flag_answer_format",
    "flag_image_type",
    "flag_cognitive_process",
    "flag_rarity",
    "flag_difficulty_llms",
)
SCHEMA_FIELDS = ("problem_id", "order", "question", "answer", "image", "image_url", *FLAG_FIELDS)
REASONING = "reasoning classification"


@dataclass
class SmmileRow:
    """One (image, question, answer) triplet.

    Attributes:
        image: a path to an image file, a PIL image (decoded from parquet bytes) or None when missing.
        extra: columns outside the schema (kept, e.g. ``author``).
    """

    problem_id: str
    order: int
    question: str
    answer: str
    image: Any = None
    image_url: str = ""
    speciality: str = ""
    flag_answer_format: str = ""
    flag_image_type: str = ""
    flag_cognitive_process: str = ""
    flag_rarity: str = ""
    flag_difficulty_llms: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, image_value: Any = None) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in SCHEMA_FIELDS}
        d["image"] = image_value if image_value is not None else (str(self.image) if _is_path(self.image) else None)
        d.update(self.extra)
        return d


@dataclass
class Problem:
    """A problem: in-context ``examples`` (sorted by order) and the ``query`` (the last row)."""

    problem_id: str
    examples: list[SmmileRow]
    query: SmmileRow

    @property
    def rows(self) -> list[SmmileRow]:
        return [*self.examples, self.query]

    @property
    def speciality(self) -> str:
        return self.query.speciality

    @property
    def is_reasoning(self) -> bool:
        return self.query.flag_cognitive_process.strip().lower() == REASONING

    def flags(self) -> dict[str, str]:
        """The query row's speciality and flag_* fields (what the paper stratifies by)."""
        return {k: getattr(self.query, k) for k in FLAG_FIELDS}


@dataclass
class ProblemSet:
    """Loaded problems plus the problems left out, each with ``{"problem_id", "reason"}``."""

    problems: list[Problem]
    skipped: list[dict[str, str]] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.problems)

    def limit(self, n: int | None) -> ProblemSet:
        return self if n is None else ProblemSet(self.problems[:n], self.skipped, self.source)


def _is_path(x: Any) -> bool:
    return isinstance(x, str | Path) and bool(str(x))


def _is_url(x: Any) -> bool:
    return isinstance(x, str) and x.lower().startswith(("http://", "https://"))


def url_cache_names(url: str) -> list[str]:
    """File names under which a URL's image may sit in ``image_dir``: its basename, then a content-free hash."""
    name = Path(urlparse(url).path).name
    ext = Path(name).suffix or ".png"
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return [n for n in (name, f"{digest}{ext}") if n]


# ----------------------------------------------------------------------------------------------------------------------
# Reading raw rows


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{i} is not valid JSON ({exc.msg}); one SMMILE row per line") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{i} must be a JSON object with {', '.join(REQUIRED)}")
        rows.append(row)
    return rows


def _read_parquet(paths: Sequence[Path]) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for p in paths:
        try:
            rows += pq.read_table(p).to_pylist()
        except Exception as exc:  # pyarrow raises many types for corrupt files
            raise DataError(f"{p} is not a readable parquet file ({str(exc).splitlines()[0]})") from None
    return rows


def find_source_files(source: str | Path) -> tuple[str, list[Path]]:
    """``("jsonl"|"parquet", files)`` for a JSONL file, a parquet file, or a folder in either layout.

    A folder is searched for ``problems.jsonl``, then the Hugging Face layout ``data/*.parquet`` (split ``train``
    preferred), then ``*.parquet``, then ``*.jsonl``.
    """
    path = Path(source)
    if path.is_file():
        if path.suffix == ".parquet":
            return "parquet", [path]
        if path.suffix in (".jsonl", ".json"):
            return "jsonl", [path]
        raise DataError(f"{path}: expected a .jsonl or .parquet file with SMMILE rows")
    if not path.is_dir():
        raise DataError(f"SMMILE data {path} does not exist (give a .jsonl/.parquet file or a dataset folder)")
    if (path / "problems.jsonl").is_file():
        return "jsonl", [path / "problems.jsonl"]
    for pattern in ("data/train-*.parquet", "data/*.parquet", "*.parquet"):
        files = sorted(path.glob(pattern))
        if files:
            return "parquet", files
    files = sorted(path.glob("*.jsonl"))
    if files:
        return "jsonl", files
    raise DataError(f"{path} holds no problems.jsonl, data/*.parquet, *.parquet or *.jsonl with SMMILE rows")


# ----------------------------------------------------------------------------------------------------------------------
# Images


def _resolve_image(
    raw: Any, url: str, base: Path, image_dir: Path | None, where: str, fetch_urls: bool, cache_dir: Path | None
) -> tuple[Any, str | None]:
    """``(image, None)`` or ``(None, reason)``; raises DataError for an uncached URL when offline."""
    if isinstance(raw, dict):  # datasets.Image struct
        data, p = raw.get("bytes"), raw.get("path")
        if data:
            from PIL import Image

            try:
                img = Image.open(io.BytesIO(data))
                img.load()
            except Exception as exc:
                return None, f"image bytes of {where} do not decode ({type(exc).__name__})"
            return img, None
        raw = p
    if _is_url(raw):
        url, raw = str(raw), None
    if _is_path(raw):
        p = Path(str(raw))
        candidates = [p] if p.is_absolute() else [base / p] + ([image_dir / p] if image_dir else [])
        for c in candidates:
            if c.is_file():
                return c, None
        return None, f"image file {raw} of {where} not found"
    if _is_url(url):
        for folder in [d for d in (image_dir, cache_dir) if d is not None]:
            for name in url_cache_names(url):
                if (folder / name).is_file():
                    return folder / name, None
        if fetch_urls and cache_dir is not None:
            return _fetch(url, cache_dir, where), None
        raise DataError(
            f"image of {where} is only a URL ({url[:80]}) and is not cached; offline runs need files: save it as "
            f"<image_dir>/{url_cache_names(url)[0]} and pass --image_dir (or set --fetch_urls true where online)"
        )
    return None, f"{where} has no image"


def _fetch(url: str, cache_dir: Path, where: str) -> Path:
    """Download ``url`` once into ``cache_dir`` (only when the user enabled fetching)."""
    import httpx

    from medfm.core.files import atomic_write_bytes

    target = cache_dir / url_cache_names(url)[-1]
    try:
        r = httpx.get(url, timeout=30.0, follow_redirects=True)
        r.raise_for_status()
    except Exception as exc:
        raise DataError(f"could not download the image of {where} from {url[:80]} ({type(exc).__name__})") from None
    return atomic_write_bytes(target, r.content)


# ----------------------------------------------------------------------------------------------------------------------
# Loading problems


def rows_to_problems(
    raw_rows: Iterable[dict[str, Any]],
    base: Path = Path("."),
    image_dir: str | Path | None = None,
    fetch_urls: bool = False,
    cache_dir: str | Path | None = None,
    source: str = "rows",
    require_images: bool = True,
) -> ProblemSet:
    """Group raw rows into problems (sorted by order, last = query) and validate them.

    Args:
        raw_rows: mappings with at least ``problem_id, order, question, answer``.
        base: folder that relative image paths are relative to.
        image_dir: extra folder to find images (and cached URL images) in.
        fetch_urls: download uncached image URLs into ``cache_dir`` (never in tests or offline runs).
        cache_dir: where downloaded URL images go.
        source: name used in error messages.
        require_images: skip problems with a missing image (the original's rule); False keeps them (text-only).
    """
    grouped: dict[str, list[dict[str, Any]]] = {}
    for i, r in enumerate(raw_rows):
        missing = [c for c in REQUIRED if c not in r]
        if missing:
            raise DataError(f"{source}: row {i} lacks column(s) {', '.join(missing)} (SMMILE rows need {REQUIRED})")
        grouped.setdefault(str(r["problem_id"]), []).append(r)
    idir = Path(image_dir) if image_dir else None
    cdir = Path(cache_dir) if cache_dir else None
    problems: list[Problem] = []
    skipped: list[dict[str, str]] = []
    for pid, rs in grouped.items():
        try:
            orders = [int(r["order"]) for r in rs]
        except (TypeError, ValueError):
            raise DataError(f"{source}: problem {pid} has a non-integer 'order' value") from None
        if len(set(orders)) != len(orders):
            skipped.append({"problem_id": pid, "reason": "duplicate 'order' values"})
            continue
        if len(rs) < 2:
            skipped.append({"problem_id": pid, "reason": "only one row (a query without in-context examples)"})
            continue
        rows: list[SmmileRow] = []
        reason = None
        for r in sorted(rs, key=lambda r: int(r["order"])):
            where = f"problem {pid} order {r['order']}"
            answer = "" if r.get("answer") is None else str(r["answer"])
            if not answer.strip():
                reason = f"empty answer at order {r['order']}"
                break
            url = str(r.get("image_url") or "")
            image, why = _resolve_image(r.get("image"), url, base, idir, where, fetch_urls, cdir)
            if image is None and require_images:
                reason = why or "missing image"
                break
            extra = {k: v for k, v in r.items() if k not in SCHEMA_FIELDS}
            rows.append(
                SmmileRow(
                    problem_id=pid,
                    order=int(r["order"]),
                    question=str(r.get("question") or ""),
                    answer=answer,
                    image=image,
                    image_url=url,
                    extra=extra,
                    **{k: str(r.get(k) or "") for k in FLAG_FIELDS},
                )
            )
        if reason:
            skipped.append({"problem_id": pid, "reason": reason})
            continue
        problems.append(Problem(pid, rows[:-1], rows[-1]))
    for s in skipped:
        log.warning("smmile: skipping problem %s: %s", s["problem_id"], s["reason"])
    return ProblemSet(problems, skipped, source)


def load_problems(
    source: str | Path,
    image_dir: str | Path | None = None,
    fetch_urls: bool = False,
    require_images: bool = True,
) -> ProblemSet:
    """Load SMMILE problems from JSONL or the Hugging Face parquet layout (see module docstring)."""
    kind, files = find_source_files(source)
    raw = _read_parquet(files) if kind == "parquet" else [r for f in files for r in _read_jsonl(f)]
    if not raw:
        raise DataError(f"{source} holds no SMMILE rows")
    base = files[0].parent
    cache = Path(image_dir) if image_dir else base / "image_cache"
    ps = rows_to_problems(raw, base, image_dir, fetch_urls, cache, str(source), require_images)
    log.info("smmile: %d problems from %s (%d skipped)", len(ps.problems), source, len(ps.skipped))
    return ps


# ----------------------------------------------------------------------------------------------------------------------
# Writing


def write_jsonl(rows: Iterable[SmmileRow], path: str | Path, relative_to: Path | None = None) -> Path:
    """Write rows as JSONL; image paths are written relative to ``relative_to`` (default: the file's folder)."""
    from medfm.core.files import atomic_write_text

    path = Path(path)
    base = relative_to or path.parent
    lines = []
    for r in rows:
        img = None
        if _is_path(r.image):
            p = Path(r.image)
            try:
                img = str(p.resolve().relative_to(base.resolve()))
            except ValueError:
                img = str(p)
        lines.append(json.dumps(r.to_json(img), default=str))
    return atomic_write_text(path, "\n".join(lines) + "\n")


def write_parquet(rows: Iterable[SmmileRow], path: str | Path) -> Path:
    """Write rows in the Hugging Face parquet layout: ``image`` as the ``datasets.Image`` struct (PNG bytes).

    The schema metadata declares the ``datasets`` features so ``datasets.load_dataset("parquet", ...)`` decodes
    the image column to PIL images.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from medfm.core.files import atomic_path

    records = []
    for r in rows:
        d = r.to_json()
        d["order"] = int(r.order)
        d["image"] = _image_struct(r.image)
        records.append(d)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    fields = [
        pa.field(k, pa.int64() if k == "order" else image_type if k == "image" else pa.string()) for k in SCHEMA_FIELDS
    ]
    extra = sorted({k for d in records for k in d if k not in SCHEMA_FIELDS})
    fields += [pa.field(k, pa.string()) for k in extra]
    features = {k: {"dtype": "int64" if k == "order" else "string", "_type": "Value"} for k in SCHEMA_FIELDS}
    features["image"] = {"_type": "Image"}
    features.update({k: {"dtype": "string", "_type": "Value"} for k in extra})
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    schema = pa.schema(fields, metadata=meta)
    table = pa.Table.from_pylist(
        [{**d, **{k: (None if d.get(k) is None else str(d[k])) for k in extra}} for d in records], schema=schema
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def _image_struct(image: Any) -> dict[str, Any] | None:
    if image is None:
        return None
    if _is_path(image):
        p = Path(image)
        return {"bytes": p.read_bytes(), "path": p.name}
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}
