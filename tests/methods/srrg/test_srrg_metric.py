from __future__ import annotations

import pytest

from medfm.core.errors import DataError
from medfm.methods.srrg.metric import bleu, f1_srr_bert, per_sample_f1, rouge_l


class Table:
    """A fake classifier: fixed findings per utterance."""

    def __init__(self, table):
        self.table = table
        self.calls = 0

    def predict(self, texts):
        self.calls += 1
        return [self.table.get(t, {}) for t in texts]


T = Table({
    "effusion": {"Simple pleural effusion": "Present"},
    "no ptx": {"Simple pneumothorax": "Absent"},
    "cardiomegaly": {"Cardiomegaly": "Present"},
    "edema": {"Edema": "Present"},
    "normal": {"No Finding": "Present"},
    "No findings": {"No Finding": "Present"},
})  # fmt: skip


def test_impression_unaligned_samples_hand_computed():
    refs = ["1. effusion\n2. no ptx", "1. cardiomegaly\n2. edema"]
    hyps = ["1. no ptx\n2. effusion", "1. cardiomegaly"]
    s = f1_srr_bert(hyps, refs, T, space="leaves")
    # report 1: {eff, ptx} vs {ptx, eff} -> 1; report 2: {cm, edema} vs {cm}: P=1 R=1/2 F=2/3
    assert s.per_sample_f1 == pytest.approx([1.0, 2 / 3])
    assert (s.precision, s.recall, s.f1) == pytest.approx((1.0, 0.75, (1 + 2 / 3) / 2))


def test_impression_aligned_hand_computed():
    refs = ["1. effusion\n2. no ptx", "1. cardiomegaly\n2. edema"]
    hyps = ["1. no ptx\n2. effusion", "1. cardiomegaly"]
    s = f1_srr_bert(hyps, refs, T, space="leaves", aligned=True)
    # report 1: swapped order -> 0 for both pairs; report 2: (cm, cm)=1, (edema, pad "No findings")=0 -> 0.5
    assert s.per_sample_f1 == pytest.approx([0.0, 0.5])
    assert s.f1 == pytest.approx(0.25)


def test_weighted_radeval_hand_computed():
    refs = ["1. effusion\n2. no ptx", "1. cardiomegaly\n2. edema"]
    hyps = ["1. effusion", "1. cardiomegaly\n2. effusion"]
    s = f1_srr_bert(hyps, refs, T, space="leaves_with_statuses", average="weighted")
    # labels with support: eff(P) 1: TP1 FP1 -> P=.5 R=1 F=2/3; ptx(A) 1: F=0; cm 1: F=1; edema 1: F=0
    assert s.f1 == pytest.approx((2 / 3 + 0 + 1 + 0) / 4)
    assert s.recall == pytest.approx(2 / 4)
    assert s.precision == pytest.approx((0.5 + 0 + 1 + 0) / 4)
    with pytest.raises(DataError, match="unaligned"):
        f1_srr_bert(hyps, refs, T, aligned=True, average="weighted")


def test_status_space_separates_negation():
    refs, hyps = ["1. no ptx"], ["1. ptx"]
    table = Table({"no ptx": {"Simple pneumothorax": "Absent"}, "ptx": {"Simple pneumothorax": "Present"}})
    assert f1_srr_bert(hyps, refs, table, space="leaves").f1 == 1.0
    assert f1_srr_bert(hyps, refs, table, space="leaves_with_statuses").f1 == 0.0
    assert f1_srr_bert(hyps, refs, table, space="upper").f1 == 1.0


def test_findings_sections_hand_computed():
    ref = "Lungs and Airways:\n- edema\n\nPleura:\n- effusion"
    hyp = "Lungs and Airways:\n- edema\n\nCardiovascular:\n- cardiomegaly"
    s = f1_srr_bert([hyp], [ref], T, section="findings")
    # Lungs: 1; Pleura: missing in hyp -> 0; Cardiovascular: missing in ref -> 0
    assert s.organ["Lungs and Airways"]["f1"] == 1.0 and s.organ["Pleura"]["f1"] == 0.0
    assert s.f1 == pytest.approx(1 / 3)
    # section presence: ref {L, P}, hyp {L, C}: P=1/2 R=1/2 F=1/2
    assert s.section_presence["f1"] == pytest.approx(0.5)


def test_labels_each_utterance_once_and_bad_inputs():
    t = Table(T.table)
    f1_srr_bert(["1. edema"] * 50, ["1. edema"] * 50, t)
    assert t.calls == 1
    with pytest.raises(DataError, match="one candidate per"):
        f1_srr_bert(["a"], ["a", "b"], T)
    with pytest.raises(DataError, match="lists"):
        f1_srr_bert("a", "a", T)
    s = f1_srr_bert(["", "1. edema"], ["", "1. edema"], T)
    assert s.per_sample_f1 == [0.0, 1.0] and any("empty" in w for w in s.warnings)
    s = f1_srr_bert(["Keine Pleuraergüsse, Herz normal groß und Lunge frei."], ["1. edema"], T)
    assert any("English" in w for w in s.warnings)

    class Bad:
        def predict(self, texts):
            return [{"Broken arm": "Present"} for _ in texts]

    with pytest.raises(DataError, match="outside"):
        f1_srr_bert(["1. x"], ["1. y"], Bad())


def test_per_sample_f1_matches_samples_average():
    import numpy as np

    yt = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 0]])
    yp = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 1]])
    assert per_sample_f1(yt, yp) == pytest.approx([2 / 3, 0.0, 0.5])


def test_bleu_and_rouge_hand_computed():
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)
    # candidate "a b c d e" vs reference "a b c d f g": p1=4/5 p2=3/4 p3=2/3 p4=1/2, BP=exp(1-6/5)
    import math

    expected = math.exp(1 - 6 / 5) * (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert bleu(["a b c d e"], ["a b c d f g"]) == pytest.approx(expected)
    assert bleu(["x y"], ["a b"]) == 0.0
    # LCS("a b c d", "a c d e") = 3 -> P=R=3/4
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)
    assert rouge_l("", "a") == 0.0
