"""The versioned ``results.json`` schema and the ``metrics.jsonl`` writer.

results.json (schema ``medfm.results/1``)::

    {"schema": "medfm.results/1", "method": "mass", "verb": "evaluate", "created_at": "...",
     "metrics": {"dice": {"value": 0.81, "ci": [0.78, 0.84], "n": 120, "higher_is_better": true,
                          "ci_level": 0.95, "note": ""}},
     "groups": {"site=A": {"dice": {...}}},
     "tables": {"per_structure": [{"structure": "liver", "dice": 0.9}, ...]},
     "meta": {...}}

``value`` may be null when a metric is undefined on the data (e.g. AUROC with one class); ``note`` says why.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medfm.core.errors import DataError
from medfm.core.files import atomic_write_json

SCHEMA = "medfm.results/1"


@dataclass
class Metric:
    """One scalar result with its uncertainty.

    Attributes:
        value: point estimate on the full data (None when undefined).
        ci: ``(low, high)`` confidence interval or None.
        n: number of independent units the value is computed over (studies, volumes, questions).
        higher_is_better: direction, used by plots, claims and comparisons.
        ci_level: coverage of ``ci`` (0.95 = 95 %).
        note: why a value is missing, or how it was computed when not obvious.
    """

    value: float | None
    ci: tuple[float, float] | None = None
    n: int | None = None
    higher_is_better: bool = True
    ci_level: float = 0.95
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = list(self.ci) if self.ci is not None else None
        if self.value is not None and isinstance(self.value, float) and math.isnan(self.value):
            d["value"] = None
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Metric:
        ci = d.get("ci")
        return cls(
            value=d.get("value"),
            ci=tuple(ci) if ci is not None else None,  # type: ignore[arg-type]
            n=d.get("n"),
            higher_is_better=bool(d.get("higher_is_better", True)),
            ci_level=float(d.get("ci_level", 0.95)),
            note=d.get("note", ""),
        )

    def format(self, digits: int = 3) -> str:
        if self.value is None:
            return "n/a"
        text = f"{self.value:.{digits}f}"
        if self.ci is not None:
            text += f" [{self.ci[0]:.{digits}f}, {self.ci[1]:.{digits}f}]"
        return text


@dataclass
class Results:
    """Everything a verb measured, as written to ``results.json``."""

    method: str
    verb: str
    metrics: dict[str, Metric] = field(default_factory=dict)
    groups: dict[str, dict[str, Metric]] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))

    def add(self, name: str, metric: Metric | float | None, group: str | None = None, **kwargs: Any) -> Metric:
        """Add a metric (a :class:`Metric`, or a bare value plus Metric fields) overall or to ``group``."""
        m = metric if isinstance(metric, Metric) else Metric(value=metric, **kwargs)
        (self.metrics if group is None else self.groups.setdefault(group, {}))[name] = m
        return m

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "method": self.method,
            "verb": self.verb,
            "created_at": self.created_at,
            "metrics": {k: m.to_json() for k, m in self.metrics.items()},
            "groups": {g: {k: m.to_json() for k, m in ms.items()} for g, ms in self.groups.items()},
            "tables": self.tables,
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_json())

    @classmethod
    def from_json(cls, d: Mapping[str, Any], source: str = "results") -> Results:
        errors = validate(d)
        if errors:
            raise DataError(f"{source} is not a valid {SCHEMA} file: {'; '.join(errors)}")
        return cls(
            method=d["method"],
            verb=d["verb"],
            metrics={k: Metric.from_json(v) for k, v in d["metrics"].items()},
            groups={g: {k: Metric.from_json(v) for k, v in ms.items()} for g, ms in d.get("groups", {}).items()},
            tables=dict(d.get("tables", {})),
            meta=dict(d.get("meta", {})),
            created_at=d.get("created_at", ""),
        )

    @classmethod
    def load(cls, path: str | Path) -> Results:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path} does not exist; run the verb that writes results.json first")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_json(data, source=str(path))


def validate(d: Any) -> list[str]:
    """Every problem with a results mapping (empty list when valid)."""
    errors: list[str] = []
    if not isinstance(d, Mapping):
        return ["top level is not an object"]
    if d.get("schema") != SCHEMA:
        errors.append(f"schema is {d.get('schema')!r}, expected {SCHEMA!r}")
    for key in ("method", "verb"):
        if not isinstance(d.get(key), str):
            errors.append(f"missing string field {key!r}")
    metrics = d.get("metrics")
    if not isinstance(metrics, Mapping):
        errors.append("missing object field 'metrics'")
        metrics = {}
    groups = d.get("groups", {})
    if not isinstance(groups, Mapping):
        errors.append("'groups' is not an object")
        groups = {}
    all_metrics = [("", metrics)] + [(f"groups.{g}.", ms) for g, ms in groups.items()]
    for prefix, ms in all_metrics:
        if not isinstance(ms, Mapping):
            errors.append(f"{prefix or 'metrics'} is not an object")
            continue
        for name, m in ms.items():
            where = f"{prefix}{name}"
            if not isinstance(m, Mapping) or "value" not in m:
                errors.append(f"metric {where} has no 'value'")
                continue
            v = m["value"]
            if v is not None and not isinstance(v, int | float):
                errors.append(f"metric {where} value {v!r} is not a number")
            ci = m.get("ci")
            if ci is not None and (
                not isinstance(ci, list | tuple) or len(ci) != 2 or not all(isinstance(x, int | float) for x in ci)
            ):
                errors.append(f"metric {where} ci {ci!r} is not [low, high]")
            elif ci is not None and ci[0] > ci[1]:
                errors.append(f"metric {where} ci low {ci[0]} > high {ci[1]}")
    return errors


class MetricsLog:
    """Append-only ``metrics.jsonl``: one JSON object per line with ``step`` and scalar values.

    Each line is flushed as written, so a crash loses at most the line being written; :meth:`read`
    skips a torn last line. On resume, lines past the resumed step are dropped by :meth:`truncate_after`.
    """

    def __init__(self, path: str | Path, enabled: bool | None = None):
        from medfm.core.distributed import is_main_process

        self.path = Path(path)
        # one writer: by default only the main process of a multi-process run logs
        self.enabled = is_main_process() if enabled is None else enabled

    def log(self, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        row = {"step": int(step)}
        for k, v in values.items():
            row[k] = v.item() if hasattr(v, "item") else v
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn line from an interrupted write
        return rows

    def truncate_after(self, step: int) -> None:
        from medfm.core.files import atomic_write_text

        if not self.enabled:
            return
        rows = [r for r in self.read() if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))
