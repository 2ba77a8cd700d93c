"""QA loaders on tiny fixtures in the real HF formats, prompts, answer extraction and EM labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medfm.core.errors import DataError, UsageError
from medfm.methods.headentropy.qa import (
    arithmetic_domain,
    build_messages,
    exact_match,
    extract_answer,
    load_qa,
    normalize_answer,
    parse_certainty,
)

FIX = Path(__file__).parent / "fixtures"


def test_normalisation_and_exact_match():
    assert normalize_answer("The  Sunset_Boulevard!") == "sunset boulevard"
    assert normalize_answer("an Apple, a day") == "apple day"
    assert exact_match("sunset blvd.", ["Sunset Boulevard", "Sunset Blvd"])
    assert not exact_match("sunset", ["Sunset Boulevard"])
    assert not exact_match("", ["x"])


@pytest.mark.parametrize(
    ("generation", "expected"),
    [
        ("Answer: Paris\nCertainty: 90", "Paris"),
        ("I think. Answer: wrong\nanswer: Lima Certainty: 80", "Lima"),
        ("Answer: Lima: 85", "Lima"),
        ("The answer is 42.", "42"),
        ("Answer: 6 * 6 = 36.", "36"),
        ("Answer: Atrophy. It is common.", "Atrophy"),
        ("\n\nBerlin\nmore text", "Berlin"),
        ("", ""),
    ],
)
def test_extract_answer(generation, expected):
    assert extract_answer(generation) == expected


def test_parse_certainty():
    assert parse_certainty("Answer: x\nCertainty: 85") == pytest.approx(0.85)
    assert parse_certainty("Answer: x") is None
    assert parse_certainty("certainty: 250") == 1.0


def test_triviaqa_hotpotqa_medmcqa_formats():
    tqa = load_qa(FIX / "triviaqa_rc_nocontext.jsonl")
    assert [it.id for it in tqa] == ["tc_33", "tc_40"]
    assert "sunset blvd" in tqa[0].answers and "Sunset Boulevard" in tqa[0].answers
    assert tqa[0].style == "triviaqa" and tqa[0].domain == "triviaqa"
    assert build_messages(tqa[1])[1]["content"] == "Question: Who was the man behind The Chipmunks?"

    hot = load_qa(FIX / "hotpotqa_distractor.jsonl", fmt="hotpotqa")
    assert hot[0].answers == ["yes"]
    assert hot[0].context.splitlines() == [
        "Ed Wood is a 1994 American biographical period comedy-drama film.",
        "It stars Johnny Depp.",
        "Scott Derrickson (born July 16, 1966) is an American director.",
        "He lives in Los Angeles.",
    ]
    user = build_messages(hot[0])[1]["content"]
    assert user.startswith("Question:\nWere Scott") and "\nContext:\nEd Wood is" in user

    med = load_qa(FIX / "medmcqa.jsonl")
    assert med[0].answers == ["Atrophy"] and med[0].options[2] == "Atrophy"
    msgs = build_messages(med[1])
    assert msgs[0]["content"].startswith("You are a medical expert")
    # the repo's quirk: only the question's last sentence, then the four options one per line
    assert msgs[1]["content"].splitlines() == ["Which vitamin is also known as pyridoxine?", "Vitamin B1",
                                               "Vitamin B2", "Vitamin B6", "Vitamin B12"]  # fmt: skip


def test_parquet_and_our_jsonl(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    rows = [json.loads(x) for x in (FIX / "hotpotqa_distractor.jsonl").read_text().splitlines()]
    pd.DataFrame(rows).to_parquet(tmp_path / "validation-00000-of-00001.parquet")
    hot = load_qa(tmp_path / "validation-00000-of-00001.parquet")
    assert hot[1].answers == ["Chief of Protocol"] and "Shirley Temple" in hot[1].context

    ours = load_qa(FIX / "ours.jsonl", fmt="jsonl")
    assert [it.style for it in ours] == ["triviaqa", "hotpotqa", "medmcqa"]
    assert ours[2].answers == ["heart"] and ours[1].domain == "cxr"


def test_bad_inputs(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q?", "answers": []}\n')
    with pytest.raises(DataError, match="no gold answer"):
        load_qa(bad, fmt="jsonl")
    med = tmp_path / "test.jsonl"
    med.write_text('{"id": "1", "question": "q", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": -1}\n')
    with pytest.raises(DataError, match="no gold answer"):
        load_qa(med)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(DataError, match="line 1"):
        load_qa(broken)
    with pytest.raises(DataError, match="does not exist"):
        load_qa(tmp_path / "missing.jsonl")
    with pytest.raises(UsageError):
        load_qa("builtin:nope")


def test_generated_domains_have_ground_truth():
    items = arithmetic_domain(50, seed=1)
    for it in items:
        a, op, b = it.question[len("What is ") : -1].split()
        assert int(it.answers[0]) == eval(f"{a}{op}{b}")
    assert items == arithmetic_domain(50, seed=1)
