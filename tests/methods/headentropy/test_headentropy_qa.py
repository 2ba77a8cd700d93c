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


def test_label_modes_numbered_and_verbose_answers():
    from medfm.methods.headentropy.qa import extract_answer, is_correct

    assert extract_answer("Answer: 1. Yes.") == "Yes"  # a numbered answer is not the answer "1"
    assert extract_answer("Answer: - Paris\nCertainty: 80") == "Paris"
    verbose = "Yes, there is a small left pleural effusion"
    assert is_correct(verbose, ["yes"], "contains") and not is_correct(verbose, ["yes"], "exact")
    assert not is_correct("No, but yes on the right", ["yes"], "contains")  # the first yes/no word decides
    assert is_correct("Swiss Franc", ["Franc"], "contains") and is_correct("franc", ["Franc"], "exact")
    assert is_correct("Swiss Franc", ["Franc"], "token_f1") and not is_correct("the Swiss national franc coin",
                                                                             ["Franc"], "token_f1")  # fmt: skip
    opts = ["pneumonia", "pleural effusion", "atelectasis"]
    assert is_correct("pleural effusion", ["pleural effusion"], "contains", opts)
    assert not is_correct("pleural effusion or pneumonia", ["pleural effusion"], "contains", opts)  # no choice
    assert not is_correct("", ["x"], "contains")
    with pytest.raises(Exception, match="label mode"):
        is_correct("x", ["x"], "fuzzy")


def test_format_detector_and_certainty_line():
    from medfm.methods.headentropy.extract import certainty_start, format_ok

    assert format_ok("Answer: China") == 1.0
    assert format_ok("Answer: China\nCertainty: 90") == 1.0
    assert format_ok("Answer: France is a European nation-state located in Europe") == 0.0  # over 5 words
    assert format_ok("Answer: Panama\n\nThe answer is: Panama") == 0.0  # rambles on
    assert format_ok("China") == 0.0
    text = "Answer: uncertain mass\nCertainty: 40"
    assert text[certainty_start(text) :].startswith("Certainty")  # "uncertain" is not the certainty line
    assert certainty_start("Answer: uncertain") is None


def test_geonames_domains_are_real_tables():
    from medfm.methods.headentropy.qa import load_qa

    for name in ("countries", "cities", "us-counties"):
        items = load_qa(f"builtin:{name}", limit=50, seed=3)
        assert len(items) == 50 and len({it.id for it in items}) == 50
        assert all(it.answers and it.domain == name for it in items)
    caps = {it.question: it.answers for it in load_qa("builtin:countries", limit=2000)}
    assert caps["What is the capital of France?"] == ["Paris"]
    assert "Europe" in caps["On which continent is France?"]
    yn = load_qa("builtin:radlabels-yn", limit=600)
    assert len(yn) == 600 and {it.answers[0] for it in yn} == {"yes", "no"} and all(it.context for it in yn)
