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


#: The original scoring counts a row as an API error when its generated answer contains this string
#: (``evaluate_EM.py``: ``"ERROR" in str(generated_answer)``, e.g. ``ERROR: API Request Failed``).
API_ERROR_MARK = "ERROR"


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a result CSV; DataError when it is missing, unreadable or lacks ``problem_id``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"result file {path} does not exist")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            if "problem_id" not in cols:
                raise DataError(f"{path} lacks column problem_id; columns found: {', '.join(cols) or 'none'}")
            return list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV ({type(exc).__name__}: {str(exc)[:120]})") from None


def check_columns(rows: Sequence[dict[str, str]], task: str, path: str | Path) -> None:
    """DataError naming what a file lacks to be scored as ``task``. Open answers need ``true_answer`` and
    ``generated_answer``; MCQA needs ``is_correct``, or ``correct_option`` with ``selected_option`` or
    ``full_response``."""
    cols = set(rows[0]) if rows else set()
    if task == "mcqa":
        if "is_correct" in cols or ("correct_option" in cols and cols & {"selected_option", "full_response"}):
            return
        need = "is_correct, or correct_option with selected_option or full_response"
    else:
        missing = [c for c in ("true_answer", "generated_answer") if c not in cols]
        if not missing:
            return
        need = ", ".join(missing)
    raise DataError(f"{path}: cannot score as {task}: needs {need}; columns found: {', '.join(sorted(cols)) or 'none'}")


def is_api_error(row: dict[str, str]) -> bool:
    """True when the row's answer is a failed API call (the original's rule, see :data:`API_ERROR_MARK`)."""
    return API_ERROR_MARK in str(row.get("generated_answer") or row.get("full_response") or "")


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
    """Per-row scores: ``{"problem_id", "correct", "error", "api_error"}``; unusable rows are errors scored 0.

    MCQA uses ``is_correct`` when present, else compares ``selected_option`` with ``correct_option``, else
    re-extracts the letter from ``full_response`` with the options listed in ``final_question``. A row whose
    answer is a failed API call is flagged ``api_error`` (scored 0 here; :func:`evaluation` can exclude it).
    """
    out = []
    for r in rows:
        err = None
        if is_api_error(r):
            out.append({"problem_id": r.get("problem_id", ""), "correct": 0.0, "error": "api error", "api_error": True})
            continue
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
        out.append({"problem_id": r.get("problem_id", ""), "correct": float(bool(ok)), "error": err,
                    "api_error": False})  # fmt: skip
    return out


def evaluation(
    rows: Sequence[dict[str, str]],
    scored: Sequence[dict[str, Any]],
    name: dict[str, str],
    errors: str = "wrong",
    seed: int = 42,
) -> dict[str, Any]:
    """The original evaluation JSON keys plus the bootstrap (word_count is the real mean, not the stale value).

    ``err_count`` counts API-error rows as the original does; ``errors="wrong"`` keeps them in the accuracy
    as wrong answers (the original's accuracy), ``"exclude"`` drops them (``excluded_count``). Other unusable
    rows (an empty answer, no option found) are ``unusable_count`` and always scored wrong."""
    if errors not in ("wrong", "exclude"):
        raise ValueError(f"errors must be 'wrong' or 'exclude', got {errors!r}")
    kept = [x for x in scored if not (errors == "exclude" and x["api_error"])]
    s: Summary = bootstrap_accuracy([x["correct"] for x in kept], seed=seed)
    words = [len(str(r.get("generated_answer") or "").split()) for r in rows]
    return {
        "model": name.get("model", ""),
        "inference_mode": name.get("inference_mode", ""),
        "task": name.get("task", ""),
        "total_examples": len(kept),
        "original_count": len(rows),
        "excluded_count": len(scored) - len(kept),
        "correct_examples": int(sum(x["correct"] for x in kept)),
        "accuracy": s.accuracy,
        "err_count": sum(1 for x in scored if x["api_error"]),
        "unusable_count": sum(1 for x in scored if x["error"] and not x["api_error"]),
        "api_errors_scored_as": errors,
        "problem_accuracies": {x["problem_id"]: x["correct"] for x in kept},
        "incorrect_examples": [x["problem_id"] for x in kept if not x["correct"]],
        "word_count": sum(words) / len(words) if words else 0.0,
        "bootstrap": s.to_json(),
    }


def score_csv(
    path: str | Path,
    task: str | None = None,
    strict: bool = False,
    limit: int | None = None,
    errors: str = "wrong",
    seed: int = 42,
) -> tuple[dict[str, Any], list[dict[str, str]], list[dict[str, Any]]]:
    """``(evaluation, rows, per-row scores)`` of one result CSV (its first ``limit`` rows when given); the task
    comes from ``task``, else the file name, else the columns (``is_correct`` / ``selected_option`` /
    ``correct_option`` mean MCQA)."""
    rows = read_csv(path)
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise DataError(f"{path}: no rows to score")
    name = parse_name(path)
    cols = set(rows[0])
    t = task or name["task"] or ("mcqa" if cols & {"is_correct", "selected_option", "correct_option"} else "open")
    check_columns(rows, t, path)
    name["task"] = t
    scored = score_rows(rows, t, strict)
    return evaluation(rows, scored, name, errors, seed), rows, scored


def reference_judgements(path: str | Path, rows: Sequence[dict[str, str]]) -> list[float | None] | None:
    """A reference LLM judge's verdict per row (1/0), or None when there is none: a ``llm_judgment`` column, else
    the original's ``<stem>_evaluationllm.json`` beside the CSV (its ``problem_accuracies`` per problem)."""
    import json

    if rows and "llm_judgment" in rows[0]:
        return [None if (v := _truthy(r.get("llm_judgment", ""))) is None else float(v) for r in rows]
    side = Path(path).with_name(f"{Path(path).stem}_evaluationllm.json")
    if not side.is_file():
        return None
    try:
        acc = json.loads(side.read_text()).get("problem_accuracies") or {}
    except (OSError, ValueError):
        raise DataError(f"{side}: not a readable evaluation JSON") from None
    out = []
    for r in rows:
        v = acc.get(str(r.get("problem_id")))
        out.append(None if v is None else float(float(v) >= 50.0 if float(v) > 1 else float(v) >= 0.5))  # % or 0-1
    return out


def agreement(ours: Sequence[float], reference: Sequence[float | None]) -> dict[str, float | int]:
    """Raw agreement and Cohen's kappa of two 0/1 judges over the rows both judged."""
    from sklearn.metrics import cohen_kappa_score

    pairs = [(int(a), int(b)) for a, b in zip(ours, reference) if b is not None]
    if not pairs:
        return {"n": 0}
    a, b = zip(*pairs)
    same = sum(x == y for x, y in pairs) / len(pairs)
    kappa = float(cohen_kappa_score(a, b)) if len(set(a) | set(b)) > 1 else float("nan")
    return {"n": len(pairs), "agreement": same, "kappa": kappa}
