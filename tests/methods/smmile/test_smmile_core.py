"""Unit tests of the SMMILE harness core against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from medfm.backends.scripted import ScriptedBackend
from medfm.core.errors import DataError
from medfm.methods.smmile import prompts
from medfm.methods.smmile.conditions import expand, permutation_orders
from medfm.methods.smmile.data import Problem, SmmileRow, load_problems, rows_to_problems
from medfm.methods.smmile.harness import judge_records
from medfm.methods.smmile.metrics import (
    bootstrap_accuracy,
    exact_match,
    majority_answer,
    normalize_answer,
    random_answer,
)
from medfm.methods.smmile.rescore import score_csv


def _img(v: int) -> Image.Image:
    return Image.fromarray(np.full((8, 8), v, np.uint8))


def _problem(pid: str, answers: list[str], spec: str = "radiology", cog: str = "classification/diagnosis") -> Problem:
    rows = [
        SmmileRow(pid, i, f"q{i}?", a, _img(10 * i + 1), speciality=spec, flag_cognitive_process=cog)
        for i, a in enumerate(answers)
    ]
    return Problem(pid, rows[:-1], rows[-1])


def test_normalisation_and_exact_match():
    assert normalize_answer("  Epidural   hematoma, LEFT. ") == "epidural hematoma left"
    assert exact_match("epidural hematoma left", "Epidural hematoma, left.")
    assert not exact_match("epidural hematoma left", "Epidural hematoma, left.", strict=True)
    assert not exact_match("Yes", "No.")


def test_permutation_counts_match_smmile_plus_plus():
    rng = np.random.default_rng(0)
    assert permutation_orders(2, 24, rng) == [(0, 1), (1, 0)]
    assert len(permutation_orders(3, 24, rng)) == 6
    five = permutation_orders(5, 24, rng)
    assert len(five) == 24 and len(set(five)) == 24 and all(sorted(p) == list(range(5)) for p in five)
    # SMMILE++: 27 problems with k=2, 24 with k=3, 35 with k>=4 -> 27*2 + 24*6 + 35*24 = 1038
    ks = [2] * 27 + [3] * 24 + [4] * 20 + [5] * 10 + [9] * 5
    assert sum(min(math.factorial(k), 24) for k in ks) == 1038


def test_permutation_condition_ids_and_reasoning_excluded():
    probs = [_problem("a", ["x", "y", "x", "y"]), _problem("b", ["x", "y", "x"], cog="reasoning classification")]
    inst, excluded = expand(probs, "permutations", seed=1)
    assert [i.instance_id for i in inst] == [f"a_perm_{n}" for n in range(1, 7)]
    assert excluded == [{"problem_id": "b", "reason": "reasoning problem (excluded from SMMILE++)"}]
    assert all(i.query is probs[0].query for i in inst)


def test_bootstrap_mean_std():
    s = bootstrap_accuracy([1.0] * 10)
    assert s.accuracy == 100 and s.boot_mean == 100 and s.boot_std == 0
    scores = [1.0] * 30 + [0.0] * 70
    s = bootstrap_accuracy(scores, 1000, 42)
    assert s.accuracy == pytest.approx(30.0)
    assert abs(s.boot_mean - 30.0) < 0.6
    assert s.boot_std == pytest.approx(100 * math.sqrt(0.3 * 0.7 / 100), rel=0.12)  # 4.58
    assert s.ci[0] < 30 < s.ci[1]
    assert bootstrap_accuracy(scores, 1000, 42) == s  # seeded


def test_mcqa_options_and_extraction_cascade():
    rows = _problem("p", ["left", "right", "left", "bilateral"]).rows
    opts, correct = prompts.mcqa_options(rows, "bilateral", np.random.default_rng(3))
    assert sorted(opts.values()) == ["bilateral", "left", "right"] and list(opts) == ["A", "B", "C"]
    assert opts[correct] == "bilateral"
    again, c2 = prompts.mcqa_options(rows, "bilateral", np.random.default_rng(3))
    assert again == opts and c2 == correct
    o = {"A": "left", "B": "right", "C": "bilateral"}
    assert prompts.extract_option("<think>B or C?</think><answer>C</answer>", o) == "C"
    assert prompts.extract_option("The answer is B.", o) == "B"
    assert prompts.extract_option("I would choose option A here", o) == "A"
    assert prompts.extract_option("**Answer:** C", o) == "C"
    assert prompts.extract_option("It is on the right side", o) == "B"  # option-text containment
    assert prompts.extract_option("the answer is a mystery", o) == prompts.EXTRACTION_FAILED
    assert prompts.extract_option("", o) == prompts.EXTRACTION_FAILED


def test_judge_parsing_and_format_errors_counted():
    assert prompts.parse_judge("1") == 1 and prompts.parse_judge(" 0\n") == 0
    assert prompts.parse_judge("1.") is None and prompts.parse_judge("Yes") is None
    replies = iter(["1", "0", "The answer is correct"])
    judge = ScriptedBackend(lambda req: next(replies))
    recs = [{"task": "open", "final_question": "q", "true_answer": "a", "generated_answer": g} for g in ("a", "b", "c")]
    counts = judge_records(recs, judge, batch_size=2)
    assert [r["judge"] for r in recs] == [1.0, 0.0, 0.0]
    assert counts == {"judged": 3, "format_errors": 1, "call_errors": 0}
    assert [r["judge_format_error"] for r in recs] == [False, False, True]


def test_message_layouts():
    p = _problem("p", ["Yes.", "No.", "Yes."])
    msgs = prompts.build_messages(p.examples, p.query, system_prompt="sys")
    assert [m.role for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [len(m.images) for m in msgs] == [0, 1, 0, 1, 0, 1]
    assert msgs[2].content == "Yes." and msgs[-1].content == "q2?"
    quirk = prompts.build_messages(p.examples, p.query, answer_role="system")
    assert [m.role for m in quirk] == ["user", "system", "user", "system", "user"]
    zero = prompts.build_messages([], p.query)
    assert [m.role for m in zero] == ["user"] and zero[0].images
    text = prompts.build_messages(p.examples, p.query, system_prompt="s", text_only=True)
    assert len(text) == 2 and not any(m.images for m in text)
    assert "q0? Yes.\nq1? No." in text[1].content and text[1].content.endswith("Question: q2?\nAnswer:")


def test_baselines():
    assert majority_answer(["a", "b", "b", "a"]) == "a"  # Counter.most_common keeps first-seen on ties
    assert majority_answer(["a", "b", "b"]) == "b"
    rng = np.random.default_rng(0)
    picks = {random_answer(["a", "b", "c"], rng) for _ in range(50)}
    assert picks == {"a", "b", "c"}


def test_baselines_embed_each_instance_once_across_tasks():
    from medfm.methods.smmile.experiment import run_experiment
    from medfm.methods.smmile.harness import HarnessOptions

    problems = [_problem("p1", ["a", "b", "a"]), _problem("p2", ["x", "y", "x", "y"])]
    calls = []

    def embedder(images):
        calls.append(len(images))
        return np.stack([np.asarray(im, np.float32).ravel() for im in images])

    res = run_experiment(problems, ScriptedBackend(lambda req: "a"), conditions=["icl"], tasks=["open", "mcqa"],
                         opts=HarnessOptions(max_tokens=4), embedder=embedder)  # fmt: skip
    assert len(calls) == 2  # one nearest-image embedding per instance, shared by the open and MCQA tasks
    nearest = {t: [r["baseline_nearest_image"] for r in res[("icl", t)]["records"]] for t in ("open", "mcqa")}
    assert nearest["open"] == nearest["mcqa"] and None not in nearest["open"]


def test_noise_injection_targeted_and_seeded():
    probs = [_problem("a", ["1", "2", "3"], "derm"), _problem("b", ["4", "5", "6"], "derm"),
             _problem("c", ["7", "8", "9"], "rad"), _problem("d", ["x", "y"], "eye")]  # fmt: skip
    inst, excluded = expand(probs, "targeted_noise", seed=5)
    by = {i.instance_id: i for i in inst}
    assert by["a"].meta["noise_problem"] == "b" and by["b"].meta["noise_problem"] == "a"
    assert {e["problem_id"] for e in excluded} == {"c", "d"}
    assert len(by["a"].examples) == 3
    pos = by["a"].meta["noise_position"]
    assert by["a"].examples[pos].problem_id == "b"
    again, _ = expand(probs, "targeted_noise", seed=5)
    assert [i.meta for i in again] == [i.meta for i in inst]
    rnd, _ = expand(probs, "random_noise", seed=5)
    assert len(rnd) == 4 and all(i.meta["noise_problem"] != i.instance_id for i in rnd)


def test_ordering_conditions():
    p = _problem("p", ["A", "B", "C", "B"])  # example 1 matches the query answer
    last, _ = expand([p], "order_last")
    assert [e.answer for e in last[0].examples] == ["A", "C", "B"]
    first, _ = expand([p], "order_first")
    assert [e.answer for e in first[0].examples] == ["B", "A", "C"]
    not_last, _ = expand([p], "order_not_last")
    assert not_last[0].examples[-1].answer != "B"
    not_first, _ = expand([p], "order_not_first")
    assert not_first[0].examples[0].answer != "B"
    none, excluded = expand([_problem("q", ["A", "C", "B"])], "order_last")
    assert none == [] and excluded[0]["reason"] == "no in-context example has the query's answer"


def _write_rows(tmp_path, rows):
    (tmp_path / "img.png").parent.mkdir(parents=True, exist_ok=True)
    _img(100).save(tmp_path / "img.png")
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_loader_groups_sorts_and_reports_bad_problems(tmp_path):
    rows = [
        {"problem_id": "p1", "order": 2, "question": "q", "answer": "query", "image": "img.png"},
        {"problem_id": "p1", "order": 0, "question": "q", "answer": "first", "image": "img.png", "author": "x"},
        {"problem_id": "p1", "order": 1, "question": "q", "answer": "second", "image": "img.png"},
        {"problem_id": "single", "order": 0, "question": "q", "answer": "a", "image": "img.png"},
        {"problem_id": "empty", "order": 0, "question": "q", "answer": "a", "image": "img.png"},
        {"problem_id": "empty", "order": 1, "question": "q", "answer": " ", "image": "img.png"},
        {"problem_id": "noimg", "order": 0, "question": "q", "answer": "a", "image": None},
        {"problem_id": "noimg", "order": 1, "question": "q", "answer": "b", "image": "img.png"},
    ]
    ps = load_problems(_write_rows(tmp_path, rows))
    assert [p.problem_id for p in ps.problems] == ["p1"]
    p = ps.problems[0]
    assert [r.answer for r in p.examples] == ["first", "second"] and p.query.answer == "query"
    assert p.examples[0].extra == {"author": "x"}
    reasons = {s["problem_id"]: s["reason"] for s in ps.skipped}
    assert set(reasons) == {"single", "empty", "noimg"}
    assert "one row" in reasons["single"] and "empty answer" in reasons["empty"] and "no image" in reasons["noimg"]


def test_url_images_need_the_cache_offline(tmp_path):
    url = "https://example.org/cases/ct_001.png"
    rows = [
        {"problem_id": "u", "order": 0, "question": "q", "answer": "a", "image": None, "image_url": url},
        {"problem_id": "u", "order": 1, "question": "q", "answer": "b", "image": "img.png"},
    ]
    path = _write_rows(tmp_path, rows)
    with pytest.raises(DataError, match=r"only a URL.*ct_001\.png"):
        load_problems(path)
    cache = tmp_path / "cache"
    cache.mkdir()
    _img(50).save(cache / "ct_001.png")
    ps = load_problems(path, image_dir=cache)
    assert len(ps.problems) == 1 and ps.problems[0].examples[0].image == cache / "ct_001.png"
    with pytest.raises(DataError, match="lacks column"):
        rows_to_problems([{"problem_id": "x", "order": 0, "question": "q"}])


def test_hf_parquet_fixture_written_with_pandas(tmp_path):
    import io

    import pandas as pd

    def png(v):
        buf = io.BytesIO()
        _img(v).save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}

    df = pd.DataFrame(
        [
            {"problem_id": "h", "order": 1, "question": "Side?", "answer": "Left.", "image": png(20),
             "image_url": "https://x/1.png", "speciality": "radiology", "flag_answer_format": "free response",
             "flag_image_type": "CT", "flag_cognitive_process": "classification/diagnosis", "flag_rarity": "common",
             "flag_difficulty_llms": "hard"},
            {"problem_id": "h", "order": 0, "question": "Side?", "answer": "Right.", "image": png(10),
             "image_url": "https://x/0.png", "speciality": "radiology", "flag_answer_format": "free response",
             "flag_image_type": "CT", "flag_cognitive_process": "classification/diagnosis", "flag_rarity": "common",
             "flag_difficulty_llms": "hard"},
            {"problem_id": "gone", "order": 0, "question": "q", "answer": "a", "image": None, "image_url": "",
             "speciality": "other", "flag_answer_format": "", "flag_image_type": "", "flag_cognitive_process": "",
             "flag_rarity": "", "flag_difficulty_llms": ""},
            {"problem_id": "gone", "order": 1, "question": "q", "answer": "b", "image": png(5), "image_url": "",
             "speciality": "other", "flag_answer_format": "", "flag_image_type": "", "flag_cognitive_process": "",
             "flag_rarity": "", "flag_difficulty_llms": ""},
        ]
    )  # fmt: skip
    (tmp_path / "data").mkdir()
    df.to_parquet(tmp_path / "data" / "train-00000-of-00001.parquet")
    ps = load_problems(tmp_path)
    assert [p.problem_id for p in ps.problems] == ["h"]
    h = ps.problems[0]
    assert h.examples[0].answer == "Right." and h.query.answer == "Left."
    assert np.asarray(h.query.image)[0, 0] == 20 and h.flags()["flag_image_type"] == "CT"
    assert ps.skipped == [{"problem_id": "gone", "reason": "problem gone order 0 has no image"}]


def test_rescore_original_csv_layout(tmp_path):
    open_csv = tmp_path / "result_Qwen2.5-VL-7B_ICL_open.csv"
    open_csv.write_text(
        "problem_id,final_question,true_answer,generated_answer,full_response\n"
        'p1,q,"Epidural hematoma, left.",epidural hematoma left,x\n'
        "p2,q,Yes,yes.,x\n"
        "p3,q,No,Yes,x\n"
        "p4,q,Melanoma,,x\n"
        "p5,q,0.5,0.5,x\n"
    )
    ev, _, scored = score_csv(open_csv)
    assert [s["error"] for s in scored] == [None, None, None, "empty generated_answer", None]
    assert ev["model"] == "Qwen2.5-VL-7B" and ev["inference_mode"] == "ICL" and ev["task"] == "open"
    assert ev["correct_examples"] == 3 and ev["accuracy"] == pytest.approx(60.0)
    assert ev["err_count"] == 0 and ev["unusable_count"] == 1  # err_count: API errors only, as the original
    assert ev["incorrect_examples"] == ["p3", "p4"] and ev["total_examples"] == 5
    mc = tmp_path / "result_GPT-4o_0-shot_mcqa.csv"
    mc.write_text(
        "problem_id,final_question,true_answer,generated_answer,full_response,correct_option,selected_option,is_correct\n"
        "p1,q,a,a,x,A,A,True\np2,q,b,c,x,B,C,False\np3,q,c,c,x,C,C,\np4,q,d,,x,D,,\n"
    )
    ev, _, _ = score_csv(mc)
    assert ev["task"] == "mcqa" and ev["correct_examples"] == 2 and ev["unusable_count"] == 1
