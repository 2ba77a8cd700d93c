"""``medfm data validate <manifest>`` and ``medfm data assets`` (torch-free declarations and runners)."""

from __future__ import annotations

from dataclasses import dataclass

from medfm.core.commands import Command, Group
from medfm.core.config import option, section


@dataclass
class ColumnsConfig:
    id: str = option("id", help="Column holding the row id.")
    image: str = option("image", help="Column holding the image path(s), several separated by ';'.")
    report: str = option("report", help="Column holding the report text.")
    split: str = option("split", help="Column holding the split (train/val/test).")
    patient_id: str = option("patient_id", help="Column holding the patient id (for leakage checks).")
    labels: list[str] | None = option(
        None, help="Label columns (comma-separated). Default: CheXpert names plus any column of only 1/0/-1/blank."
    )
    required: list[str] = option(
        default_factory=lambda: ["image", "report"],
        help="Which roles (id, image, report, split, patient_id) must be present as columns (a missing id is "
        "generated from the row number).",
    )


@dataclass
class ValidateConfig:
    manifest: str = option(help="Manifest to check: .csv/.tsv/.jsonl image–report manifest or .json datalist.",
                           positional=True)  # fmt: skip
    check_images: bool | None = option(
        None,
        help="true: open every image to check it reads; false: only check files exist. Default: open them "
        "when there are at most 200 image files.",
    )
    columns: ColumnsConfig = section(ColumnsConfig, help="Column names of an image–report manifest.")


@dataclass
class AssetsConfig:
    json: bool = option(False, help="Print machine-readable JSON instead of text.")


def run_validate(cfg: ValidateConfig) -> int:
    """Print every problem of the manifest; exit 3 when there is any, 0 with a one-line summary when clean."""
    from pathlib import Path

    from medfm.core.errors import UsageError
    from medfm.data.manifests import ManifestColumns, manifest_format, read_datalist, read_table, validate_manifest

    c = cfg.columns
    roles = {"id", "image", "report", "split", "patient_id"}
    bad = [r for r in c.required if r not in roles]
    if bad:
        raise UsageError(f"--columns.required: unknown role(s) {', '.join(bad)}; roles: {', '.join(sorted(roles))}")
    cols = ManifestColumns(id=c.id, image=c.image, report=c.report, split=c.split, patient_id=c.patient_id,
                           labels=tuple(c.labels) if c.labels is not None else None,
                           required=tuple(c.required))  # fmt: skip
    path = Path(cfg.manifest)
    problems = validate_manifest(path, columns=cols, check_images=cfg.check_images)
    for p in problems:
        print(p)
    if problems:
        kinds: dict[str, int] = {}
        for p in problems:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in kinds.items())
        print(f"{path}: {len(problems)} problem(s): {summary}")
        return 3
    if manifest_format(path) == "datalist":
        dl = read_datalist(path)
        counts = {s: len(dl.split(s)) for s in ("train", "val", "test")}
        n = len(dl.records)
    else:
        _header, rows = read_table(path)
        n = len(rows)
        counts = {}
        for row in rows:
            key = str(row.get(cols.split) or "").strip() or "unsplit"
            counts[key] = counts.get(key, 0) + 1
    split_text = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
    print(f"{path}: OK, {n} item(s) ({split_text or 'no splits'}), no problems found")
    return 0


def run_assets(cfg: AssetsConfig) -> int:
    """List the offline assets with install state, path or install command."""
    import json

    from medfm.data.assets import ASSETS

    rows = []
    for a in ASSETS:
        where = a.find()
        rows.append({"name": a.name, "installed": where is not None, "path": str(where) if where else None,
                     "install": a.install, "description": a.description})  # fmt: skip
    if cfg.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        state = "installed" if r["installed"] else "missing  "
        print(f"{r['name']:<28} {state}  {r['path'] or 'install with: ' + r['install']}")
        print(f"{'':<28} {r['description']}")
    n = sum(r["installed"] for r in rows)
    print(f"{n}/{len(rows)} offline assets installed")
    return 0


DATA = Group("data", "Validate manifests; list offline assets.", (
    Command("validate", "Check a manifest or datalist and print every problem (exit 3 when any).",
            "medfm.data.cli:ValidateConfig", "medfm.data.cli:run_validate"),
    Command("assets", "List offline models and data with install state and paths.",
            "medfm.data.cli:AssetsConfig", "medfm.data.cli:run_assets"),
))  # fmt: skip
