"""Running a backend on problem instances: requests, scoring, judge, baselines and a resumable response store.

Per instance the harness builds one chat request (:mod:`.prompts`), sends instances in batches through the
backend (HTTP backends answer a batch concurrently; local models batch on the device), and scores the answer:
normalised exact match for open questions, the extracted letter for MCQA. Records are appended to a JSONL
response store after each batch, so an interrupted run resumes where it stopped (records whose call failed are
retried); wrapping the backend in :class:`medfm.backends.cache.CachedBackend` additionally makes every answered
call free on a rerun.

A record (one per instance and task) holds the original result-CSV columns (``problem_id`` = instance id,
``final_question, true_answer, generated_answer, full_response`` and for MCQA ``correct_option,
selected_option, is_correct``) plus scores (``em``, ``mcqa``, ``judge``), baseline scores, strata and errors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfm.backends.base import Backend, GenerationRequest
from medfm.methods.smmile import prompts
from medfm.methods.smmile.conditions import Instance, problem_rng
from medfm.methods.smmile.data import FLAG_FIELDS
from medfm.methods.smmile.metrics import (
    contains_match,
    exact_match,
    majority_answer,
    nearest_image_answer,
    normalize_answer,
    random_answer,
)

log = logging.getLogger(__name__)
TASKS = ("open", "mcqa")
BASELINES = ("majority", "random", "nearest_image")


@dataclass
class HarnessOptions:
    """How instances are turned into requests and scored (see :class:`medfm.methods.smmile.config.RunConfig`)."""

    task: str = "open"
    system_prompt: str = ""
    answer_role: str = "assistant"
    text_only: bool = False
    max_tokens: int = 512
    temperature: float = 0.0
    answer_extraction: str = "full"
    strict_match: bool = False
    batch_size: int = 8
    seed: int = 0


def build_request(inst: Instance, opts: HarnessOptions) -> tuple[GenerationRequest, dict[str, Any]]:
    """The request for one instance and the MCQA bookkeeping (``options``, ``correct_option``) if any."""
    info: dict[str, Any] = {}
    qtext = inst.query.question
    if opts.task == "mcqa":
        options, correct = prompts.mcqa_options(
            inst.problem.rows, inst.query.answer, problem_rng(opts.seed, inst.instance_id, 3)
        )
        qtext = prompts.mcqa_text(inst.query.question, options)
        info = {"options": options, "correct_option": correct}
    msgs = prompts.build_messages(
        inst.examples,
        inst.query,
        system_prompt=opts.system_prompt,
        answer_role=opts.answer_role,
        text_only=opts.text_only,
        query_text=qtext,
    )
    req = GenerationRequest(msgs, max_tokens=opts.max_tokens, temperature=opts.temperature, seed=opts.seed)
    info["final_question"] = qtext
    return req, info


def _strata(inst: Instance) -> dict[str, Any]:
    q = normalize_answer(inst.query.answer)
    ex = inst.examples
    return {
        **inst.problem.flags(),
        "n_examples": len(ex),
        "first_example_matches": bool(ex) and normalize_answer(ex[0].answer) == q,
        "last_example_matches": bool(ex) and normalize_answer(ex[-1].answer) == q,
        "any_example_matches": any(normalize_answer(e.answer) == q for e in ex),
    }


def baseline_scores(
    inst: Instance, seed: int, embedder: Callable[[Sequence[Any]], np.ndarray] | None
) -> dict[str, Any]:
    """Majority, random and nearest-image answers for an instance and whether each equals the query's answer.

    Undefined (None) without in-context examples; ``nearest_image`` needs images and an embedder.
    """
    answers = [e.answer for e in inst.examples]
    if not answers:
        return {f"baseline_{b}": None for b in BASELINES}
    truth = inst.query.answer
    out = {
        "baseline_majority": float(exact_match(majority_answer(answers), truth)),
        "baseline_random": float(exact_match(random_answer(answers, problem_rng(seed, inst.instance_id, 4)), truth)),
        "baseline_nearest_image": None,
    }
    images = [e.image for e in inst.examples]
    if embedder is not None and inst.query.image is not None and all(im is not None for im in images):
        nn = nearest_image_answer(images, answers, inst.query.image, embedder)
        out["baseline_nearest_image"] = float(exact_match(nn, truth))
    return out


def score_response(
    inst: Instance, info: dict[str, Any], text: str, error: str | None, opts: HarnessOptions
) -> dict[str, Any]:
    """One record (see module docstring) from the backend's answer."""
    rec: dict[str, Any] = {
        "problem_id": inst.instance_id,
        "source_problem_id": inst.problem.problem_id,
        "condition": inst.condition,
        "task": opts.task,
        "final_question": info["final_question"],
        "true_answer": inst.query.answer,
        "full_response": text or "",
        "error": error,
        "meta": inst.meta,
        **_strata(inst),
    }
    if opts.task == "mcqa":
        sel = prompts.extract_option(text or "", info["options"])
        rec.update(
            correct_option=info["correct_option"],
            selected_option=sel,
            is_correct=sel == info["correct_option"],
            generated_answer=info["options"].get(sel, sel),
            options=info["options"],
            extraction_failed=sel == prompts.EXTRACTION_FAILED,
        )
        rec["mcqa"] = float(rec["is_correct"])
    else:
        ans = prompts.extract_answer(text or "", opts.answer_extraction)
        rec["generated_answer"] = ans
        rec["em"] = float(exact_match(ans, inst.query.answer, strict=opts.strict_match))
    return rec


class ResponseStore:
    """Append-only JSONL of records; :meth:`done` gives the finished ones (failed calls are retried)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line from an interrupted write
        return out

    def done(self) -> dict[str, dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        for r in self.read():
            latest[r["problem_id"]] = r
        return {k: r for k, r in latest.items() if not r.get("error")}

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps(r, default=str) + "\n")
            fh.flush()

    def rewrite(self, records: Iterable[dict[str, Any]]) -> None:
        from medfm.core.files import atomic_write_text

        atomic_write_text(self.path, "".join(json.dumps(r, default=str) + "\n" for r in records))


def run_instances(
    instances: Sequence[Instance],
    backend: Backend,
    opts: HarnessOptions,
    store: ResponseStore | None = None,
    embedder: Callable[[Sequence[Any]], np.ndarray] | None = None,
    desc: str = "",
    baselines: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Answer and score every instance (resuming from ``store``); returns records in instance order.

    ``baselines``: a dict shared by the tasks of one condition, so each instance's baseline answers (the
    nearest-image one embeds every image) are computed once, not once per task.
    """
    baselines = {} if baselines is None else baselines
    from medfm.core.runs import progress

    done = store.done() if store is not None else {}
    todo = [i for i in instances if i.instance_id not in done]
    if done:
        log.info(
            "smmile %s: %d of %d instances already answered (resuming)",
            desc,
            len(instances) - len(todo),
            len(instances),
        )
    bs = max(1, int(opts.batch_size))
    batches = [todo[i : i + bs] for i in range(0, len(todo), bs)]
    for batch in progress(batches, desc=f"smmile {desc}".strip(), total=len(batches)):
        built = [build_request(inst, opts) for inst in batch]
        answers = backend.generate([b[0] for b in built])
        recs = []
        for inst, (_req, info), resp in zip(batch, built, answers):
            rec = score_response(inst, info, resp.text if resp.ok else "", resp.error, opts)
            rec["model"] = resp.model or backend.model_name
            if inst.instance_id not in baselines:
                baselines[inst.instance_id] = baseline_scores(inst, opts.seed, embedder)
            rec.update(baselines[inst.instance_id])
            recs.append(rec)
            done[inst.instance_id] = rec
        if store is not None:
            store.append(recs)
    return [done[i.instance_id] for i in instances]


def judge_records(
    records: list[dict[str, Any]], judge: Backend | str, batch_size: int = 8, max_tokens: int = 4
) -> dict[str, int]:
    """Add ``judge`` (1/0), ``judge_raw`` and ``judge_format_error`` to open-task records in place.

    Args:
        records: records from :func:`run_instances` (only ``task == "open"`` ones are judged; judged ones kept).
        judge: a backend (the LLM judge) or ``"contains"`` (rule stand-in: the normalised true answer occurs in
            the normalised output).
        batch_size: requests per backend call.
        max_tokens: tokens the judge may generate (the accepted reply is one digit).

    Returns:
        Counts: ``judged``, ``format_errors`` (replies other than exactly 1 or 0, scored 0), ``call_errors``.
    """
    todo = [r for r in records if r.get("task") == "open" and "judge" not in r]
    counts = {"judged": 0, "format_errors": 0, "call_errors": 0}
    if isinstance(judge, str):
        if judge != "contains":
            raise ValueError(f"judge must be a backend or 'contains', got {judge!r}")
        for r in todo:
            r["judge"] = float(contains_match(r.get("generated_answer", ""), r["true_answer"]))
            r["judge_raw"], r["judge_format_error"] = "contains", False
            counts["judged"] += 1
        return counts
    for i in range(0, len(todo), batch_size):
        chunk = todo[i : i + batch_size]
        reqs = [
            GenerationRequest.of(
                prompts.judge_prompt(_plain_question(r), r["true_answer"], r.get("generated_answer", "")),
                max_tokens=max_tokens,
                temperature=0.0,
            )
            for r in chunk
        ]
        for r, resp in zip(chunk, judge.generate(reqs)):
            if not resp.ok:
                r["judge"], r["judge_raw"], r["judge_format_error"] = 0.0, "", True
                r["judge_error"] = resp.error
                counts["call_errors"] += 1
                continue
            v = prompts.parse_judge(resp.text)
            r["judge_raw"] = resp.text
            r["judge_format_error"] = v is None
            r["judge"] = float(v or 0)
            counts["format_errors"] += int(v is None)
            counts["judged"] += 1
    return counts


def _plain_question(rec: dict[str, Any]) -> str:
    return str(rec.get("final_question", "")).split("\n\nOptions:")[0]


FIELDS_FOR_BREAKDOWN = (*FLAG_FIELDS, "n_examples", "first_example_matches", "last_example_matches")
