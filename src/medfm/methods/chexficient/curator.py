"""CheXficient's prototype-driven online curator (spec §1.4), as small pure functions plus a stateful class.

Notation (spec): ``z_img, z_txt`` are unit image / report embeddings of shape ``(B, D)``; the *joint feature*
``u = normalise([z_img ; z_txt])`` has shape ``(B, 2D)``; the *prototypes* ``P`` are ``K`` unit vectors of shape
``(K, 2D)``. Per global batch:

1. every pair is assigned to its nearest prototype, ``m_i`` = Euclidean distance to it;
2. per prototype, pairs beyond the ``q_outlier`` percentile of ``m`` are dropped (outliers), pairs between the
   ``q_support`` and ``q_outlier`` percentiles are all kept (the *support* band, under-represented but
   informative), and the *central* mass below ``q_support`` is thinned to at most ``max_per_cluster`` pairs by
   farthest-point sampling (redundancy removal);
3. the contrastive loss uses kept pairs only; their ids join the curated subset;
4. after the optimiser step the prototypes move by an EMA (decay 0.9) towards the mean kept feature of the
   pairs assigned to them by a Sinkhorn-balanced hard assignment.

Selection always runs on the *gathered* global batch (every micro-batch and every process), so the kept set
at a global batch of 480 is the same whether the batch was computed in one piece on one CPU or in shards on
8 GPUs (:class:`GatheredBatch`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------------
# Pure functions


def joint_features(z_img: torch.Tensor, z_txt: torch.Tensor) -> torch.Tensor:
    """``normalise([z_img ; z_txt])``: ``(B, D)`` + ``(B, D)`` -> ``(B, 2D)`` unit rows (float32)."""
    return F.normalize(torch.cat([z_img.float(), z_txt.float()], dim=1), dim=1)


def init_prototypes(features: torch.Tensor | np.ndarray, k: int, niter: int = 20, seed: int = 42) -> torch.Tensor:
    """Prototypes by FAISS k-means on joint features (spec §1.4 A).

    Args:
        features: ``(N, 2D)`` joint features, N >= k.
        k: number of prototypes.
        niter: k-means iterations.
        seed: FAISS k-means seed.

    Returns:
        ``(k, 2D)`` float32 unit-norm centroids.
    """
    import faiss

    x = np.ascontiguousarray(torch.as_tensor(features).detach().cpu().float().numpy())
    if x.shape[0] < k:
        raise ValueError(f"k-means needs at least k={k} samples, got {x.shape[0]}")
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, verbose=False, min_points_per_centroid=1)
    km.train(x)
    return F.normalize(torch.from_numpy(np.array(km.centroids, dtype=np.float32)), dim=1)


def assign_to_prototypes(u: torch.Tensor, prototypes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest prototype and its Euclidean distance: ``(B,)`` long and ``(B,)`` float."""
    d = torch.cdist(u.float(), prototypes.float().to(u.device))
    m, c = d.min(dim=1)
    return c, m


def farthest_point_sampling(x: torch.Tensor, m: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Greedy farthest-point sampling: ``m`` row indices of ``x`` (``(n, d)``), first one at random.

    Each next point maximises its minimum Euclidean distance to the points chosen so far (ties: lowest index).
    Returns all indices when ``m >= n``.
    """
    n = x.shape[0]
    if m >= n:
        return torch.arange(n)
    first = int(torch.randint(n, (1,), generator=generator).item())
    chosen = [first]
    min_d = torch.cdist(x[first : first + 1].float(), x.float())[0]
    for _ in range(m - 1):
        nxt = int(torch.argmax(min_d).item())
        chosen.append(nxt)
        min_d = torch.minimum(min_d, torch.cdist(x[nxt : nxt + 1].float(), x.float())[0])
    return torch.tensor(chosen, dtype=torch.long)


def density_sampling(x: torch.Tensor, m: int, k: int = 5) -> torch.Tensor:
    """The ``m`` rows of ``x`` in the sparsest neighbourhoods (largest mean distance to their ``k`` nearest)."""
    n = x.shape[0]
    if m >= n:
        return torch.arange(n)
    d = torch.cdist(x.float(), x.float())
    kk = min(k + 1, n)
    knn = d.topk(kk, dim=1, largest=False).values[:, 1:]
    return torch.argsort(knn.mean(dim=1), descending=True, stable=True)[:m]


def sinkhorn_knopp(scores: torch.Tensor, eps: float = 0.5, iters: int = 3) -> torch.Tensor:
    """SwAV's Sinkhorn–Knopp equipartition of ``(B, K)`` similarity scores.

    Q = exp(scores / eps), then alternately normalise prototype rows to mass 1/K and sample columns to mass
    1/B. Returns ``(B, K)`` soft assignments whose rows sum to 1 (exactly after the last iteration) and whose
    columns sum to about B/K.
    """
    q = torch.exp((scores.float() - scores.float().max()) / eps).T  # (K, B), shifted for stability
    q = q / q.sum()
    k, b = q.shape
    for _ in range(iters):
        q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).T


def ema_update_prototypes(
    prototypes: torch.Tensor, features: torch.Tensor, assignment: torch.Tensor, decay: float = 0.9
) -> torch.Tensor:
    """``p_k <- decay * p_k + (1 - decay) * mean(features assigned to k)``, renormalised (spec §1.4 B.6).

    Args:
        prototypes: ``(K, 2D)`` unit vectors.
        features: ``(n, 2D)`` kept joint features.
        assignment: ``(n,)`` hard prototype index per feature.
        decay: EMA decay. Prototypes with no assignee keep their direction.

    Returns:
        New ``(K, 2D)`` unit prototypes (a new tensor).
    """
    p = prototypes.clone().float()
    f = features.float().to(p.device)
    for k in range(p.shape[0]):
        members = assignment == k
        if bool(members.any()):
            p[k] = decay * p[k] + (1.0 - decay) * f[members].mean(dim=0)
    return F.normalize(p, dim=1)


@dataclass
class Selection:
    """Masks of one curation step over the gathered global batch (all ``(B,)``).

    Attributes:
        keep: support ∪ thinned central (the pairs the loss uses).
        outlier: beyond the ``q_outlier`` percentile of their prototype (dropped).
        support: between ``q_support`` and ``q_outlier`` (all kept).
        central: at most ``q_support`` (thinned to ``max_per_cluster``).
        assignment: nearest prototype per pair.
        distance: Euclidean distance to that prototype.
    """

    keep: torch.Tensor
    outlier: torch.Tensor
    support: torch.Tensor
    central: torch.Tensor
    assignment: torch.Tensor
    distance: torch.Tensor

    @property
    def n_keep(self) -> int:
        return int(self.keep.sum().item())


def select_samples(
    u: torch.Tensor,
    prototypes: torch.Tensor,
    q_outlier: float = 0.95,
    q_support: float = 0.85,
    max_per_cluster: int = 10,
    thinning: str = "fps",
    generator: torch.Generator | None = None,
) -> Selection:
    """The per-prototype percentile-band selection of spec §1.4 B.2-3.

    Args:
        u: ``(B, 2D)`` joint features of the whole (gathered) global batch.
        prototypes: ``(K, 2D)`` unit prototypes.
        q_outlier: percentile (0-1) above which pairs are outliers (dropped).
        q_support: percentile (0-1) above which (and up to ``q_outlier``) pairs form the kept support band.
        max_per_cluster: M, how many central pairs per prototype survive the thinning.
        thinning: ``fps`` (farthest-point sampling, random first point), ``density`` (sparsest by 5-NN
            distance) or ``random``.
        generator: RNG for the FPS start point / random thinning (makes selection reproducible).

    Returns:
        A :class:`Selection`. Percentiles use linear interpolation (``numpy.percentile``'s default).
    """
    u = u.detach().float()
    assignment, distance = assign_to_prototypes(u, prototypes)
    b = u.shape[0]
    keep = torch.zeros(b, dtype=torch.bool, device=u.device)
    outlier, support, central = keep.clone(), keep.clone(), keep.clone()
    for k in range(prototypes.shape[0]):
        idx = torch.nonzero(assignment == k, as_tuple=False).flatten()
        if idx.numel() == 0:
            continue
        mk = distance[idx]
        t_out = torch.quantile(mk, q_outlier)
        t_sup = torch.quantile(mk, q_support)
        out_k = mk > t_out
        sup_k = (mk > t_sup) & ~out_k
        cen_k = mk <= t_sup
        outlier[idx[out_k]] = True
        support[idx[sup_k]] = True
        central[idx[cen_k]] = True
        keep[idx[sup_k]] = True
        cidx = idx[cen_k]
        if cidx.numel() <= max_per_cluster:
            keep[cidx] = True
            continue
        if thinning == "fps":
            pick = farthest_point_sampling(u[cidx], max_per_cluster, generator=generator)
        elif thinning == "density":
            pick = density_sampling(u[cidx], max_per_cluster)
        elif thinning == "random":
            pick = torch.randperm(cidx.numel(), generator=generator)[:max_per_cluster]
        else:
            raise ValueError(f"unknown thinning {thinning!r}; expected fps, density or random")
        keep[cidx[pick.to(cidx.device)]] = True
    return Selection(keep, outlier, support, central, assignment, distance)


def expected_keep_fraction(batch_size: int, k: int, max_per_cluster: int, q_support: float = 0.85,
                           q_outlier: float = 0.95) -> float:  # fmt: skip
    """``((q_outlier - q_support) * B + K * M) / B``: the kept fraction when every prototype has > M central pairs.

    For B=480, K=6, M=10: (0.10 * 480 + 60) / 480 = 0.225 (the paper reports 22.7 %).
    """
    return ((q_outlier - q_support) * batch_size + k * max_per_cluster) / batch_size


def random_keep_mask(n: int, n_keep: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random-online baseline: a ``(n,)`` bool mask with ``n_keep`` uniformly chosen True entries."""
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[: max(0, min(n_keep, n))]] = True
    return mask


# ----------------------------------------------------------------------------------------------------------------------
# Gathering micro-batches / processes


@dataclass
class GatheredBatch:
    """Accumulates micro-batch embeddings and ids of one global batch before selection.

    Call :meth:`add` per micro-batch (after ``accelerator.gather`` across processes when distributed) and
    :meth:`joint` / :meth:`ids` once the global batch is complete; row order is the order of addition.
    """

    img: list[torch.Tensor] = field(default_factory=list)
    txt: list[torch.Tensor] = field(default_factory=list)
    id_chunks: list[torch.Tensor] = field(default_factory=list)

    def add(self, z_img: torch.Tensor, z_txt: torch.Tensor, ids: torch.Tensor) -> None:
        self.img.append(z_img.detach().float().cpu())
        self.txt.append(z_txt.detach().float().cpu())
        self.id_chunks.append(ids.detach().cpu().long())

    def __len__(self) -> int:
        return sum(int(x.shape[0]) for x in self.img)

    def joint(self) -> torch.Tensor:
        return joint_features(torch.cat(self.img), torch.cat(self.txt))

    def ids(self) -> torch.Tensor:
        return torch.cat(self.id_chunks)

    def ordered_like(self, rows: Any) -> GatheredBatch:
        """The same rows in the order of ``rows`` (the global batch), whatever order processes gathered them in.

        Selection and prototype updates depend on row order; restoring the global order makes the kept set the
        same on 1 and N processes."""
        ids = self.ids()
        where = {int(i): j for j, i in enumerate(ids.tolist())}
        order = torch.as_tensor([where[int(r)] for r in np.asarray(rows).tolist()], dtype=torch.long)
        return GatheredBatch([torch.cat(self.img)[order]], [torch.cat(self.txt)[order]], [ids[order]])


# ----------------------------------------------------------------------------------------------------------------------
# Stateful curator


class PrototypeCurator:
    """Prototypes + selection rule + curated-id set, with exact save/restore for resumable runs.

    Args:
        num_prototypes: K (paper: 6).
        q_outlier, q_support: percentile band edges (paper: 0.95, 0.85).
        max_per_cluster: M central pairs kept per prototype (paper: 10).
        thinning: ``fps`` | ``density`` | ``random``.
        ema_decay: prototype EMA decay (paper: 0.9).
        sinkhorn_eps, sinkhorn_iters: Sinkhorn–Knopp temperature and iterations (paper: 0.5, 3).
        kmeans_iters, kmeans_seed: FAISS k-means settings for the initialisation (paper: 20, 42).
        seed: seed of the curator's own RNG (FPS start points, random-online masks).
    """

    def __init__(
        self,
        num_prototypes: int = 6,
        q_outlier: float = 0.95,
        q_support: float = 0.85,
        max_per_cluster: int = 10,
        thinning: str = "fps",
        ema_decay: float = 0.9,
        sinkhorn_eps: float = 0.5,
        sinkhorn_iters: int = 3,
        kmeans_iters: int = 20,
        kmeans_seed: int = 42,
        seed: int = 0,
    ):
        if not 0.0 < q_support <= q_outlier <= 1.0:
            raise ValueError(f"need 0 < q_support <= q_outlier <= 1, got {q_support}, {q_outlier}")
        self.num_prototypes = num_prototypes
        self.q_outlier = q_outlier
        self.q_support = q_support
        self.max_per_cluster = max_per_cluster
        self.thinning = thinning
        self.ema_decay = ema_decay
        self.sinkhorn_eps = sinkhorn_eps
        self.sinkhorn_iters = sinkhorn_iters
        self.kmeans_iters = kmeans_iters
        self.kmeans_seed = kmeans_seed
        self.generator = torch.Generator().manual_seed(seed)
        self.prototypes: torch.Tensor | None = None
        self.kept_ids: set[int] = set()
        self.steps = 0
        self.seen = 0

    @property
    def initialised(self) -> bool:
        return self.prototypes is not None

    def init(self, features: torch.Tensor) -> torch.Tensor:
        """k-means (FAISS) initialisation on ``(N, 2D)`` joint features; returns the ``(K, 2D)`` prototypes."""
        self.prototypes = init_prototypes(features, self.num_prototypes, self.kmeans_iters, self.kmeans_seed)
        log.info("curator: %d prototypes initialised by k-means on %d joint features", self.num_prototypes,
                 len(features))  # fmt: skip
        return self.prototypes

    def select(self, u: torch.Tensor) -> Selection:
        """Select from the gathered global batch's ``(B, 2D)`` joint features."""
        if self.prototypes is None:
            raise RuntimeError("curator prototypes are not initialised; call init() first")
        return select_samples(u, self.prototypes, self.q_outlier, self.q_support, self.max_per_cluster,
                              self.thinning, self.generator)  # fmt: skip

    def random_mask(self, n: int, n_keep: int) -> torch.Tensor:
        """Random-online baseline mask with the curator's RNG (same keep count as the curator would give)."""
        return random_keep_mask(n, n_keep, self.generator)

    def record(self, ids: torch.Tensor, keep: torch.Tensor) -> None:
        """Add the kept ids of a step to the curated subset."""
        self.kept_ids.update(int(i) for i in ids[keep.cpu()].tolist())
        self.steps += 1
        self.seen += int(ids.numel())

    def update(self, u_keep: torch.Tensor) -> torch.Tensor:
        """Sinkhorn-balanced hard assignment of the kept features, then the EMA prototype update."""
        if self.prototypes is None:
            raise RuntimeError("curator prototypes are not initialised; call init() first")
        if u_keep.shape[0] == 0:
            return self.prototypes
        scores = u_keep.float() @ self.prototypes.T
        q = sinkhorn_knopp(scores, self.sinkhorn_eps, self.sinkhorn_iters)
        self.prototypes = ema_update_prototypes(self.prototypes, u_keep, q.argmax(dim=1), self.ema_decay)
        return self.prototypes

    # -- persistence -------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "prototypes": None if self.prototypes is None else self.prototypes.clone(),
            "kept_ids": sorted(self.kept_ids),
            "steps": self.steps,
            "seen": self.seen,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        p = state.get("prototypes")
        self.prototypes = None if p is None else torch.as_tensor(p).float().clone()
        self.kept_ids = {int(i) for i in state.get("kept_ids", [])}
        self.steps = int(state.get("steps", 0))
        self.seen = int(state.get("seen", 0))
        if state.get("generator") is not None:
            self.generator.set_state(torch.as_tensor(state["generator"], dtype=torch.uint8))
