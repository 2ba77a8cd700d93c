"""Unit tests of the prototype curator against hand-computed values, and its effect on known ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medfm.methods.chexficient.curator import (
    GatheredBatch,
    PrototypeCurator,
    ema_update_prototypes,
    expected_keep_fraction,
    farthest_point_sampling,
    init_prototypes,
    joint_features,
    select_samples,
    sinkhorn_knopp,
)
from medfm.methods.chexficient.engine import curate_stream


def test_expected_keep_fraction_matches_paper_arithmetic():
    # (0.10 * 480 + 6 * 10) / 480 = 108 / 480
    assert expected_keep_fraction(480, 6, 10) == pytest.approx(108 / 480)
    assert expected_keep_fraction(256, 6, 5) == pytest.approx((25.6 + 30) / 256)


def test_select_samples_bands_on_a_line():
    # one prototype at the origin; 20 points at distances 1..20 along one axis
    d = torch.arange(1, 21, dtype=torch.float32)
    u = torch.zeros(20, 4)
    u[:, 0] = d
    proto = torch.zeros(1, 4)
    sel = select_samples(u, proto, q_outlier=0.95, q_support=0.85, max_per_cluster=5, thinning="fps",
                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    # numpy linear percentiles: 95th of 1..20 = 19.05, 85th = 17.15
    assert np.percentile(np.arange(1, 21), 95) == pytest.approx(19.05)
    assert sel.outlier.nonzero().flatten().tolist() == [19]  # distance 20
    assert sel.support.nonzero().flatten().tolist() == [17, 18]  # distances 18, 19
    assert int(sel.central.sum()) == 17
    assert sel.n_keep == 2 + 5  # support + M thinned central
    assert not bool((sel.keep & sel.outlier).any())


def test_farthest_point_sampling_greedy_max_min():
    x = torch.tensor([[0.0], [1.0], [2.0], [10.0], [5.0]])
    g = torch.Generator().manual_seed(0)
    idx = farthest_point_sampling(x, 3, generator=g)
    assert len(set(idx.tolist())) == 3
    first = idx[0].item()
    # the second point is the farthest from the first, the third maximises the min distance to both
    d1 = (x - x[first]).abs().flatten()
    assert idx[1].item() == int(torch.argmax(d1))
    chosen = x[idx[:2]]
    mind = torch.cdist(x, chosen).min(1).values
    assert idx[2].item() == int(torch.argmax(mind))
    assert farthest_point_sampling(x, 10).tolist() == [0, 1, 2, 3, 4]


def test_sinkhorn_marginals():
    torch.manual_seed(0)
    scores = torch.randn(12, 3)
    q = sinkhorn_knopp(scores, eps=0.5, iters=3)
    assert torch.allclose(q.sum(1), torch.ones(12), atol=1e-5)  # rows exact after the last column step
    assert torch.allclose(q.sum(0), torch.full((3,), 4.0), atol=0.6)  # near-equipartition: B/K = 4
    many = sinkhorn_knopp(scores, eps=0.5, iters=200)
    assert torch.allclose(many.sum(0), torch.full((3,), 4.0), atol=1e-3)


def test_ema_update_hand_value_and_unit_norm():
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    f = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    new = ema_update_prototypes(p, f, torch.tensor([0, 0]), decay=0.9)
    expect = F.normalize(torch.tensor([0.9, 0.1]), dim=0)
    assert torch.allclose(new[0], expect)
    assert torch.allclose(new[1], p[1])  # no assignee: unchanged
    assert torch.allclose(new.norm(dim=1), torch.ones(2))


def _clusters(sizes, dim=16, spread=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(len(sizes), dim, generator=g), dim=1) * 3
    x = torch.cat([c + spread * torch.randn(n, dim, generator=g) for c, n in zip(centres, sizes)])
    labels = torch.cat([torch.full((n,), k) for k, n in enumerate(sizes)])
    return F.normalize(x, dim=1), labels


def test_kept_fraction_formula_at_batch_480():
    u, _ = _clusters([80] * 6, seed=1)
    cur = PrototypeCurator(num_prototypes=6, max_per_cluster=10, seed=0)
    cur.init(u)
    sel = cur.select(u)
    frac = sel.n_keep / 480
    assert abs(frac - expected_keep_fraction(480, 6, 10)) <= 0.015


def test_curation_enriches_rare_clusters_vs_random():
    # ground truth: one dominant cluster of near-duplicates and five rare clusters
    sizes = [400, 30, 20, 15, 10, 5]
    u, lab = _clusters(sizes, seed=2)
    cur = PrototypeCurator(num_prototypes=6, max_per_cluster=10, seed=0)
    cur.init(u)
    sel = cur.select(u)
    overall = sel.n_keep / len(u)
    rarest = lab >= 4  # the two smallest clusters (10 + 5 pairs)
    kept_dom = sel.keep[lab == 0].float().mean().item()
    kept_rarest = sel.keep[rarest].float().mean().item()
    assert kept_rarest >= 2 * overall  # rare pairs enriched at least 2x over the overall keep rate
    assert kept_dom < overall  # the near-duplicate mass is thinned
    rand = cur.random_mask(len(u), sel.n_keep)  # random-online keeps the same count without enrichment
    assert rand.sum() == sel.n_keep
    assert kept_rarest - rand[rarest].float().mean().item() > 0.2


def test_gathered_micro_batches_select_like_one_batch():
    u_img, _ = _clusters([100, 80, 60], dim=8, seed=3)
    u_txt, _ = _clusters([100, 80, 60], dim=8, seed=4)
    ids = torch.arange(240)
    whole = joint_features(u_img, u_txt)
    gb = GatheredBatch()
    for i in range(0, 240, 48):  # five "processes"/micro-batches
        gb.add(u_img[i : i + 48], u_txt[i : i + 48], ids[i : i + 48])
    assert torch.equal(gb.ids(), ids)
    assert torch.allclose(gb.joint(), whole)
    a = PrototypeCurator(num_prototypes=3, max_per_cluster=5, seed=7)
    b = PrototypeCurator(num_prototypes=3, max_per_cluster=5, seed=7)
    a.init(whole)
    b.init(gb.joint())
    assert torch.equal(a.select(whole).keep, b.select(gb.joint()).keep)


def test_curator_state_roundtrip_is_exact():
    u, _ = _clusters([60, 60], dim=8, seed=5)
    a = PrototypeCurator(num_prototypes=2, max_per_cluster=4, seed=3)
    a.init(u)
    s = a.select(u)
    a.record(torch.arange(120), s.keep)
    a.update(u[s.keep])
    b = PrototypeCurator(num_prototypes=2, max_per_cluster=4, seed=99)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.prototypes, b.prototypes) and a.kept_ids == b.kept_ids
    assert torch.equal(a.select(u).keep, b.select(u).keep)  # same RNG state -> same FPS start points


def test_init_prototypes_unit_norm_and_k():
    u, _ = _clusters([30, 30, 30], dim=8, seed=6)
    p = init_prototypes(u, 3, niter=10, seed=42)
    assert p.shape == (3, 8)
    assert torch.allclose(p.norm(dim=1), torch.ones(3), atol=1e-5)


def test_curate_stream_rebatches_and_keeps_ids():
    zi, _ = _clusters([300, 200], dim=8, seed=8)
    zt, _ = _clusters([300, 200], dim=8, seed=9)
    ids = list(range(500))
    chunks = [(ids[i : i + 37], zi[i : i + 37], zt[i : i + 37]) for i in range(0, 500, 37)]
    res = curate_stream(iter(chunks), PrototypeCurator(num_prototypes=2, max_per_cluster=5), batch_size=100,
                        warmup_batches=2, record_bands=True)  # fmt: skip
    assert res.n_seen == 500 and res.n_batches == 5
    assert len(res.bands) == 500 and set(res.kept_ids) <= set(ids)
    assert sum(b["kept"] for b in res.bands) == len(res.kept_ids)


def test_sinkhorn_hand_values_depend_on_the_temperature():
    # scores [[1, 0], [0, 1]], eps 0.5: Q = exp((s - 1) / 0.5) = [[1, e^-2], [e^-2, 1]]; both marginals are
    # already balanced, so every normalisation keeps the shape: rows [1, e^-2] / (1 + e^-2)
    q = sinkhorn_knopp(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), eps=0.5, iters=1)
    a = 1.0 / (1.0 + np.exp(-2.0))
    assert torch.allclose(q, torch.tensor([[a, 1 - a], [1 - a, a]], dtype=torch.float32), atol=1e-6)
    sharper = sinkhorn_knopp(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), eps=0.1, iters=1)
    assert float(sharper[0, 0]) == pytest.approx(1.0 / (1.0 + np.exp(-10.0)), abs=1e-6)


def test_online_prototype_update_moves_each_prototype_toward_its_own_features():
    cur = PrototypeCurator(num_prototypes=2, ema_decay=0.5, sinkhorn_eps=0.05, sinkhorn_iters=3)
    cur.prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 0.2
    near0, near1 = [np.cos(t), np.sin(t)], [np.sin(t), np.cos(t)]
    new = cur.update(torch.tensor([near0, near1], dtype=torch.float32))
    # each feature is assigned to its most similar prototype (argmax): p0 turns by t/2 toward near0, p1 likewise
    assert float(new[0, 0]) == pytest.approx(np.cos(t / 2), abs=1e-4) and float(new[1, 1]) == pytest.approx(
        np.cos(t / 2), abs=1e-4)  # fmt: skip


def test_density_thinning_keeps_the_sparsest_points():
    from medfm.methods.chexficient.curator import density_sampling

    dense = torch.tensor([[0.0, 0.0], [0.01, 0.0], [0.0, 0.01], [0.01, 0.01], [0.005, 0.005], [0.02, 0.0]])
    isolated = torch.tensor([[5.0, 5.0], [-5.0, 4.0]])
    x = torch.cat([dense, isolated])
    assert sorted(density_sampling(x, 2, k=3).tolist()) == [6, 7]
    assert density_sampling(x, 20).tolist() == list(range(8))  # m >= n keeps everything
