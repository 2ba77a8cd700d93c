"""The harness shows known effects on phantom problems with ground truth, by margins a broken harness cannot pass."""

from __future__ import annotations

import pytest

from medfm.methods.smmile.conditions import pixel_embedder
from medfm.methods.smmile.data import load_problems
from medfm.methods.smmile.experiment import run_experiment, summarise
from medfm.methods.smmile.harness import HarnessOptions
from medfm.methods.smmile.phantom_set import load_truth, make_problem_set, write_problem_set
from medfm.methods.smmile.reference import oracle_icl_backend, recency_backend


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    d = tmp_path_factory.mktemp("smmile_effect")
    write_problem_set(make_problem_set(24, seed=3, size=48), d, parquet=False)
    return load_problems(d), load_truth(d / "truth.jsonl")


def _acc(summary, cond, metric="em", task="open"):
    return next(r["accuracy"] for r in summary if (r["condition"], r["task"], r["metric"]) == (cond, task, metric))


def test_problem_set_needs_in_context_learning(phantom):
    ps, truth = phantom
    assert len(ps.problems) == 24 and not ps.skipped
    # every non-reasoning query's class occurs among its examples; reasoning queries' never do
    for p in ps.problems:
        classes = [truth[(p.problem_id, r.order)]["class"] for r in p.examples]
        q = truth[(p.problem_id, p.query.order)]["class"]
        assert (q in classes) != p.is_reasoning
    fmts = {p.query.flag_answer_format for p in ps.problems}
    assert len(fmts) >= 3 and len({p.speciality for p in ps.problems}) >= 3


def test_icl_lifts_a_perceiving_learner_and_recency_is_detected(phantom):
    ps, truth = phantom
    res = run_experiment(ps.problems, oracle_icl_backend(ps.problems, truth), conditions=["zero_shot", "icl"],
                         tasks=["open", "mcqa"], opts=HarnessOptions(), judge="contains", embedder=pixel_embedder)  # fmt: skip
    summary, effects = summarise(res)
    zero, icl = _acc(summary, "zero_shot"), _acc(summary, "icl")
    n_reason = sum(p.is_reasoning for p in ps.problems)
    assert icl == pytest.approx(100 * (24 - n_reason) / 24)  # perfect except reasoning problems
    assert zero <= 30 and icl - zero >= 50
    gain = next(e for e in effects if e["effect"] == "icl_gain" and e["metric"] == "em")
    assert gain["ci_low"] > 20
    # MCQA: the oracle's answer text is one of the options; extraction by option-text containment
    assert _acc(summary, "icl", "mcqa", "mcqa") >= 60

    rec = run_experiment(ps.problems, recency_backend(), conditions=["order_last", "order_not_last", "permutations"],
                         tasks=["open"], opts=HarnessOptions(), perm_cap=6)  # fmt: skip
    summary, effects = summarise(rec)
    assert _acc(summary, "order_last") == 100.0 and _acc(summary, "order_not_last") == 0.0
    split = next(e for e in effects if e["effect"] == "perm_last_matches" and e["metric"] == "em")
    assert split["a"] == 100.0 and split["b"] == 0.0
