"""RaVL algorithmic core against hand-computed values: regions, gaps, influence, clustering, losses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medfm.core.errors import DataError
from medfm.methods.ravl.discover import (
    cluster_gaps,
    cluster_influence,
    cluster_regions,
    discover,
    k_range,
    precision_at_k,
    rank_regions,
    responsible_regions,
    silhouette_precomputed,
)
from medfm.methods.ravl.regions import box_cover, flatten_regions, grid_boxes, mask_regions, region_has_feature


def test_grid_boxes_and_cover():
    assert grid_boxes(64, 64, 2) == [[0, 0, 32, 32], [32, 0, 64, 32], [0, 32, 32, 64], [32, 32, 64, 64]]
    assert len(grid_boxes(30, 30, 4)) == 16
    assert box_cover([0, 0, 10, 10], [5, 5, 15, 15]) == pytest.approx(0.25)
    boxes, owner = flatten_regions([[[0, 0, 8, 8], [8, 0, 16, 8]], [[0, 0, 8, 8]]], 16, 16)
    assert owner.tolist() == [0, 0, 1]
    truth = region_has_feature(boxes, owner, [[[9, 1, 12, 4]], []])
    assert truth.tolist() == [False, True, False]
    img = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    m = mask_regions(img, np.array([[2, 0, 4, 2]]), np.array([0]))
    assert m[0, 0, 0, 2] == 2 and m[0, 0, 1, 3] == 7 and m[0, 0, 2:].sum() == 0 and m[0, 0, :, :2].sum() == 0
    with pytest.raises(DataError):
        flatten_regions([[[5, 5, 5, 9]]], 16, 16)


def test_k_range_clips_to_region_count():
    assert k_range(10, 1000) == list(range(20, 50))
    assert k_range(3, 8) == [6, 7]
    assert k_range(3, 2) == []


def test_cluster_gaps_hand_computed():
    # class 0: 2 images in the cluster (both correct), 2 out (0 correct); class 1: 1 in (wrong), 3 out (all right)
    in_c = np.array([1, 1, 0, 0, 1, 0, 0, 0], bool)
    true = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    correct = np.array([1, 1, 0, 0, 0, 1, 1, 1], bool)
    gaps, rows = cluster_gaps(in_c, true, correct)
    assert gaps[0] == pytest.approx(1.0 * (1.0 - 0.0))  # w = 2*2/4 = 1
    assert gaps[1] == pytest.approx(0.5 * (0.0 - 1.0))  # w = 2*1/4 = 0.5
    assert rows[1]["n_present"] == 1 and rows[1]["n_absent"] == 3
    unweighted, _ = cluster_gaps(in_c, true, correct, weighted=False)
    assert unweighted[1] == pytest.approx(-1.0)


def test_responsible_region_and_influence_hand_computed():
    # 3 images x 2 regions; image predictions 1, 1, 0
    region_image = np.array([0, 0, 1, 1, 2, 2])
    region_scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3], [0.5, 0.5], [0.1, 0.9]])
    pred = np.array([1, 1, 0])
    resp = responsible_regions(region_image, region_scores, pred, 3)
    assert resp.tolist() == [1, 2, 4]  # highest score for the predicted class within each image
    labels = np.array([0, 5, 5, 0, 5, 0])  # cluster 5 holds regions 1, 2, 4
    in_c = np.array([True, True, True])
    true = np.array([0, 0, 0])
    correct = pred == true  # images 0 and 1 wrong
    infl = cluster_influence(5, labels, in_c, resp, np.array([2, 2, 2]), true, correct, {0: -0.3})
    assert infl == pytest.approx(1.0)  # both misclassified images blame a cluster-5 region
    assert cluster_influence(5, labels, in_c, resp, np.array([2, 2, 2]), true, correct, {0: 0.3}) is None
    # an image with a single region cannot blame one of its regions: image 1 drops out, image 0 alone decides
    labels_1 = np.array([0, 5, 0, 0, 5, 0])  # image 1's responsible region 2 is outside cluster 5
    assert cluster_influence(5, labels_1, in_c, resp, np.array([2, 2, 2]), true, correct, {0: -0.3}) == 0.5
    assert cluster_influence(5, labels_1, in_c, resp, np.array([2, 1, 2]), true, correct, {0: -0.3}) == 1.0


def test_silhouette_matches_sklearn():
    from sklearn.metrics import silhouette_score

    from medfm.methods.ravl.discover import cosine_distance

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    d = cosine_distance(x).astype(np.float64)
    np.fill_diagonal(d, 0)
    lab = rng.integers(0, 4, 60)
    assert silhouette_precomputed(d, lab) == pytest.approx(silhouette_score(d, lab, metric="precomputed"), abs=1e-6)


def _toy_embeddings(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.eye(8, dtype=np.float32)[:4]
    lab = rng.integers(0, 4, 200)
    x = centers[lab] + 0.05 * rng.normal(size=(200, 8)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), lab


def test_cluster_regions_recovers_planted_clusters_and_subsample_path():
    from sklearn.metrics import adjusted_rand_score

    x, lab = _toy_embeddings()
    cl = cluster_regions(x, num_classes=2, seed=0)  # sweep K = 4..9
    assert cl.k == 4 and set(cl.silhouettes) == set(range(4, 10))
    assert adjusted_rand_score(lab, cl.labels) == pytest.approx(1.0)
    sub = cluster_regions(x, num_classes=2, seed=0, max_fit_regions=50)  # fit on 50, assign the rest
    assert sub.fit_size == 50 and adjusted_rand_score(lab, sub.labels) > 0.95
    order = rank_regions(x, cl.labels, 0, int(cl.medoids[0]))
    assert order[0] == cl.medoids[0] and np.all(cl.labels[order] == 0)
    with pytest.raises(DataError, match="too few"):
        cluster_regions(x[:2], num_classes=2)


def _planted_discovery_inputs(n: int = 200, seed: int = 0):
    """Two regions per image; a 'marker' region (direction e0) in half the images makes the model predict 1."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    marker = rng.random(n) < 0.5
    dirs = np.eye(6, dtype=np.float32)
    emb, scores, owner, spur = [], [], [], []
    for i in range(n):
        core = dirs[1 + y[i]] + 0.05 * rng.normal(size=6)
        if marker[i]:
            other = dirs[0] + 0.02 * rng.normal(size=6)
        else:
            other = dirs[4 + rng.integers(0, 2)] + 0.05 * rng.normal(size=6)
        for e, is_m in ((core, False), (other, bool(marker[i]))):
            emb.append(e / np.linalg.norm(e))
            owner.append(i)
            spur.append(is_m)
            scores.append([0.05, 0.95] if is_m else ([0.7, 0.3] if y[i] == 0 else [0.3, 0.7]))
    # without the marker, class 1 is recognised only half the time; with it, everything is called class 1
    miss = (y == 1) & ~marker & (rng.random(n) < 0.5)
    pred = np.where(marker, 1, np.where(miss, 0, y))
    return np.array(emb, np.float32), np.array(owner), y, pred, np.array(scores), np.array(spur)


def test_discover_finds_planted_marker_cluster():
    emb, owner, y, pred, scores, spur = _planted_discovery_inputs()
    d = discover(emb, owner, y, pred, scores, num_classes=2)
    assert d.found
    top = d.stats[d.top_cluster]
    assert top.gaps[1] > 0 > top.gaps[0] and top.influence == pytest.approx(1.0)
    assert precision_at_k(d.top_regions(), spur, 10) == 1.0
    assert d.attribute() == 1
    # ablations and filters: an impossible influence threshold leaves nothing
    none = discover(emb, owner, y, pred, scores, num_classes=2, min_influence=1.01, clustering=d.clustering)
    assert not none.found and "no spurious feature found" in none.message and len(none.top_regions()) == 0


def test_discover_all_correct_model_reports_nothing():
    emb, owner, y, _pred, scores, _ = _planted_discovery_inputs()
    d = discover(emb, owner, y, y.copy(), scores, num_classes=2)
    assert not d.found and "makes no errors" in d.message


def test_precision_at_k_edge_cases():
    assert precision_at_k(np.array([3, 1, 2]), np.array([0, 1, 0, 1], bool), 2) == 1.0
    assert precision_at_k(np.array([1, 0, 2]), np.array([0, 1, 0], bool), 2) == 0.5  # both of the top 2 count
    assert precision_at_k(np.array([], np.int64), np.zeros(3, bool)) is None


# -- losses --------------------------------------------------------------------------------------------------------------


def test_region_aware_loss_terms_hand_computed():
    import torch

    from medfm.methods.ravl.mitigate import (
        clip_loss,
        gdro_update,
        group_losses,
        label_spurious_regions,
        region_aware_loss,
        spurious_negative_loss,
        upsample_weights,
    )

    z_img = torch.eye(2)
    z_txt = torch.eye(2)
    scale = torch.tensor(1.0)
    ce = -math.log(math.e / (math.e + 1))
    assert float(clip_loss(z_img, z_txt, scale)) == pytest.approx(ce, abs=1e-6)
    # one spurious region identical to caption 0: an extra negative with logit 1 for row 0, 0 for row 1
    z_sp = torch.tensor([[1.0, 0.0]])
    expect = 0.5 * (-math.log(math.e / (math.e + 1 + math.e)) - math.log(math.e / (math.e + 1 + 1)))
    assert float(spurious_negative_loss(z_img, z_txt, z_sp, scale)) == pytest.approx(expect, abs=1e-6)
    # regions: image 0 has a core region = e0 and a spurious one; image 1 only core = e1 -> L_core = CLIP loss
    z_reg = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    owner = torch.tensor([0, 0, 1])
    sp = torch.tensor([False, True, False])
    loss, parts = region_aware_loss(z_img, z_txt, z_reg, owner, sp, scale, lambda_core=2.0, lambda_spur=0.5)
    exp_spur = float(spurious_negative_loss(z_img, z_txt, z_reg[1:2], scale))
    assert parts["loss_core"] == pytest.approx(ce, abs=1e-6)
    assert float(loss) == pytest.approx(ce + 2.0 * ce + 0.5 * exp_spur, abs=1e-5)
    # GroupDRO pieces
    gl, present = group_losses(torch.tensor([1.0, 3.0, 2.0]), torch.tensor([0, 0, 2]), 4)
    assert gl.tolist() == [2.0, 0.0, 2.0, 0.0] and present.tolist() == [True, False, True, False]
    q = gdro_update(torch.full((4,), 0.25), gl, present, eta=1.0)
    w = np.array([math.e**2, 1, math.e**2, 1])
    assert q.numpy() == pytest.approx(w / w.sum(), abs=1e-6)
    assert upsample_weights(np.array([0, 0, 0, 1])).tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 6, 0.5])
    lab = label_spurious_regions(np.array([[1, 0], [0, 1], [0.9, 0.1]]), np.array([[1, 0], [0, 1]]), [0])
    assert lab.tolist() == [True, False, True]


def test_manifest_audit_set_reads_boxes_and_rejects_bad_cells(tmp_path):
    from PIL import Image

    from medfm.methods.ravl.data import manifest_audit_set

    rows = ["image,label,caption,regions,marker"]
    for i in range(4):
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(tmp_path / f"im{i}.png")
        marker = '"[[1, 1, 4, 4]]"' if i % 2 else ""
        rows.append(f'im{i}.png,{"cat" if i < 2 else "dog"},a photo,"[[0, 0, 8, 8], [8, 8, 16, 16]]",{marker}')
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    data = manifest_audit_set(tmp_path / "m.csv", region_column="regions", spurious_column="marker")
    assert data.classnames == ["cat", "dog"] and data.labels.tolist() == [0, 0, 1, 1]
    assert data.images.shape == (4, 1, 16, 16) and data.regions[0] == [[0, 0, 8, 8], [8, 8, 16, 16]]
    assert data.has_spurious.tolist() == [False, True, False, True]
    (tmp_path / "bad.csv").write_text("image,label,regions\nim0.png,cat,not-json\n")
    with pytest.raises(DataError, match="column regions"):
        manifest_audit_set(tmp_path / "bad.csv", region_column="regions")
    with pytest.raises(DataError, match="missing column"):
        manifest_audit_set(tmp_path / "bad.csv", label_column="finding")
