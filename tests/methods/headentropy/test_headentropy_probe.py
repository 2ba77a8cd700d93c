"""Sparse probe, training-free scores, paired comparison and transfer on features with planted ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from medfm.methods.headentropy.probe import (
    SCORERS,
    Domain,
    auroc_metrics,
    fit_probe,
    paired_auroc_difference,
    probe_from_dict,
    probe_score,
    probe_to_dict,
    split_indices,
    training_free_score,
    transfer_matrix,
)


def synthetic_domain(name: str, n: int, seed: int, informative=(3, 17), shift: float = 0.0) -> Domain:
    """Head features where correctness lowers the entropy of a few heads (known ground truth)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    he = rng.normal(2.0 + shift, 0.3, size=(n, 30))
    he[:, list(informative)] -= 0.5 * y[:, None]  # correct answers: more concentrated heads
    lookback = rng.normal(0.5, 0.1, size=(n, 30))  # carries no signal
    arrays = {
        "he_answer": he,
        "he_question": he + rng.normal(0, 0.3, he.shape),
        "lookback": lookback,
        "token_prob": rng.random(n),
        "certainty": np.where(rng.random(n) < 0.5, np.nan, rng.random(n)),
    }
    tr, te = split_indices(y, 0.3, seed)
    return Domain(name, arrays, y, tr, te)


def test_training_free_score_hand_computed():
    x = np.array([[1.0, 3.0], [0.0, 1.0]])
    np.testing.assert_allclose(training_free_score(x, -1.0), [-2.0, -0.5])
    np.testing.assert_allclose(training_free_score(np.array([0.2, np.nan, 0.6]), 1.0), [0.2, 0.4, 0.6])


def test_probe_is_sparse_roundtrips_and_finds_planted_heads():
    dom = synthetic_domain("a", 600, 0)
    probe = fit_probe(dom.arrays["he_answer"][dom.train], dom.y[dom.train], C=0.05)
    coef = probe[-1].coef_[0]
    top = set(np.argsort(-np.abs(coef))[:2].tolist())
    assert top == {3, 17}
    assert (coef == 0).sum() >= 10  # L1 zeroes uninformative heads
    again = probe_from_dict(probe_to_dict(probe))
    x = dom.arrays["he_answer"][dom.test]
    np.testing.assert_allclose(probe_score(again, x), probe_score(probe, x), atol=1e-12)
    with pytest.raises(ValueError, match="single class"):
        fit_probe(x, np.zeros(len(x)))


def test_auroc_metrics_and_paired_difference():
    y = np.array([0, 0, 1, 1] * 25)
    perfect = y + 0.01 * np.arange(100)
    rng = np.random.default_rng(0)
    noise = rng.random(100)
    m = auroc_metrics(y, perfect, n_resamples=200)
    assert m["auroc"].value == 1.0 and m["pr_auc"].value == 1.0
    d = paired_auroc_difference(y, perfect, noise, n_resamples=200)
    assert d.value > 0.3 and d.ci[0] > 0.2


def test_transfer_matrix_recovers_signal_and_beats_null_baseline():
    a = synthetic_domain("A", 500, 1)
    b = synthetic_domain("B", 500, 2, shift=0.2)  # shifted domain, same informative heads
    scorers = [SCORERS[k] for k in ("head_entropy", "lookback_ratio", "mean_head_entropy", "token_prob", "certainty")]
    rows, extras = transfer_matrix([a, b], scorers, n_resamples=200)
    cell = {(r["train"], r["test"], r["method"]): r for r in rows}
    for src in "AB":
        for dst in "AB":
            he = cell[(src, dst, "head_entropy")]
            assert he["auroc"] > 0.85, he
            assert he["diff_vs_ref"] > 0.2 and he["diff_lo"] > 0.1  # beats the signal-free lookback probe
            assert 0.35 < cell[(src, dst, "lookback_ratio")]["auroc"] < 0.65
    assert cell[("A", "A", "mean_head_entropy")]["auroc"] > 0.6  # training-free: low entropy -> correct
    assert ("A", "B", "token_prob") not in cell  # training-free scores have no transfer cells
    assert extras["probes"]["A"]["head_entropy"] is not None


def test_transfer_scores_every_target_item_and_inner_cv_picks_c():
    from medfm.methods.headentropy.probe import C_GRID, select_c

    a = synthetic_domain("A", 300, 1)
    b = synthetic_domain("B", 240, 2, shift=0.2)
    rows, _ = transfer_matrix([a, b], [SCORERS["head_entropy"]], n_resamples=50, c_grid=C_GRID)
    n = {(r["train"], r["test"]): r["n"] for r in rows}
    assert n[("A", "A")] == len(a.test) and n[("A", "B")] == 240 and n[("B", "A")] == 300
    assert all(r["C"] in C_GRID for r in rows)
    # planted signal: inner CV keeps heads (not the all-zero C = 1e-3); a single class: the smallest C
    y = a.y[a.train]
    assert select_c(a.arrays["he_answer"][a.train], y, C_GRID) >= 0.01
    assert select_c(a.arrays["he_answer"][a.train], y[:1].repeat(len(y)), C_GRID) == min(C_GRID)  # one class


def test_one_feature_confound_probes():
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.5).astype(int)
    length = np.where(y == 1, 2.0, 9.0) + rng.normal(0, 1, 200)  # short answers are right: a pure confound
    probe = fit_probe(length, y, C=1.0)
    assert probe_score(probe, length).shape == (200,)
    assert auroc_metrics(y, probe_score(probe, length), n_resamples=20)["auroc"].value > 0.95
    assert SCORERS["answer_length"].trained and SCORERS["format"].feature == "format_ok"


def test_crossfit_scores_every_item_out_of_fold():
    from medfm.methods.headentropy.probe import crossfit_domain, out_of_fold_scores

    a = crossfit_domain(synthetic_domain("A", 300, 1), k=5)
    b = synthetic_domain("B", 200, 2, shift=0.2)
    rows, _ = transfer_matrix([a, b], [SCORERS["head_entropy"]], n_resamples=50)
    cell = {(r["train"], r["test"]): r for r in rows}
    assert cell[("A", "A")]["n"] == 300 and cell[("A", "A")]["auroc"] > 0.85  # every item, none seen in training
    assert cell[("A", "B")]["n"] == 200
    oof = out_of_fold_scores(a, SCORERS["head_entropy"])
    fitted_on_all = fit_probe(a.arrays["he_answer"], a.y)
    assert not np.allclose(oof, probe_score(fitted_on_all, a.arrays["he_answer"]))  # not in-sample scores
    one_class = crossfit_domain(Domain("C", a.arrays, np.ones(300, int), a.train, a.test), k=5)
    assert out_of_fold_scores(one_class, SCORERS["head_entropy"]) is None
