"""Prompts of the SMMILE harness (spec §2.2): open-ended and multiple-choice chats, the judge, answer extraction.

* 0-shot: [system] + one user turn (query image + question).
* ICL: [system] + per example a user turn (image + question) and its answer in an ``assistant`` turn (or a
  ``system`` turn, the released GPT-4o script's quirk, with ``answer_role="system"``), then the query turn.
* Text-only baseline: no images; one user turn listing the examples as "question answer" lines, then the query.
* MCQA: options are the unique answers of all rows of the problem in first-occurrence order, shuffled with a
  seeded generator and lettered A, B, C...; the query is followed by the list and an instruction to think in
  ``<think>`` and answer with one letter in ``<answer>``. :func:`extract_option` is the extraction cascade.
* Judge: one user turn with question, correct answer and model output asking for one digit; only an exact
  ``1`` or ``0`` is accepted (:func:`parse_judge`), anything else is a format error scored as incorrect.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any

from medfm.backends.base import ChatMessage
from medfm.methods.smmile.data import SmmileRow

SYSTEM_PROMPTS = {
    "none": "",
    "physician": "You are a highly skilled physician and an excellent writer. Answer the medical question about "
    "the image concisely, in the same format as the example answers.",
    "expert": "You are an expert medical professional. Answer the question about the image concisely.",
    "text_only": "You are an expert medical QA system. Answer the question concisely in the same format as the "
    "examples.",
}
EXTRACTION_FAILED = "EXTRACTION_FAILED"


def system_text(name_or_text: str) -> str:
    """A named system prompt (``none``, ``physician``, ``expert``, ``text_only``) or the given text itself."""
    return SYSTEM_PROMPTS.get(name_or_text, name_or_text)


def _turn(row: SmmileRow, text: str, with_image: bool) -> ChatMessage:
    return ChatMessage("user", text, [row.image] if with_image and row.image is not None else [])


def build_messages(
    examples: Sequence[SmmileRow],
    query: SmmileRow,
    *,
    system_prompt: str = "",
    answer_role: str = "assistant",
    text_only: bool = False,
    query_text: str | None = None,
) -> list[ChatMessage]:
    """Chat messages for one problem instance.

    Args:
        examples: in-context examples in presentation order (empty for zero-shot).
        query: the query row.
        system_prompt: system text ("" for none).
        answer_role: role of the example answers: ``assistant`` (default) or ``system`` (GPT-4o script quirk).
        text_only: drop every image and list the examples as "question answer" lines in one user turn.
        query_text: text of the query turn (default: its question; MCQA passes question + options).
    """
    if answer_role not in ("assistant", "system"):
        raise ValueError(f"answer_role must be 'assistant' or 'system', got {answer_role!r}")
    qtext = query.question if query_text is None else query_text
    msgs: list[ChatMessage] = [ChatMessage("system", system_prompt)] if system_prompt else []
    if text_only:
        lines = [f"{ex.question} {ex.answer}" for ex in examples]
        body = ("Examples:\n" + "\n".join(lines) + "\n\n" if lines else "") + f"Question: {qtext}\nAnswer:"
        msgs.append(ChatMessage("user", body))
        return msgs
    for ex in examples:
        msgs.append(_turn(ex, ex.question, True))
        msgs.append(ChatMessage(answer_role, ex.answer))
    msgs.append(_turn(query, qtext, True))
    return msgs


# ----------------------------------------------------------------------------------------------------------------------
# Answers


def extract_answer(text: str, mode: str = "full") -> str:
    """The generated answer: the whole text (``full``, the original) or its first non-empty line (``first_line``)."""
    text = (text or "").strip()
    if mode == "first_line":
        return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if mode != "full":
        raise ValueError(f"answer extraction must be 'full' or 'first_line', got {mode!r}")
    return text


# ----------------------------------------------------------------------------------------------------------------------
# MCQA


def unique_answers(rows: Sequence[SmmileRow]) -> list[str]:
    """Unique answers of all rows (examples + query) in first-occurrence order (exact string match)."""
    seen: list[str] = []
    for r in rows:
        if r.answer not in seen:
            seen.append(r.answer)
    return seen


def mcqa_options(rows: Sequence[SmmileRow], query_answer: str, rng: Any) -> tuple[dict[str, str], str]:
    """``({letter: option}, correct_letter)``: the problem's unique answers shuffled by ``rng`` and lettered.

    Args:
        rows: all rows of the problem (examples + query).
        query_answer: the query's answer (one of the options).
        rng: a ``numpy.random.Generator`` (seeded per problem by the caller).
    """
    answers = unique_answers(rows)
    perm = rng.permutation(len(answers))
    options = {string.ascii_uppercase[i]: answers[j] for i, j in enumerate(perm)}
    correct = next(k for k, v in options.items() if v == query_answer)
    return options, correct


def mcqa_text(question: str, options: dict[str, str]) -> str:
    """Query text with the lettered options and the think/answer instruction."""
    opts = "\n".join(f"{k}. {v}" for k, v in options.items())
    letters = ", ".join(options)
    return (
        f"{question}\n\nOptions:\n{opts}\n\nThink step by step inside <think></think> tags, then give only the "
        f"letter of the correct option ({letters}) inside <answer></answer> tags."
    )


_FALLBACKS = [
    r"answer\s*(?:is|:)\s*\**\(?([A-Z])\b",
    r"\*\*answer:?\*\*\s*:?\s*\(?([A-Z])\b",
    r"correct\s+(?:answer|option|choice)\s*(?:is|would be|:)?\s*:?\s*\**\(?([A-Z])\b",
    r"(?:final|best)\s+(?:answer|option|choice)\s*(?:is|:)?\s*:?\s*\**\(?([A-Z])\b",
    r"\boption\s*\(?([A-Z])\)?\b",
    r"\bchoice\s*\(?([A-Z])\)?\b",
    r"\bletter\s*\(?([A-Z])\)?\b",
    r"(?:i\s+(?:would\s+)?(?:choose|select|pick))\s*(?:option\s*)?\(?([A-Z])\b",
    r"(?:select|choose|pick)\s*(?:option\s*)?\(?([A-Z])\)?\b",
    r"\(([A-Z])\)",
    r"\b([A-Z])\)\s",
    r"^\s*([A-Z])[.:)]\s",
    r"^\s*\**([A-Z])\**\s*$",
    r"\b([A-Z])\s+is\s+(?:the\s+)?correct",
    r"\b([A-Z])\s+is\s+(?:the\s+)?(?:right|best)\s+answer",
    r"answer\s+would\s+be\s+\(?([A-Z])\b",
    r"go\s+with\s+(?:option\s+)?\(?([A-Z])\b",
    r"\banswer\W+([A-Z])\b",
    r"<answer>\s*\(?([A-Z])",
]


def extract_option(text: str, options: dict[str, str]) -> str:
    """The selected letter, by the cascade: ``<answer>`` tag, regex fallbacks, a standalone capital,
    option-text containment; else :data:`EXTRACTION_FAILED` (scored as wrong).

    Args:
        text: the model's full response.
        options: ``{letter: option text}``; only these letters count.
    """
    text = text or ""
    valid = set(options)
    m = re.search(r"<answer>(.*?)(?:</answer>|$)", text, re.S | re.I)
    if m:
        letter = next((c for c in m.group(1) if c in valid), None)
        if letter:
            return letter
    body = re.sub(r"<think>.*?</think>", " ", text, flags=re.S | re.I)
    for pattern in _FALLBACKS:
        for hit in re.finditer(pattern, body, re.I | re.M):
            letter = hit.group(1)
            if letter in valid:  # case-insensitive context, but the letter itself must be a capital
                return letter
    standalone = [c for c in re.findall(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])", body) if c in valid]
    if standalone:
        return standalone[0]
    low = body.lower()
    contained = [k for k, v in options.items() if v.strip() and v.strip().lower().rstrip(".") in low]
    if len(contained) == 1:
        return contained[0]
    return EXTRACTION_FAILED


# ----------------------------------------------------------------------------------------------------------------------
# Judge


def judge_prompt(question: str, true_answer: str, generated: str) -> str:
    """The binary judge's single user message (paraphrase of the original)."""
    return (
        "You are grading an answer to a medical question.\n"
        f"Question: {question}\n"
        f"Correct answer: {true_answer}\n"
        f"Model output: {generated}\n"
        "Is the model output correct, i.e. does it give the same answer as the correct answer? Reply with exactly "
        "one digit: 1 if correct, 0 if incorrect. Nothing else."
    )


def parse_judge(text: str) -> int | None:
    """1 or 0 for an exact ``1``/``0`` reply (surrounding whitespace ignored); None is a format error."""
    t = (text or "").strip()
    return int(t) if t in ("0", "1") else None
