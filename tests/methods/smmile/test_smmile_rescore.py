"""`medfm smmile score` on result files in the released layouts: open-ended, MCQA with and without
``true_answer``, API-error rows, broken files beside good ones, the LLM judge and its agreement (issue 26)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medfm.cli import main
from medfm.methods.smmile.rescore import agreement, reference_judgements, score_csv

OPEN = "problem_id,final_question,true_answer,generated_answer,full_response\n"
MCQA = (
    "problem_id,final_question,true_answer,generated_answer,full_response,correct_option,selected_option,is_correct\n"
)


def _open_with_errors(folder):
    path = folder / "result_gpt-4o_ICL_open.csv"
    path.write_text(OPEN + "p1,q,Left.,left,x\np2,q,Yes,no,x\np3,q,Edema,ERROR: API Request Failed,ERROR\n"
                    "p4,q,Mass,mass,x\np5,q,No,ERROR: API Request Failed,ERROR\n")  # fmt: skip
    return path


def test_api_error_rows_are_counted_and_scored_wrong_or_excluded(tmp_path):
    path = _open_with_errors(tmp_path)
    ev, _, scored = score_csv(path)
    assert [s["api_error"] for s in scored] == [False, False, True, False, True]
    assert ev["err_count"] == 2 and ev["accuracy"] == pytest.approx(40.0) and ev["total_examples"] == 5
    ev, _, _ = score_csv(path, errors="exclude")
    assert ev["err_count"] == 2 and ev["excluded_count"] == 2 and ev["total_examples"] == 3
    assert ev["accuracy"] == pytest.approx(200 / 3) and set(ev["problem_accuracies"]) == {"p1", "p2", "p4"}


def test_mcqa_scored_from_is_correct_alone_and_from_options(tmp_path):
    only = tmp_path / "result_claude_ICL_mcqa.csv"  # a released layout without true_answer
    only.write_text("problem_id,final_question,full_response,is_correct\np1,q,A,True\np2,q,B,False\np3,q,C,1\n")
    ev, _, _ = score_csv(only)
    assert ev["task"] == "mcqa" and ev["correct_examples"] == 2 and ev["accuracy"] == pytest.approx(200 / 3)
    opts = tmp_path / "opts.csv"  # no is_correct: compare the options
    opts.write_text("problem_id,correct_option,selected_option\np1,A,A\np2,B,C\n")
    ev, _, _ = score_csv(opts)
    assert ev["task"] == "mcqa" and ev["correct_examples"] == 1
    bare = tmp_path / "result_m_ICL_mcqa.csv"
    bare.write_text("problem_id,full_response\np1,A\n")
    with pytest.raises(Exception, match="needs is_correct"):
        score_csv(bare)


def test_bootstrap_ci_per_file_brackets_the_accuracy(tmp_path):
    rows = "".join(f"p{i},q,yes,{'yes' if i % 3 else 'no'},x\n" for i in range(60))
    (tmp_path / "result_m_ICL_open.csv").write_text(OPEN + rows)
    ev, _, _ = score_csv(tmp_path / "result_m_ICL_open.csv")
    lo, hi = ev["bootstrap"]["ci"]
    assert lo < ev["accuracy"] < hi and hi - lo > 5  # 60 items: a CI of several points


def test_a_broken_file_gets_its_own_error_and_the_folder_is_still_scored(tmp_path, capsys):
    folder = tmp_path / "results"
    folder.mkdir()
    _open_with_errors(folder)
    (folder / "result_x_ICL_mcqa.csv").write_text(MCQA + "p1,q,a,a,x,A,A,True\n")
    (folder / "result_bad_ICL_open.csv").write_text("question,answer\nq,a\n")  # no problem_id
    (folder / "result_empty_ICL_open.csv").write_text(OPEN)
    out = tmp_path / "run"
    assert main(["smmile", "score", str(folder), "--output_dir", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert {r["file"] for r in res["tables"]["scores"]} == {"result_gpt-4o_ICL_open.csv", "result_x_ICL_mcqa.csv"}
    bad = {r["file"]: r["error"] for r in res["tables"]["files_not_scored"]}
    assert "problem_id" in bad["result_bad_ICL_open.csv"] and "no rows" in bad["result_empty_ICL_open.csv"]
    assert "not scored" in capsys.readouterr().err
    with open(out / "summary.csv", newline="") as fh:
        summary = list(csv.DictReader(fh))
    assert {r["file"] for r in summary} == {"result_gpt-4o_ICL_open.csv", "result_x_ICL_mcqa.csv"}
    assert next(r for r in summary if r["task"] == "open")["errors"] == "2"
    assert (out / "report.html").is_file()
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "result_bad_ICL_open.csv").write_text("question\nq\n")
    assert main(["smmile", "score", str(only_bad), "--output_dir", str(tmp_path / "run2")]) == 3


def test_llm_judge_strict_parsing_cache_and_agreement_with_a_reference(tmp_path):
    path = tmp_path / "result_m_ICL_open.csv"
    path.write_text(OPEN + "p1,q,Left,on the left side,x\np2,q,Yes,no,x\np3,q,Mass,a mass,x\np4,q,No,perhaps,x\n")
    # the reference judge of the original (problem_accuracies in percent) beside the CSV
    (tmp_path / "result_m_ICL_open_evaluationllm.json").write_text(
        json.dumps({"problem_accuracies": {"p1": 100.0, "p2": 0.0, "p3": 100.0, "p4": 100.0}})
    )
    script = tmp_path / "judge.jsonl"  # the judge's replies per prompt: keyed by the generated answer
    replies = {"on the left side": "1", "no": "0", "a mass": "1", "perhaps": "I think 1"}

    def key(gen):
        return next(p for p in _prompts(path) if f"Model output: {gen}\n" in p)

    script.write_text("".join(json.dumps({"prompt": key(g), "response": r}) + "\n" for g, r in replies.items()))
    out = tmp_path / "run"
    assert main(["smmile", "score", str(path), "--judge", f"scripted:{script}", "--output_dir", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    row = res["tables"]["scores"][0]
    assert row["judge"] == pytest.approx(50.0) and row["judge_format_errors"] == 1  # "I think 1" is not accepted
    assert row["judge_agreement"] == pytest.approx(0.75)  # p4 disagrees (format error scored 0 vs reference 1)
    assert (out / "judge_cache.sqlite").is_file()


def _prompts(path):
    from medfm.methods.smmile import prompts

    with open(path, newline="") as fh:
        return [prompts.judge_prompt(r["final_question"], r["true_answer"], r["generated_answer"])
                for r in csv.DictReader(fh)]  # fmt: skip


def test_reference_judgement_column_and_kappa():
    rows = [{"problem_id": str(i), "llm_judgment": v} for i, v in enumerate(["True", "False", "True", ""])]
    ref = reference_judgements("x.csv", rows)
    assert ref == [1.0, 0.0, 1.0, None]
    a = agreement([1.0, 1.0, 1.0, 0.0], ref)
    # 3 rows both judged: (1,1) (1,0) (1,1): agreement 2/3; kappa 0 (ours is constant on them)
    assert a["n"] == 3 and a["agreement"] == pytest.approx(2 / 3) and a["kappa"] == pytest.approx(0.0)


def test_contains_judge_keeps_whole_word_boundaries():
    from medfm.methods.smmile.harness import judge_records
    from medfm.methods.smmile.metrics import contains_match

    assert not contains_match("abnormal", "normal") and contains_match("It is normal.", "Normal")
    recs = [{"task": "open", "true_answer": "normal", "generated_answer": g} for g in ("abnormal", "normal study")]
    counts = judge_records(recs, "contains")
    assert counts["judged"] == 2 and [r["judge"] for r in recs] == [0.0, 1.0]


def test_nearest_image_baseline_compares_directions_not_norms():
    from medfm.methods.smmile.metrics import nearest_image_answer

    vectors = {"a": np.array([10.0, 1.0]), "b": np.array([0.1, 0.1]), "q": np.array([1.0, 1.0])}

    def embed(images):  # non-unit norms: by dot product "a" wins, by cosine "b" (same direction as the query)
        return np.stack([vectors[i] for i in images])

    assert nearest_image_answer(["a", "b"], ["answer a", "answer b"], "q", embed) == "answer b"
