"""CheXalign's algorithmic core against hand-computed values: GREEN / LC-GREEN, the GREEN parser, the offline judge's
error categories, pair selection and the six losses."""

from __future__ import annotations

import math

import pytest

from medfm.methods.chexalign import losses
from medfm.methods.chexalign.green import (
    CATEGORIES,
    GreenCounts,
    GreenParseError,
    format_green,
    green_score,
    length_controlled,
    make_prompt,
    parse_green,
)
from medfm.methods.chexalign.judges import OfflineGreenJudge, bertscore_f1, make_judge
from medfm.methods.chexalign.pairs import build_pairs, kto_rows, select_pair

REF = "FINDINGS: PA view of the chest. There is a small right pleural effusion. No pneumothorax.\nIMPRESSION: Small right pleural effusion."


def _sig(**kw: int) -> dict[str, int]:
    return {**dict.fromkeys(CATEGORIES, 0), **kw}


def test_green_formula_and_zero_match_rule():
    assert green_score(3, 1) == pytest.approx(0.75)
    assert green_score(2, 0) == 1.0
    assert green_score(0, 0) == 0.0  # nothing matched: 0 even without errors
    assert green_score(0, 5) == 0.0
    with pytest.raises(ValueError):
        green_score(-1, 0)
    assert GreenCounts(matched=1, significant=_sig(false_finding=2, wrong_severity=1)).score == pytest.approx(0.25)


def test_lc_green_penalises_a_length_inflated_candidate_exactly():
    ref = "small right pleural effusion"  # 4 words
    inflated = " ".join([ref] * 3)  # 12 words: relative verbosity 3
    assert length_controlled(0.8, inflated, ref) == pytest.approx(0.8 / 3)
    assert length_controlled(0.8, "right effusion", ref) == pytest.approx(0.8)  # shorter: no penalty
    judge = OfflineGreenJudge()
    lc = OfflineGreenJudge(length_control=True)
    raw = judge.judge([REF], [REF + " " + REF])[0]
    res = lc.judge([REF], [REF + " " + REF])[0]
    assert raw.score == pytest.approx(1.0)  # repeating correct findings fools plain GREEN ...
    assert res.raw_score == pytest.approx(1.0) and res.score == pytest.approx(0.5)  # ... LC-GREEN halves it


def test_parser_reads_green_format_and_variants():
    text = (
        "```\n[Explanation]:\nThe candidate misses the effusion side.\n\n[Clinically Significant Errors]:\n"
        "(a) False report of a finding in the candidate: 1. pneumothorax\n(b) Missing a finding: 0.\n"
        "(c) Misidentification of a finding's anatomic location/position: 2. effusion side; ett\n"
        "(d) Misassessment of the severity of a finding: 0.\n(e) Mentioning a comparison: 0.\n"
        "(f) Omitting a comparison: 0.\n\n[Clinically Insignificant Errors]:\n(a) False report: 4. x\n\n"
        "[Matched Findings]:\n3. cardiomegaly; no edema; lines\n```"
    )
    c = parse_green(text)
    assert c.matched == 3 and c.matched_findings == ["cardiomegaly", "no edema", "lines"]
    assert c.significant["false_finding"] == 1 and c.significant["wrong_location"] == 2 and c.errors == 3
    assert c.insignificant["false_finding"] == 4  # reported, not scored
    assert c.score == pytest.approx(3 / 6)
    numbered = "[Clinically Significant Errors]\n(1) False: 2.\n(2) Missing: No errors\n[Matched Findings]\n1. effusion"
    assert parse_green(numbered).errors == 2 and parse_green(numbered).score == pytest.approx(1 / 3)
    assert parse_green("[Matched Findings]:\nNo matched findings.").score == 0.0
    rt = GreenCounts(matched=2, significant=_sig(missed_finding=1), matched_findings=["a", "b"], explanation="e")
    assert parse_green(format_green(rt)).to_dict() == rt.to_dict()  # round trip


@pytest.mark.parametrize("bad", ["", "The report looks fine to me.", "[Matched Findings]:\nseveral findings match"])
def test_parser_rejects_output_without_a_matched_count(bad):
    with pytest.raises(GreenParseError):
        parse_green(bad)


def test_prompt_has_green_structure():
    p = make_prompt("ref text", "cand text")
    for key in (
        "[Clinically Significant Errors]",
        "[Clinically Insignificant Errors]",
        "[Matched Findings]",
        "(f) Omitting a comparison",
        "2. Reference Report:\nref text",
        "3. Candidate Report:\ncand text",
    ):
        assert key in p
    long = " ".join(["word"] * 400)
    assert make_prompt(long, "x").count("word") == 300  # truncated to 300 words


@pytest.mark.parametrize(
    ("candidate", "matched", "errors"),
    [
        (REF, 2, {}),  # effusion + agreed "no pneumothorax"
        ("Small left pleural effusion. No pneumothorax.", 1, {"wrong_location": 1}),
        ("Large right pleural effusion. No pneumothorax.", 1, {"wrong_severity": 1}),
        ("Small right pleural effusion. Left pneumothorax.", 1, {"false_finding": 1}),
        ("No acute cardiopulmonary process.", 0, {"missed_finding": 1}),
        ("", 0, {"missed_finding": 1}),
        ("Small right pleural effusion, unchanged compared to the prior study.", 1, {"false_comparison": 1}),
    ],
)
def test_offline_judge_counts_each_error_category(candidate, matched, errors):
    r = OfflineGreenJudge().judge([REF], [candidate])[0]
    assert r.counts.matched == matched
    assert {k: v for k, v in r.counts.significant.items() if v} == errors
    assert r.score == pytest.approx(green_score(matched, sum(errors.values())))


def test_offline_judge_missed_comparison_and_normal_reports():
    j = OfflineGreenJudge()
    r = j.judge(["Right pleural effusion, increased compared to the prior study."], ["Right pleural effusion."])[0]
    assert r.counts.significant["missed_comparison"] == 1 and r.score == pytest.approx(0.5)
    assert j.scores(["No acute cardiopulmonary process."], ["No acute intrathoracic process."]) == [1.0]


def test_bertscore_greedy_matching_by_hand():
    import torch

    ref = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cand = torch.tensor([[1.0, 0.0]])
    # R = mean(max(1, 0), max(0, 0)) = 0.5; P = 1; F = 2 * 0.5 / 1.5
    assert bertscore_f1(ref, cand) == pytest.approx(2 / 3)
    assert bertscore_f1(ref, torch.zeros((0, 2))) == 0.0
    judge = make_judge("bertscore")
    same, other = judge.scores([REF, REF], [REF, "The patient has a fractured femur."])
    assert same == pytest.approx(1.0, abs=1e-5) and other < 0.8


def test_pairs_best_vs_worst_ties_and_unscored():
    assert select_pair([0.2, 0.9, 0.1, 0.9]) == (1, 2)  # first best, first worst
    assert select_pair([0.5, 0.5 + 1e-9]) is None  # within the tie threshold
    assert select_pair([None, 0.3, None]) is None
    studies = [
        {"id": "a", "candidates": ["x", "y", "z"], "scores": [0.1, 0.7, 0.4], "prompt": "p"},
        {"id": "b", "candidates": ["", "", ""], "scores": [0.0, 0.0, 0.0], "prompt": "p"},  # all empty: tie
        {"id": "c", "candidates": ["u", "v"], "scores": [None, 0.5], "prompt": "p"},  # judge failed
    ]
    pairs, stats = build_pairs(studies)
    assert [(p["id"], p["chosen"], p["rejected"]) for p in pairs] == [("a", "y", "x")]
    assert (stats.pairs, stats.dropped_ties, stats.dropped_unscored, stats.empty_candidates) == (1, 1, 1, 3)
    rows = kto_rows(pairs)
    assert [(r["completion"], r["label"]) for r in rows] == [("y", True), ("x", False)] and rows[0]["prompt"] == "p"


# -- losses vs hand-computed values --------------------------------------------------------------------------------


def _sig_log(x: float) -> float:
    return -math.log(1 / (1 + math.exp(-x)))


def test_dpo_and_rdpo_by_hand():
    # h = (-10 - -11) - (-12 - -11) = 2
    assert float(losses.dpo_loss([-10.0], [-12.0], [-11.0], [-11.0], beta=0.1)[0]) == pytest.approx(_sig_log(0.2))
    # R-DPO: beta h + alpha (|y_w| - |y_l|) = 0.2 + 0.05 * (20 - 30) = -0.3
    v = losses.rdpo_loss([-10.0], [-12.0], [-11.0], [-11.0], [20], [30], beta=0.1, alpha=0.05)
    assert float(v[0]) == pytest.approx(_sig_log(-0.3))


def test_ipo_by_hand():
    # per-token log-ratios: chosen 2/4 = 0.5, rejected -3/6 = -0.5; h = 1; (1 - 1/(2*0.1))^2 = 16
    v = losses.ipo_loss([-8.0], [-15.0], [-10.0], [-12.0], [4], [6], beta=0.1)
    assert float(v[0]) == pytest.approx(16.0)


def test_kto_by_hand():
    # r = [1, -2]; z0 = 0.5; desirable: 1 - sigma(0.1 * 0.5); undesirable: 1 - sigma(0.1 * (0.5 + 2))
    v = losses.kto_loss([-9.0, -12.0], [-10.0, -10.0], [True, False], kl=0.5, beta=0.1)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert [float(x) for x in v] == pytest.approx([1 - sig(0.05), 1 - sig(0.25)])
    neg = losses.kto_loss([-9.0], [-10.0], [True], kl=-3.0, beta=0.1)  # z0 clamped at 0
    assert float(neg[0]) == pytest.approx(1 - sig(0.1))


def test_orpo_and_simpo_by_hand():
    # mean log-probs: chosen -2/4 = -0.5, rejected -6/3 = -2
    mw, ml = -0.5, -2.0
    log_odds = (mw - math.log(1 - math.exp(mw))) - (ml - math.log(1 - math.exp(ml)))
    expect = 0.5 + 0.1 * _sig_log(log_odds)
    assert float(losses.orpo_loss([-2.0], [-6.0], [4], [3], lam=0.1)[0]) == pytest.approx(expect)
    # SimPO: beta (mw - ml) - gamma = 2 * 1.5 - 0.5 = 2.5
    assert float(losses.simpo_loss([-2.0], [-6.0], [4], [3], beta=2.0, gamma=0.5)[0]) == pytest.approx(_sig_log(2.5))


def test_length_normalised_losses_count_an_empty_completion_as_one_token():
    """|y| is clamped at 1: a one-token and an empty completion, values computed by hand."""
    import math

    from medfm.methods.chexalign.losses import ipo_loss, orpo_loss, simpo_loss

    lw, ll, rw, rl = -0.5, -2.0, -1.0, -1.5
    # IPO: h = (lw - rw)/1 - (ll - rl)/1 = 1.0; (h - 1/(2 beta))^2 with beta 0.25 -> (1 - 2)^2
    assert float(ipo_loss([lw], [ll], [rw], [rl], [1], [0], beta=0.25)[0]) == pytest.approx(1.0)
    # SimPO: -log sigma(beta * lw/1 - beta * ll/1 - gamma)
    z = 2.0 * lw - 2.0 * ll - 0.5
    assert float(simpo_loss([lw], [ll], [1], [0], beta=2.0, gamma=0.5)[0]) == pytest.approx(math.log1p(math.exp(-z)))
    # ORPO: -mw - lam * log sigma(log odds(w) - log odds(l)), mean log-probs over 1 token each
    odds = (lw - ll) - (math.log1p(-math.exp(lw)) - math.log1p(-math.exp(ll)))
    want = -lw + 0.1 * math.log1p(math.exp(-odds))
    assert float(orpo_loss([lw], [ll], [1], [0], lam=0.1)[0]) == pytest.approx(want)


def test_length_normalised_losses_with_an_empty_chosen_completion():
    import math

    from medfm.methods.chexalign.losses import ipo_loss, orpo_loss, simpo_loss

    lw, ll, rw, rl = -0.5, -2.0, -1.0, -1.5  # the chosen completion is empty (|y_w| = 0 counts as 1)
    assert float(ipo_loss([lw], [ll], [rw], [rl], [0], [1], beta=0.25)[0]) == pytest.approx(1.0)
    z = 2.0 * lw - 2.0 * ll - 0.5
    assert float(simpo_loss([lw], [ll], [0], [1], beta=2.0, gamma=0.5)[0]) == pytest.approx(math.log1p(math.exp(-z)))
    odds = (lw - ll) - (math.log1p(-math.exp(lw)) - math.log1p(-math.exp(ll)))
    assert float(orpo_loss([lw], [ll], [0], [1], lam=0.1)[0]) == pytest.approx(-lw + 0.1 * math.log1p(math.exp(-odds)))
