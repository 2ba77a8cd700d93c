"""Result CSVs in the original's released layout: write them, read them, re-score them.

File name: ``result_<model>_<0-shot|ICL|...>[_open|_mcqa].csv``; columns ``problem_id, final_question,
true_answer, generated_answer, full_response`` and for MCQA also ``correct_option, selected_option, is_correct``.
:func:`score_csv` recomputes EM (open) or MCQA accuracy from a file (ours or a published one) with the paper's
bootstrap and writes the original evaluation keys (``model, inference_mode, total_examples, original_count,
excluded_count, correct_examples, accuracy, err_count, problem_accuracies, incorrect_examples, word_count``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medfm.core.errors import DataError
from medfm.methods.smmile import prompts
from medfm.methods.smmile.metrics import Summary, bootstrap_accuracy, exact_match

OPEN_COLUMNS = ("problem_id", "final_question", "true_answer", "generated_answer", "full_response")
MCQA_COLUMNS = (*OPEN_COLUMNS, "correct_option", "selected_option", "is_correct")
_NAME = re.compile(r"^result_(?P<model>.+?)_(?P<mode>0-shot|ICL(?:-[A-Za-z0-9-]+)?)(?:_(?P<task>open|mcqa))?$")


def csv_name(model: str, mode: str, task: str) -> str:
    """``result_<model>_<mode>_<task>.csv`` with the model name made file-safe."""
    safe = re.sub(r"[^\w.-]+", "-", model).strip("-") or "model"
    return f"result_{safe}_{mode}_{task}.csv"


def parse_name(path: str | Path) -> dict[str, str]:
    """``{"model", "inference_mode", "task"}`` from a result file name (task defaults to ``open``)."""
    m = _NAME.match(Path(path).stem)
    if not m:
        return {"model": Path(path).stem, "inference_mode": "", "task": ""}
    return {"model": m["model"], "inference_mode": m["mode"], "task": m["task"] or ""}


def write_csv(records: Sequence[dict[str, Any]], path: str | Path, task: str) -> Path:
    """Write records in the original column layout (atomically)."""
    import io

    from medfm.core.files import atomic_write_text

    cols = MCQA_COLUMNS if task == "mcqa" else OPEN_COLUMNS
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(cols), extrasaction="ignore")
    w.writeheader()
    for r in records:
        w.writerow({c: r.get(c, "") for c in cols})
    return atomic_write_text(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"result file {path} does not exist")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        missing = [c for c in ("problem_id", "true_answer") if c not in cols]
        if missing:
            raise DataError(f"{path} lacks column(s) {', '.join(missing)}; expected {', '.join(OPEN_COLUMNS)}")
        return list(reader)


def _truthy(v: Any) -> bool | None:
    s = str(v).strip().lower()
    if s in ("true", "1", "1.0", "yes"):
        return True
    if s in ("false", "0", "0.0", "no"):
        return False
    return None


def _options_from_question(text: str) -> dict[str, str]:
    return {m[1]: m[2].strip() for m in re.finditer(r"^([A-Z])[.)]\s+(.+)$", text or "", re.M)}


def score_rows(rows: Sequence[dict[str, str]], task: str, strict: bool = False) -> list[dict[str, Any]]:
    """Per-row scores: ``{"problem_id", "correct", "error"}``; unusable rows are errors scored 0 (never dropped).

    MCQA uses ``is_correct`` when present, else compares ``selected_option`` with ``correct_option``, else
    re-extracts the letter from ``full_response`` with the options listed in ``final_question``.
    """
    out = []
    for r in rows:
        err = None
        if task == "mcqa":
            ok = _truthy(r.get("is_correct", ""))
            if ok is None:
                sel = (r.get("selected_option") or "").strip()
                if not sel and r.get("full_response"):
                    sel = prompts.extract_option(
                        r["full_response"], _options_from_question(r.get("final_question", ""))
                    )
                corr = (r.get("correct_option") or "").strip()
                ok = bool(sel) and sel == corr
                if not corr:
                    err = "no correct_option"
                elif not sel or sel == prompts.EXTRACTION_FAILED:
                    err = "no selected option"
        else:
            gen = r.get("generated_answer")
            if gen is None or str(gen).strip() == "" or str(gen).strip().lower() == "nan":
                err, ok = "empty generated_answer", False
            else:
                ok = exact_match(str(gen), r.get("true_answer", ""), strict=strict)
        out.append({"problem_id": r.get("problem_id", ""), "correct": float(bool(ok)), "error": err})
    return out


def evaluation(
    rows: Sequence[dict[str, str]], scored: Sequence[dict[str, Any]], name: dict[str, str]
) -> dict[str, Any]:
    """The original evaluation JSON keys plus the bootstrap (word_count is the real mean, not the stale value)."""
    s: Summary = bootstrap_accuracy([x["correct"] for x in scored])
    words = [len(str(r.get("generated_answer") or "").split()) for r in rows]
    return {
        "model": name.get("model", ""),
        "inference_mode": name.get("inference_mode", ""),
        "task": name.get("task", ""),
        "total_examples": len(scored),
        "original_count": len(rows),
        "excluded_count": 0,
        "correct_examples": int(sum(x["correct"] for x in scored)),
        "accuracy": s.accuracy,
        "err_count": sum(1 for x in scored if x["error"]),
        "problem_accuracies": {x["problem_id"]: x["correct"] for x in scored},
        "incorrect_examples": [x["problem_id"] for x in scored if not x["correct"]],
        "word_count": sum(words) / len(words) if words else 0.0,
        "bootstrap": s.to_json(),
    }


def score_csv(
    path: str | Path, task: str | None = None, strict: bool = False, limit: int | None = None
) -> tuple[dict[str, Any], list[dict[str, str]], list[dict[str, Any]]]:
    """``(evaluation, rows, per-row scores)`` of one result CSV (its first ``limit`` rows when given); the task
    comes from the name or the columns."""
    rows = read_csv(path)
    if limit is not None:
        rows = rows[:limit]
    name = parse_name(path)
    t = (
        task
        or name["task"]
        or ("mcqa" if rows and ("is_correct" in rows[0] or "selected_option" in rows[0]) else "open")
    )
    name["task"] = t
    scored = score_rows(rows, t, strict)
    return evaluation(rows, scored, name), rows, scored
