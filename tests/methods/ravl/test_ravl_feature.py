"""RaVL's discovered feature as labels: regions nearest the top cluster's medoid, and the images holding them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from medfm.methods.ravl.feature import discovered_feature


def test_top_cluster_labels_regions_and_their_images():
    medoids = np.eye(3, dtype=np.float32)  # cluster c sits on axis c
    region_emb = np.array([[1, 0, 0], [0, 1, 0], [0.9, 0.1, 0], [0, 0, 1]], np.float32)
    emb = SimpleNamespace(region_emb=region_emb, region_image=np.array([0, 0, 2, 3]))
    feat, reg = discovered_feature(emb, {"ranked_clusters": [0, 2], "medoid_emb": medoids}, n_images=4)
    assert reg.tolist() == [True, False, True, False]  # only the top-ranked cluster (0) is the feature
    assert feat.tolist() == [True, False, True, False]  # image 1 has no regions; image 3's is cluster 2
    none, _ = discovered_feature(emb, {"ranked_clusters": [], "medoid_emb": medoids}, n_images=4)
    assert not none.any()
