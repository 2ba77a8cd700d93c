"""The discovered spurious feature, as labels: which images carry it and which regions are it (RaVL §2.3).

Discovery ranks region clusters by how much they explain the model's errors; mitigation and the feature-group
baselines use the top-ranked cluster. A region is spurious when its nearest discovery medoid (cosine) is that
cluster's; an image carries the feature when any of its regions is spurious.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def discovered_feature(emb: Any, disc: dict[str, Any], n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """``(feature per image (N,) bool, spurious label per region (R,) bool)`` from the top discovered cluster.

    Args:
        emb: region embeddings of the images: ``region_emb`` ``(R, D)`` and ``region_image`` ``(R,)`` (owner index).
        disc: a discovery result with ``ranked_clusters`` (best first) and ``medoid_emb`` ``(K, D)``.
        n_images: N.
    """
    from medfm.methods.ravl.mitigate import label_spurious_regions

    top = disc["ranked_clusters"][:1]
    reg = label_spurious_regions(emb.region_emb, disc["medoid_emb"], top)
    feat = np.zeros(n_images, bool)
    feat[np.asarray(emb.region_image)[reg]] = True
    return feat, reg
