"""Unit tests of the VLM's pure pieces against hand-computed values (chat template, VQA pairs, metrics)."""

from __future__ import annotations

import jinja2
import numpy as np
import pytest

from medfm.methods.vlm.data import Example, messages_for, present, report_section, vqa_from_labels
from medfm.methods.vlm.findings import (
    EVAL_FINDINGS,
    exact_match,
    extract_findings,
    f1_from_counts,
    micro_f1,
    normalize_answer,
    per_report_counts,
    prior_report_predictions,
    prior_vqa_answers,
    truth_matrix,
)
from medfm.methods.vlm.model import chat_template
from medfm.methods.vlm.train import batch_indices


def _render(template: str, messages, add_generation_prompt=True) -> str:
    return (
        jinja2.Environment()
        .from_string(template)
        .render(messages=messages, add_generation_prompt=add_generation_prompt)
    )


def test_chat_template_renders_image_parts_and_default_system():
    ex = Example("1", ["x.png"], "Describe.", "Left pleural effusion.")
    text = _render(chat_template("Be brief."), messages_for(ex, with_answer=True), add_generation_prompt=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<image>\nDescribe.<|im_end|>\n"
        "<|im_start|>assistant\nLeft pleural effusion.<|im_end|>\n"
    )
    # an explicit system turn replaces the default; string content and the generation prompt
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]
    assert _render(chat_template("Be brief."), msgs) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert _render(chat_template(""), [{"role": "user", "content": "hi"}]).startswith("<|im_start|>user")


def test_vqa_from_labels_is_balanced_and_follows_labels():
    rows = [
        {"id": "a", "image": "a.png", "split": "train",
         "labels": {"Pleural Effusion": 1, "Cardiomegaly": 0, "Pneumothorax": None, "Edema": -1}},
        {"id": "b", "image": "b.png", "split": "test", "labels": {"Pleural Effusion": 0, "Cardiomegaly": 0}},
    ]  # fmt: skip
    qa = vqa_from_labels(rows, per_image=2, seed=0)
    assert [q["id"] for q in qa] == ["a-q0", "a-q1", "b-q0", "b-q1"]
    assert qa[0]["answer"] == "yes" and qa[0]["finding"] in ("Pleural Effusion", "Edema")  # a present one first
    assert qa[1]["answer"] == "no" and qa[1]["finding"] in ("Cardiomegaly", "Pneumothorax")
    assert {q["answer"] for q in qa[2:]} == {"no"} and qa[2]["split"] == "test"
    assert qa[0]["question"].endswith("?")
    assert present(-1) and present(1) and not present(0) and not present(None)


def test_report_section():
    assert report_section("FINDINGS: a. b.\nIMPRESSION: Left effusion.", "impression") == "Left effusion."
    assert report_section("No impression header.", "impression") == "No impression header."
    assert report_section(" x ", "full") == "x"


def test_extract_findings_handles_negation_and_uncertainty():
    texts = [
        "Left pleural effusion. No pneumothorax.",
        "No pleural effusion or pneumothorax. Heart size is normal.",
        "Possible right apical pneumothorax. Cardiomegaly.",
    ]
    pred = extract_findings(texts)
    j = {f: EVAL_FINDINGS.index(f) for f in ("Pleural Effusion", "Pneumothorax", "Cardiomegaly")}
    assert pred[0, j["Pleural Effusion"]] and not pred[0, j["Pneumothorax"]]
    assert not pred[1].any()
    assert pred[2, j["Pneumothorax"]] and pred[2, j["Cardiomegaly"]] and not pred[2, j["Pleural Effusion"]]


def test_micro_f1_and_counts_hand_computed():
    truth = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 0]], bool)
    pred = np.array([[1, 1, 0], [0, 0, 1], [1, 1, 0]], bool)
    # tp = 1 + 0 + 2 = 3; |truth| = 4; |pred| = 5 -> F1 = 6 / 9
    assert micro_f1(truth, pred) == pytest.approx(6 / 9)
    counts = per_report_counts(truth, pred)
    assert counts.tolist() == [[1, 2, 2], [0, 0, 1], [2, 2, 2]]
    assert f1_from_counts(counts) == pytest.approx(6 / 9)
    assert micro_f1(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 0.0
    t = truth_matrix([{"Pleural Effusion": -1}, {}], ("Pleural Effusion", "Edema"))
    assert t.tolist() == [[True, False], [False, False]]


def test_answers_and_prior_baselines():
    assert normalize_answer("Yes, there is.") == "yes" and normalize_answer(" NO") == "no"
    assert normalize_answer("Left  lung.") == "left lung"
    assert exact_match(["yes", "No.", "maybe"], ["yes", "yes", "maybe"]).tolist() == [1.0, 0.0, 1.0]
    qs = ["Is there A?", "Is there A?", "Is there A?", "Is there B?"]
    assert prior_vqa_answers(qs, ["yes", "yes", "no", "no"], ["Is there A?", "Is there B?", "Is there C?"]) == [
        "yes", "no", "yes",
    ]  # fmt: skip
    train = np.array([[1, 0]] * 9 + [[0, 0]], bool)  # prevalence 0.9 and 0.0
    pred = prior_report_predictions(train, 2000, seed=0)
    assert abs(pred[:, 0].mean() - 0.9) < 0.03 and not pred[:, 1].any()


def test_batch_indices_are_epoch_permutations_and_resumable():
    steps = [batch_indices(10, 3, seed=1, step=s) for s in range(3)]
    flat = [i for b in steps for i in b]
    assert len(set(flat)) == 9 and all(len(b) == 3 for b in steps)  # one epoch = 3 disjoint batches
    assert batch_indices(10, 3, seed=1, step=2) == steps[2]  # same step -> same batch (resume)
    assert batch_indices(10, 3, seed=2, step=0) != steps[0] or batch_indices(10, 3, seed=3, step=0) != steps[0]
