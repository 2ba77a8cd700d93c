"""Row statistics inside the forward pass vs hand-computed values and the eager-attention reference."""

from __future__ import annotations

import math

import pytest
import torch

from medfm.methods.headentropy.attention import (
    _ACTIVE,
    RowStatsCollector,
    llm_check_attention_score,
    lookback_ratio,
    renyi2_rows,
    rowstats_attention,
    span_mean,
    trace_jacobian_rows,
)


class _Module(torch.nn.Module):
    def __init__(self, layer_idx: int, groups: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_key_value_groups = groups


def _causal_mask(t: int) -> torch.Tensor:
    m = torch.full((t, t), float("-inf")).triu(1)
    return m[None, None]


def test_uniform_causal_rows_hand_computed():
    # all-zero queries give uniform attention over the causal prefix: a_ij = 1/(i+1)
    t, h, d = 5, 2, 4
    q = torch.zeros(1, h, t, d)
    k = torch.randn(1, 1, t, d)
    v = torch.randn(1, 1, t, d)
    col = RowStatsCollector(num_layers=1, context_end=[2], query_block=2)
    token = _ACTIVE.set(col)
    try:
        col._alloc(1, h, t, q.device)
        rowstats_attention(_Module(0, 2), q, k, v, _causal_mask(t), scaling=0.5)
    finally:
        _ACTIVE.reset(token)
    i = torch.arange(t, dtype=torch.float32)
    expected_sumsq = 1.0 / (i + 1)
    assert torch.allclose(col.sumsq[0, 0, 0], expected_sumsq, atol=1e-6)
    assert torch.allclose(col.diag[0, 0, 1], 1.0 / (i + 1), atol=1e-6)
    # mass on the first 2 keys: min(i+1, 2)/(i+1)
    assert torch.allclose(col.ctx_mass[0, 0, 0], torch.clamp(i + 1, max=2) / (i + 1), atol=1e-6)
    he = renyi2_rows(col.sumsq[:, 0])
    assert torch.allclose(he[0, 0], torch.log(i + 1), atol=1e-5)  # H2 of a uniform row = log(n)
    # span mean over rows 2..4, layer-major (L*H,)
    feat = span_mean(he, 2, 5)
    assert feat.shape == (2,)
    assert math.isclose(float(feat[0]), float(torch.log(i[2:] + 1).mean()), rel_tol=1e-5)
    tj = span_mean(trace_jacobian_rows(col.sumsq[:, 0]), 0, 5)
    assert math.isclose(float(tj[1]), float((1 - expected_sumsq).mean()), rel_tol=1e-5)


def test_lookback_ratio_and_llm_check_hand_computed():
    # one layer, one head, T=4, context c=2; rows 2 and 3 put 0.5 / 0.25 of their mass on the context
    ctx_mass = torch.tensor([[[1.0, 1.0, 0.5, 0.25]]])
    ratio = lookback_ratio(ctx_mass, 2, 4, context_end=2, length=4)
    # row 2: ctx=0.25, new=0.25 -> 0.5 ; row 3: ctx=0.125, new=0.375 -> 0.25 ; mean 0.375
    assert ratio.shape == (1,)
    assert math.isclose(float(ratio[0]), 0.375, rel_tol=1e-6)
    diag = torch.tensor([[[1.0, 0.5, 0.25, 0.125]], [[1.0, 1.0, 0.5, 0.5]]])  # (L=2, H=1, T=4)
    # layer 0 over rows 1..2: mean(log .5, log .25) ; layer 1: mean(0, log .5); cumulative at floor(0.8*2)=1
    expected = (math.log(0.5) + math.log(0.25)) / 2 + (0 + math.log(0.5)) / 2
    assert math.isclose(llm_check_attention_score(diag, 1, 3), expected, rel_tol=1e-6)


def test_rowstats_attention_matches_eager_with_gqa_and_blocks():
    torch.manual_seed(0)
    b, h, hk, t, d = 2, 4, 2, 11, 8
    q, k, v = torch.randn(b, h, t, d), torch.randn(b, hk, t, d), torch.randn(b, hk, t, d)
    mask = _causal_mask(t).expand(b, 1, t, t)
    col = RowStatsCollector(num_layers=3, context_end=[3, 7], query_block=4)
    token = _ACTIVE.set(col)
    try:
        col._alloc(b, h, t, q.device)
        out, w = rowstats_attention(_Module(2, 2), q, k, v, mask, scaling=d**-0.5)
    finally:
        _ACTIVE.reset(token)
    kr, vr = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    probs = torch.softmax(q @ kr.transpose(2, 3) * d**-0.5 + mask, -1)
    assert w is None
    assert torch.allclose(out, (probs @ vr).transpose(1, 2), atol=1e-5)
    assert torch.allclose(col.sumsq[2], (probs**2).sum(-1), atol=1e-6)
    assert torch.allclose(col.ctx_mass[2, 1], probs[1, :, :, :7].sum(-1), atol=1e-6)
    assert torch.allclose(col.diag[2], probs.diagonal(dim1=-2, dim2=-1), atol=1e-6)
    assert float(col.sumsq[0].abs().sum()) == 0.0  # other layers untouched


def test_span_mean_rejects_empty_span():
    with pytest.raises(ValueError):
        span_mean(torch.ones(1, 1, 3), 2, 2)


def test_lookback_ratio_and_llm_check_edges():
    # no context (c = 0 counts as 1 key) and no keys after it (T - c = 0 counts as 1)
    ctx_mass = torch.tensor([[[0.5, 0.5]]])
    # c=1, rest=1: ctx = 0.5, new = 0.5 -> 0.5 per row
    assert math.isclose(float(lookback_ratio(ctx_mass, 0, 2, context_end=0, length=2)[0]), 0.5, rel_tol=1e-6)
    # c=2, T=2 -> rest 1: ctx = 0.25, new = 0.5 -> 1/3
    assert math.isclose(float(lookback_ratio(ctx_mass, 0, 2, context_end=2, length=2)[0]), 1 / 3, rel_tol=1e-6)
    diag = torch.tensor([[[0.5, 0.5]], [[0.25, 0.25]]])  # (L=2, H=1, T=2)
    # layer_fraction 1.0 points past the last layer: the last cumulative value is used
    expected = math.log(0.5) + math.log(0.25)
    assert math.isclose(llm_check_attention_score(diag, 0, 2, layer_fraction=1.0), expected, rel_tol=1e-6)
    assert math.isclose(llm_check_attention_score(diag, 0, 2, layer_fraction=0.0), math.log(0.5), rel_tol=1e-6)


@pytest.mark.parametrize("context_end", [[0, 3], [5, 11], [11, 40]])  # none, inside, all (or more than) T
def test_fused_log_sum_exp_statistics_equal_eager(context_end):
    """Without a mask the pass is fused: statistics from log-sum-exps equal the exact eager ones (GQA too)."""
    torch.manual_seed(1)
    b, h, hk, t, d = 2, 4, 2, 11, 8
    q, k, v = torch.randn(b, h, t, d), torch.randn(b, hk, t, d), torch.randn(b, hk, t, d)
    stats = {}
    for fused in (True, False):
        col = RowStatsCollector(num_layers=2, context_end=context_end, query_block=4, fused=fused)
        token = _ACTIVE.set(col)
        try:
            out, _ = rowstats_attention(_Module(1, 2), q, k, v, None, scaling=d**-0.5)
        finally:
            _ACTIVE.reset(token)
        stats[fused] = (out, col.sumsq[1], col.ctx_mass[1], col.diag[1])
    kr, vr = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    probs = torch.softmax(q @ kr.transpose(2, 3) * d**-0.5 + _causal_mask(t), -1)
    for out, sumsq, ctx, diag in stats.values():
        torch.testing.assert_close(out, (probs @ vr).transpose(1, 2), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(sumsq, (probs**2).sum(-1), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(diag, probs.diagonal(dim1=-2, dim2=-1), atol=1e-5, rtol=1e-4)
        for i, c in enumerate(context_end):
            torch.testing.assert_close(ctx[i], probs[i, :, :, : min(c, t)].sum(-1), atol=1e-5, rtol=1e-4)
