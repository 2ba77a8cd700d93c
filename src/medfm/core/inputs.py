"""Input checks every verb's ``--dry_run`` runs: the ``medfm data validate`` checks on every declared input file.

An option declares what it reads with ``option(..., input=KIND)``:

* ``"manifest"``: an image–report table (CSV/TSV/JSONL; column names taken from the option's section when it
  has ``image_column`` / ``report_column`` / ``id_column``) or a datalist ``.json``, checked by
  :func:`medfm.data.manifests.validate_manifest` (missing columns, bad values, missing and unreadable images,
  duplicate ids, patient leakage);
* ``"datalist"``: a Decathlon datalist ``.json``, same checks;
* ``"table:a,b|c"``: a CSV/TSV/JSONL that must parse (every JSON line) and hold columns ``a`` and ``b`` or
  ``c`` (alternatives separated by ``|``).

Values that are not files (``phantom:cxr``, ``builtin:...``, ``iu``, a folder) are left to the verb: they
are sources, not manifests. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medfm.core.config import iter_options

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
FILE_SUFFIXES = (*TABLE_SUFFIXES, ".json")


def _section(cfg: Any, dotted: str) -> tuple[Any, Any]:
    """``(section object, value)`` of a dotted option name."""
    parent = cfg
    parts = dotted.split(".")
    for part in parts[:-1]:
        parent = getattr(parent, part)
    return parent, getattr(parent, parts[-1])


def _columns(section: Any, required: tuple[str, ...]) -> Any:
    from medfm.data.manifests import ManifestColumns

    names = {role: getattr(section, f"{role}_column") for role in ("id", "image", "report")
             if isinstance(getattr(section, f"{role}_column", None), str)}  # fmt: skip
    return ManifestColumns(**names, required=required)


def check_file(kind: str, path: Path, section: Any = None) -> list[str]:
    """Problems (one line each) of one input file of ``kind``; [] when it is clean."""
    from medfm.core.errors import DataError
    from medfm.data.manifests import read_table, validate_manifest

    if not path.exists():
        return [f"{path}: file does not exist"]
    try:
        if kind in ("manifest", "datalist"):
            if kind == "datalist" and path.suffix.lower() != ".json":
                return [f"{path}: a datalist must be a .json file"]
            cols = _columns(section, ("image",)) if path.suffix.lower() != ".json" else None
            return [str(p) for p in validate_manifest(path, cols)]
        if kind.startswith("table:"):
            header, rows = read_table(path)
            missing = [alt for alt in kind.split(":", 1)[1].split(",") if not set(alt.split("|")) & set(header)]
            out = [f"{path}: missing column(s) {', '.join(missing)}; columns found: {', '.join(header) or 'none'}"
                   ] if missing else []  # fmt: skip
            return out + ([f"{path}: no rows"] if not rows else [])
    except DataError as exc:
        return [str(exc)]
    raise ValueError(f"unknown input kind {kind!r}")


def check_inputs(cfg: Any) -> list[str]:
    """Problems of every declared input of a verb's resolved config (see the module docstring)."""
    problems: list[str] = []
    for name, field, _tp in iter_options(type(cfg)):
        kind = field.metadata.get("input")
        if not kind:
            continue
        section, value = _section(cfg, name)
        for v in value if isinstance(value, list | tuple) else [value]:
            if not v or not isinstance(v, str | Path):
                continue
            path = Path(str(v))
            is_file_like = path.suffix.lower() in FILE_SUFFIXES and ":" not in str(v).split("/")[0]
            if path.is_dir() or not (is_file_like or path.is_file()):
                continue
            problems += [f"--{name}: {p}" for p in check_file(kind, path, section)]
    return problems
