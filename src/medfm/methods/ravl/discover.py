"""RaVL discovery (spec §2.2 steps 4-9): region clusters, performance gaps, influence, filtering and ranking.

Given region embeddings ``R`` (rows unit-norm) with the image each region belongs to, true and predicted
image labels and zero-shot score distributions of images and regions:

1. :func:`cluster_regions`: K-medoids (FasterPAM, ``kmedoids`` package) on the cosine distance
   ``D = clip(1 - R R^T, 0, 1)`` computed once, for every K in ``2C .. 5C-1``; the K with the highest
   silhouette (computed from the same D) wins. Above ``max_fit_regions`` regions, a seeded random subset is
   clustered and the remaining regions join their nearest medoid (CLARA-style), so memory and time stay
   bounded at 100k+ regions.
2. :func:`cluster_gaps`: per class ``l`` present in the cluster, ``gap_l = w_l (acc_in(l) - acc_out(l))`` with
   ``w_l = 2 min(n_in, n_out) / (n_in + n_out)``; score ``G_c = sum_l |gap_l|``; spurious pattern when gaps of
   both signs exist.
3. :func:`cluster_influence`: among misclassified images with more than one region whose true class has a
   negative gap, the fraction whose most-responsible region (highest region score for the predicted class)
   lies in the cluster; ``I_c`` is the maximum over those classes.
4. :func:`discover`: keep clusters with both signs and ``I_c >= min_influence``, rank by ``G_c``, rank each
   kept cluster's regions by cosine similarity to its medoid.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfm.core.errors import DataError

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------------
# Clustering


def cosine_distance(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """``clip(1 - a b^T, 0, 1)`` for unit rows (float32)."""
    a = np.asarray(a, np.float32)
    b = a if b is None else np.asarray(b, np.float32)
    d = 1.0 - a @ b.T
    np.clip(d, 0.0, 1.0, out=d)
    return d


def silhouette_precomputed(dist: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette from a precomputed distance matrix (sklearn's definition; singletons score 0).

    Uses one (n, n) x (n, k) product for all per-cluster distance sums, so the K sweep never copies D.
    """
    labels = np.asarray(labels)
    uniq, lab = np.unique(labels, return_inverse=True)
    k, n = len(uniq), len(lab)
    if k < 2 or k >= n:
        return float("nan")
    onehot = np.zeros((n, k), dist.dtype)
    onehot[np.arange(n), lab] = 1
    sums = dist @ onehot  # (n, k)
    counts = onehot.sum(0)
    own = counts[lab]
    a = sums[np.arange(n), lab] / np.maximum(own - 1, 1)
    mean_other = sums / counts[None, :]
    mean_other[np.arange(n), lab] = np.inf
    b = mean_other.min(1)
    s = (b - a) / np.maximum(np.maximum(a, b), 1e-12)
    s[own <= 1] = 0.0
    return float(s.mean())


@dataclass
class Clustering:
    """Result of :func:`cluster_regions`.

    Attributes:
        labels: (R,) cluster id of every region.
        medoids: (K,) region index of each cluster's medoid.
        k: chosen number of clusters.
        silhouettes: K -> silhouette of the sweep.
        fit_size: regions clustered directly (the rest were assigned to the nearest medoid).
        seconds: wall-clock time of the sweep.
    """

    labels: np.ndarray
    medoids: np.ndarray
    k: int
    silhouettes: dict[int, float]
    fit_size: int
    seconds: float = 0.0


def k_range(num_classes: int, n_regions: int) -> list[int]:
    """RaVL's sweep ``2C .. 5C-1``, clipped to ``[2, n_regions - 1]`` (empty when fewer than 3 regions)."""
    hi = min(5 * num_classes - 1, n_regions - 1)
    lo = min(2 * num_classes, hi)
    return list(range(max(2, lo), hi + 1)) if hi >= 2 else []


def cluster_regions(
    emb: np.ndarray,
    num_classes: int,
    ks: list[int] | None = None,
    seed: int = 0,
    max_fit_regions: int = 8000,
    max_iter: int = 100,
    n_cpu: int = 1,
) -> Clustering:
    """K-medoids sweep on cosine distances with silhouette model selection (see module docstring).

    Args:
        emb: (R, D) unit region embeddings.
        num_classes: C; the default sweep is ``2C .. 5C-1``.
        ks: explicit K values instead of the default sweep.
        seed: seeds FasterPAM's random initialisation and the fit subset.
        max_fit_regions: cluster at most this many regions directly (the rest join the nearest medoid).
        max_iter: FasterPAM iterations.
        n_cpu: FasterPAM threads.
    """
    import kmedoids

    t0 = time.perf_counter()
    emb = np.asarray(emb, np.float32)
    n = len(emb)
    ks = [k for k in (ks if ks is not None else k_range(num_classes, n)) if 2 <= k < n]
    if not ks:
        raise DataError(f"{n} regions are too few to form 2C..5C-1 = {2 * num_classes}..{5 * num_classes - 1} "
                        "clusters; give more images or a finer region grid")  # fmt: skip
    rng = np.random.default_rng(seed)
    fit = np.sort(rng.choice(n, size=max_fit_regions, replace=False)) if n > max_fit_regions else np.arange(n)
    dist = cosine_distance(emb[fit]).astype(np.float64)  # computed once for the whole sweep
    best: tuple[float, int, Any] | None = None
    sils: dict[int, float] = {}
    for k in ks:
        res = kmedoids.fasterpam(dist, k, max_iter=max_iter, init="random", random_state=seed, n_cpu=n_cpu)
        s = silhouette_precomputed(dist, np.asarray(res.labels))
        sils[k] = s
        if np.isfinite(s) and (best is None or s > best[0]):
            best = (s, k, res)
    if best is None:  # every K degenerate (e.g. identical embeddings): fall back to the smallest K
        k = ks[0]
        res = kmedoids.fasterpam(dist, k, max_iter=max_iter, init="random", random_state=seed, n_cpu=n_cpu)
        best = (float("nan"), k, res)
    _, k, res = best
    medoids = fit[np.asarray(res.medoids, np.int64)]
    if len(fit) == n:
        labels = np.asarray(res.labels, np.int64)
    else:
        labels = np.empty(n, np.int64)
        for s in range(0, n, 20000):
            labels[s : s + 20000] = cosine_distance(emb[s : s + 20000], emb[medoids]).argmin(1)
    secs = time.perf_counter() - t0
    log.info("k-medoids sweep K=%s..%s on %d/%d regions: K=%d (silhouette %.3f) in %.1f s",
             ks[0], ks[-1], len(fit), n, k, sils.get(k, float("nan")), secs)  # fmt: skip
    return Clustering(labels, medoids, k, sils, len(fit), secs)


# ----------------------------------------------------------------------------------------------------------------------
# Scores


@dataclass
class ClusterStats:
    """Per-cluster discovery statistics.

    Attributes:
        cluster: cluster id.
        size: number of regions.
        gaps: class index -> weighted performance gap (classes with both groups non-empty).
        table: per-class rows: class, n_present, acc_present, n_absent, acc_absent, weight, gap.
        score: G_c = sum of |gaps|.
        both_signs: at least one positive and one negative gap.
        influence: I_c (None when no misclassified image of a hurt class qualifies).
        spurious: passes both filters.
    """

    cluster: int
    size: int
    gaps: dict[int, float]
    table: list[dict[str, Any]]
    score: float
    both_signs: bool
    influence: float | None
    spurious: bool = False

    def helps(self) -> list[int]:
        return [c for c, g in self.gaps.items() if g > 0]

    def hurts(self) -> list[int]:
        return [c for c, g in self.gaps.items() if g < 0]


def cluster_gaps(
    in_cluster: np.ndarray, img_true: np.ndarray, img_correct: np.ndarray, weighted: bool = True
) -> tuple[dict[int, float], list[dict[str, Any]]]:
    """Weighted per-class performance gaps of one cluster.

    Args:
        in_cluster: (N,) bool, image has at least one region in the cluster (the IN group).
        img_true: (N,) true class.
        img_correct: (N,) bool, zero-shot prediction is correct.
        weighted: multiply by the balance weight ``2 min(n_in, n_out) / (n_in + n_out)`` (RaVL); False gives the
            unweighted ablation.

    Returns:
        ``(class -> gap, per-class table rows)``; classes of IN images whose OUT group is empty get no gap.
    """
    gaps: dict[int, float] = {}
    rows: list[dict[str, Any]] = []
    for c in np.unique(img_true[in_cluster]):
        same = img_true == c
        i_in, i_out = same & in_cluster, same & ~in_cluster
        n_in, n_out = int(i_in.sum()), int(i_out.sum())
        if n_in == 0 or n_out == 0:
            continue
        acc_in, acc_out = float(img_correct[i_in].mean()), float(img_correct[i_out].mean())
        w = 2.0 * min(n_in, n_out) / (n_in + n_out) if weighted else 1.0
        gaps[int(c)] = w * (acc_in - acc_out)
        rows.append({"class": int(c), "n_present": n_in, "acc_present": acc_in, "n_absent": n_out,
                     "acc_absent": acc_out, "weight": w, "gap": gaps[int(c)]})  # fmt: skip
    return gaps, rows


def responsible_regions(
    region_image: np.ndarray, region_scores: np.ndarray, img_pred: np.ndarray, n_images: int
) -> np.ndarray:
    """(N,) index of the region of each image with the highest score for the image's predicted class (-1: none)."""
    s = region_scores[np.arange(len(region_image)), img_pred[region_image]]
    order = np.lexsort((-s, region_image))  # by image, best score first
    first = np.full(n_images, -1, np.int64)
    img_sorted = region_image[order]
    starts = np.flatnonzero(np.r_[True, img_sorted[1:] != img_sorted[:-1]])
    first[img_sorted[starts]] = order[starts]
    return first


def cluster_influence(
    cluster: int,
    labels: np.ndarray,
    in_cluster: np.ndarray,
    responsible: np.ndarray,
    n_regions: np.ndarray,
    img_true: np.ndarray,
    img_correct: np.ndarray,
    gaps: dict[int, float],
) -> float | None:
    """I_c: max over hurt classes of the fraction of their misclassified (multi-region, IN) images whose
    most-responsible region lies in the cluster; None when no image qualifies."""
    best: float | None = None
    for c, g in gaps.items():
        if g >= 0:
            continue
        sel = in_cluster & (n_regions > 1) & ~img_correct & (img_true == c) & (responsible >= 0)
        if not sel.any():
            continue
        frac = float(np.mean(labels[responsible[sel]] == cluster))
        best = frac if best is None else max(best, frac)
    return best


# ----------------------------------------------------------------------------------------------------------------------
# Discovery


@dataclass
class Discovery:
    """Output of :func:`discover`.

    Attributes:
        clustering: the chosen clustering.
        stats: per-cluster statistics (all clusters).
        ranked_clusters: ids of clusters passing the filters, best first.
        ranked_regions: cluster id -> its region indices sorted by cosine similarity to the medoid.
        message: human summary ("no spurious feature found" when nothing passes).
    """

    clustering: Clustering
    stats: dict[int, ClusterStats]
    ranked_clusters: list[int]
    ranked_regions: dict[int, np.ndarray] = field(default_factory=dict)
    message: str = ""

    @property
    def found(self) -> bool:
        return bool(self.ranked_clusters)

    @property
    def top_cluster(self) -> int | None:
        return self.ranked_clusters[0] if self.ranked_clusters else None

    def top_regions(self, k: int | None = None) -> np.ndarray:
        """Region indices of the top cluster, best first (empty when nothing was found)."""
        if not self.ranked_clusters:
            return np.zeros(0, np.int64)
        r = self.ranked_regions[self.ranked_clusters[0]]
        return r if k is None else r[:k]

    def attribute(self) -> int | None:
        """The class most associated with the top cluster: largest acc_present - acc_absent."""
        top = self.top_cluster
        if top is None or not self.stats[top].table:
            return None
        row = max(self.stats[top].table, key=lambda r: r["acc_present"] - r["acc_absent"])
        return int(row["class"])


def rank_regions(emb: np.ndarray, labels: np.ndarray, cluster: int, medoid: int) -> np.ndarray:
    """Regions of ``cluster`` sorted by cosine similarity to the medoid region, most similar first."""
    members = np.flatnonzero(labels == cluster)
    sim = emb[members] @ emb[medoid]
    return members[np.argsort(-sim, kind="stable")]


def discover(
    region_emb: np.ndarray,
    region_image: np.ndarray,
    img_true: np.ndarray,
    img_pred: np.ndarray,
    region_scores: np.ndarray,
    num_classes: int,
    min_influence: float = 0.25,
    use_gap: bool = True,
    use_influence: bool = True,
    weighted: bool = True,
    clustering: Clustering | None = None,
    seed: int = 0,
    max_fit_regions: int = 8000,
    ks: list[int] | None = None,
) -> Discovery:
    """Run RaVL discovery (module docstring). Ablations: ``use_gap=False`` ranks by influence only (filter by
    influence), ``use_influence=False`` keeps the both-signs filter only, ``weighted=False`` drops the balance
    weight.

    Args:
        region_emb: (R, D) unit region embeddings.
        region_image: (R,) image index of each region.
        img_true: (N,) true classes.
        img_pred: (N,) zero-shot predicted classes (argmax of the image score distribution).
        region_scores: (R, C) zero-shot score distributions of regions.
        num_classes: C.
        min_influence: influence threshold (RaVL: 0.25).
        clustering: reuse a precomputed clustering.
    """
    img_true = np.asarray(img_true, np.int64)
    img_pred = np.asarray(img_pred, np.int64)
    region_image = np.asarray(region_image, np.int64)
    n = len(img_true)
    if len(region_emb) != len(region_image) or len(region_scores) != len(region_image):
        raise DataError("region embeddings, region scores and region_image must have the same length")
    if len(img_pred) != n:
        raise DataError(f"{len(img_pred)} predictions for {n} images")
    cl = clustering or cluster_regions(region_emb, num_classes, ks=ks, seed=seed, max_fit_regions=max_fit_regions)
    correct = img_pred == img_true
    responsible = responsible_regions(region_image, region_scores, img_pred, n)
    n_regions = np.bincount(region_image, minlength=n)
    stats: dict[int, ClusterStats] = {}
    for c in range(cl.k):
        members = cl.labels == c
        in_cluster = np.zeros(n, bool)
        in_cluster[region_image[members]] = True
        gaps, table = cluster_gaps(in_cluster, img_true, correct, weighted=weighted)
        both = any(g > 0 for g in gaps.values()) and any(g < 0 for g in gaps.values())
        infl = cluster_influence(c, cl.labels, in_cluster, responsible, n_regions, img_true, correct, gaps)
        score = float(sum(abs(g) for g in gaps.values()))
        ok_gap = both if use_gap else any(g < 0 for g in gaps.values())
        ok_infl = (infl is not None and infl >= min_influence) if use_influence else True
        stats[c] = ClusterStats(c, int(members.sum()), gaps, table, score, both, infl, ok_gap and ok_infl)
    kept = [c for c, s in stats.items() if s.spurious]
    key = (lambda c: stats[c].score) if use_gap else (lambda c: stats[c].influence or 0.0)
    ranked = sorted(kept, key=lambda c: (-key(c), c))
    ranked_regions = {c: rank_regions(region_emb, cl.labels, c, int(cl.medoids[c])) for c in ranked}
    if ranked:
        top = stats[ranked[0]]
        msg = (f"{len(ranked)} of {cl.k} region clusters look spurious; top cluster {ranked[0]} "
               f"({top.size} regions) helps classes {top.helps()} and hurts {top.hurts()}")  # fmt: skip
    elif not (~correct).any():
        msg = "no spurious feature found: the model makes no errors on this set"
    else:
        msg = f"no spurious feature found: no region cluster of {cl.k} passes the both-signs and influence filters"
    log.info(msg)
    return Discovery(cl, stats, ranked, ranked_regions, msg)


def precision_at_k(ranked: np.ndarray, region_is_spurious: np.ndarray, k: int = 10) -> float | None:
    """Fraction of the first ``min(k, len(ranked))`` ranked regions that contain the spurious feature (None if empty)."""
    top = np.asarray(ranked)[:k]
    if len(top) == 0:
        return None
    return float(np.mean(np.asarray(region_is_spurious)[top]))
