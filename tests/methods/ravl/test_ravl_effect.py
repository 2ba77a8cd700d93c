"""Effect on known ground truth: RaVL finds the planted chest X-ray marker, and mitigation driven by what it
found raises worst-group accuracy."""

from __future__ import annotations

import numpy as np
import torch

from medfm.methods.ravl.discover import discover, precision_at_k
from medfm.methods.ravl.evaluation import evaluate_embedded
from medfm.methods.ravl.regions import region_has_feature
from medfm.methods.ravl.zeroshot import embed


def _discover(model, data):
    emb = embed(model, data, grid=2, region_mode="mask")
    d = discover(emb.region_emb, emb.region_image, data.labels, emb.image_pred, emb.region_scores, 3, seed=0)
    truth = region_has_feature(emb.boxes, emb.region_image, data.spurious_boxes)
    return emb, d, truth


def test_model_learned_the_shortcut(audited):
    ev = audited["eval"]
    emb = embed(audited["model"], ev, grid=2, region_mode="mask")
    marked = ev.has_spurious
    effusion = ev.labels == 2
    pred_eff = emb.image_pred == 2
    # the marker, not the finding, drives "pleural effusion": a validity check of the setting (spec §2.4)
    assert pred_eff[marked].mean() - pred_eff[~marked].mean() > 0.4
    assert effusion.sum() > 30 and marked.sum() > 30


def test_discovery_finds_planted_marker(audited):
    ev = audited["eval"]
    _emb, d, truth = _discover(audited["model"], ev)
    assert d.found, d.message
    p10 = precision_at_k(d.top_regions(), truth, 10)
    chance = float(truth.mean())
    assert chance < 0.15
    assert p10 >= 0.9, (p10, chance)  # chance is ~0.08: a broken ranking cannot pass
    top = d.stats[d.top_cluster]
    purity = truth[d.clustering.labels == d.top_cluster].mean()
    assert purity > 0.8
    assert ev.classnames[d.attribute()] == "pleural effusion"
    assert 2 in top.helps() and top.hurts()


def test_mitigation_with_discovered_feature_raises_worst_group(audited):
    from medfm.methods.ravl.mitigate import finetune, label_spurious_regions, tiny_clip

    ev, tr = audited["eval"], audited["train"]
    emb, d, _ = _discover(audited["model"], ev)
    before = evaluate_embedded(ev, emb, n_resamples=50)
    base = before["metrics"]
    medoids = emb.region_emb[d.clustering.medoids]
    tr_emb = embed(audited["model"], tr, grid=2, region_mode="mask")
    reg = label_spurious_regions(tr_emb.region_emb, medoids, d.ranked_clusters[:1])
    truth_tr = region_has_feature(tr_emb.boxes, tr_emb.region_image, tr.spurious_boxes)
    assert (reg == truth_tr).mean() > 0.95  # discovered labels of the fine-tuning regions match the marker
    feature = np.zeros(len(tr), bool)
    feature[tr_emb.region_image[reg]] = True
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fixed = finetune(tiny_clip(64, seed=0), tr, "upsample", steps=110, batch_size=48, lr=1e-3, seed=0,
                         feature=feature)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    after_all = evaluate_embedded(ev, embed(fixed, ev, grid=2, region_mode="mask"), n_resamples=50)
    after = after_all["metrics"]
    wg0, wg1 = base["image_worst_group_accuracy"].value, after["image_worst_group_accuracy"].value
    assert wg0 < 0.1 and wg1 > wg0 + 0.1, (wg0, wg1)
    # the two groups the shortcut hurts (marked normals, unmarked effusions) gain a lot on average
    before_groups = before["groups"]
    hurt = ("no finding|feature=1", "pleural effusion|feature=0")
    gain = np.mean([after_all["groups"][g]["image_accuracy"].value - before_groups[g]["image_accuracy"].value
                    for g in hurt])  # fmt: skip
    assert gain > 0.25, gain
