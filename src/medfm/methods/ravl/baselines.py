"""Image-level discovery baselines (spec §2.4 / §3.3), scored with RaVL's region Precision@k.

Each baseline ranks *images* by how strongly they exhibit the failure it finds; to score it with region
Precision@k, each ranked image contributes its most-responsible region (the region with the highest zero-shot
score for the image's predicted class), as the spec suggests for fairness.

- :func:`rank_random`: a random order of all images.
- :func:`rank_distilling_failures`: Distilling-Failures-lite (Jain et al. 2022): for the class with most errors,
  a linear SVM on image embeddings separating errors from correct predictions; images ranked by the error margin.
- :func:`rank_george`: GEORGE-lite (Sohoni et al. 2020): k-means inside each class; the lowest-accuracy cluster's
  images ranked by distance to its centre.
- :func:`rank_domino`: Domino-lite (Eyuboglu et al. 2022): a Gaussian mixture over [image embedding, error,
  predicted-class text embedding]; the component with the highest error rate, images ranked by responsibility.
"""

from __future__ import annotations

import numpy as np

from medfm.methods.ravl.discover import responsible_regions


def rank_random(n_images: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n_images)


def rank_distilling_failures(img_emb: np.ndarray, true: np.ndarray, pred: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.svm import LinearSVC

    err = pred != true
    counts = np.bincount(true[err], minlength=true.max() + 1) if err.any() else np.zeros(1)
    c = int(np.argmax(counts))
    sel = np.flatnonzero(true == c)
    if err[sel].all() or not err[sel].any():
        return sel
    svm = LinearSVC(C=1.0, class_weight="balanced", random_state=seed).fit(img_emb[sel], err[sel])
    return sel[np.argsort(-svm.decision_function(img_emb[sel]), kind="stable")]


def rank_george(img_emb: np.ndarray, true: np.ndarray, pred: np.ndarray, k: int = 3, seed: int = 0) -> np.ndarray:
    from sklearn.cluster import KMeans

    best: tuple[float, np.ndarray] | None = None
    for c in np.unique(true):
        sel = np.flatnonzero(true == c)
        if len(sel) < 2 * k:
            continue
        km = KMeans(k, n_init=3, random_state=seed).fit(img_emb[sel])
        for j in range(k):
            members = sel[km.labels_ == j]
            if len(members) < 5:
                continue
            acc = float(np.mean(pred[members] == true[members]))
            if best is None or acc < best[0]:
                d = np.linalg.norm(img_emb[members] - km.cluster_centers_[j], axis=1)
                best = (acc, members[np.argsort(d, kind="stable")])
    return best[1] if best is not None else np.arange(len(true))


def rank_domino(
    img_emb: np.ndarray, true: np.ndarray, pred: np.ndarray, classifier: np.ndarray, k: int = 8, seed: int = 0,
    error_weight: float = 5.0,
) -> np.ndarray:  # fmt: skip
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    err = (pred != true).astype(np.float32)
    feats = np.concatenate([img_emb, classifier.T[pred]], axis=1)
    feats = PCA(min(16, feats.shape[1], len(feats) - 1), random_state=seed).fit_transform(feats)
    x = np.concatenate([feats, error_weight * err[:, None] * feats.std()], axis=1).astype(np.float64)
    gm = GaussianMixture(min(k, len(x) // 5 or 1), covariance_type="diag", reg_covar=1e-3, random_state=seed).fit(x)
    resp = gm.predict_proba(x)
    rate = (resp * err[:, None]).sum(0) / resp.sum(0).clip(1e-9)
    j = int(np.argmax(rate))
    return np.argsort(-resp[:, j], kind="stable")


def image_ranking_to_regions(
    ranked_images: np.ndarray, region_image: np.ndarray, region_scores: np.ndarray, img_pred: np.ndarray
) -> np.ndarray:
    """Each ranked image's most-responsible region, in the same order."""
    resp = responsible_regions(region_image, region_scores, img_pred, len(img_pred))
    regions = resp[np.asarray(ranked_images, np.int64)]
    return regions[regions >= 0]
