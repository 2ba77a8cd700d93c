"""One RadDiff run on one set pair: caption -> propose -> rank, then refine (and search) -> rank again."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from medfm.methods.raddiff.captioner import Captioner
from medfm.methods.raddiff.data import SetPair
from medfm.methods.raddiff.proposer import Proposal, Proposer, sample_rounds
from medfm.methods.raddiff.ranker import Embedder, EmbeddingStore, RankedHypothesis, rank_hypotheses, read_pil_gray

log = logging.getLogger(__name__)


@dataclass
class RankSettings:
    """Ranker settings: Welch alpha, ``correct_delta`` threshold, p-value filtering, per-set cap."""

    alpha: float = 0.05
    threshold: float = 0.3
    filter_pvalue: bool = False
    max_num_samples: int = 5000


@dataclass
class IterationResult:
    iteration: int
    ranked: list[RankedHypothesis]
    proposal: Proposal
    seconds: float


@dataclass
class DiffResult:
    """Everything one pair produced.

    Attributes:
        pair: the input.
        iterations: per iteration, the ranked hypotheses and the proposer's record.
        final: the ranked hypotheses of the last iteration (or of all iterations when merged).
        ground_truth: the ground-truth description of A scored by the ranker (ranker ceiling), if known.
        n_a, n_b: images ranked per set.
        captions: image id -> caption of every captioned (sampled) image.
        warnings: problems met (unreadable images, empty proposals, ...).
    """

    pair: SetPair
    iterations: list[IterationResult]
    final: list[RankedHypothesis]
    ground_truth: RankedHypothesis | None
    n_a: int
    n_b: int
    captions: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _cap(items: list[Any], k: int, seed: int) -> list[Any]:
    if len(items) <= k:
        return items
    return [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), k))]


def run_pair(
    pair: SetPair,
    proposer: Proposer,
    embedder: Embedder,
    store: EmbeddingStore,
    *,
    captioner: Captioner | None = None,
    num_iterations: int = 2,
    visual_search: bool = True,
    merge: bool = False,
    rank: RankSettings | None = None,
) -> DiffResult:
    """Run RadDiff (or the VisDiff baseline, per ``proposer.mode``) on one pair.

    Args:
        pair: validated sets (see :func:`medfm.methods.raddiff.data.validate_pair`).
        proposer: the proposer; its mode decides whether captions or reports are used.
        embedder, store: the ranker's CLIP model and its embedding cache.
        captioner: needed unless ``proposer.mode == "reports"``.
        num_iterations: 1 (no refinement) or more (each refines the previous one's top-k).
        visual_search: targeted visual search in refinement iterations (image-capable proposers only).
        merge: rank the union of all iterations' hypotheses instead of the last iteration's only.
        rank: ranker settings.
    """
    rank = rank or RankSettings()
    warnings: list[str] = []
    rounds = sample_rounds(len(pair.set_a), len(pair.set_b), proposer.num_rounds, proposer.num_samples, proposer.seed)
    idx_a = sorted({i for ra, _ in rounds for i in ra})
    idx_b = sorted({i for _, rb in rounds for i in rb})
    texts_a, texts_b = [""] * len(pair.set_a), [""] * len(pair.set_b)
    captions: dict[str, str] = {}
    if proposer.mode == "reports":
        from medfm.methods.raddiff.captioner import ReportCaptioner

        source: Captioner = ReportCaptioner()
    else:
        if captioner is None:
            raise ValueError("a captioner is needed unless the proposer mode is 'reports'")
        source = captioner
    for items, idx, texts in ((pair.set_a, idx_a, texts_a), (pair.set_b, idx_b, texts_b)):
        caps = source.captions([items[i] for i in idx])
        for i, c in zip(idx, caps):
            texts[i] = c
            captions[items[i].id] = c
    empty = sum(1 for i in idx_a if not texts_a[i]) + sum(1 for i in idx_b if not texts_b[i])
    if empty:
        warnings.append(f"{empty} sampled image(s) got an empty caption")

    # ranker inputs: every image of both sets (capped), embedded once and cached
    set_a = _cap(pair.set_a, rank.max_num_samples, proposer.seed)
    set_b = _cap(pair.set_b, rank.max_num_samples, proposer.seed + 1)
    emb_a = store.images(embedder, [it.path for it in set_a])
    emb_b = store.images(embedder, [it.path for it in set_b])

    def ranked(hyps: list[str]) -> list[RankedHypothesis]:
        if not hyps:
            return []
        return rank_hypotheses(hyps, emb_a, emb_b, store.texts(embedder, hyps), alpha=rank.alpha,
                               threshold=rank.threshold, filter_pvalue=rank.filter_pvalue)  # fmt: skip

    load_a = lambda i: read_pil_gray(pair.set_a[i].path)  # noqa: E731
    load_b = lambda i: read_pil_gray(pair.set_b[i].path)  # noqa: E731
    iterations: list[IterationResult] = []
    prev: list[RankedHypothesis] | None = None
    all_hyps: list[str] = []
    for it in range(max(1, num_iterations)):
        t0 = time.perf_counter()
        prop = proposer.propose(texts_a, texts_b, load_a, load_b, feedback=prev if it else None,
                                visual_search=visual_search and it > 0)  # fmt: skip
        if prop.errors:
            warnings += [f"iteration {it + 1}: backend error: {e}" for e in prop.errors[:3]]
        if not prop.hypotheses:
            warnings.append(f"iteration {it + 1}: the proposer returned no hypotheses")
            log.warning("%s: iteration %d: the proposer returned no hypotheses", pair.name, it + 1)
        all_hyps += [h for h in prop.hypotheses if h not in all_hyps]
        r = ranked(list(prop.hypotheses))
        iterations.append(IterationResult(it + 1, r, prop, time.perf_counter() - t0))
        if r:
            prev = r
        elif prev is None:
            break  # nothing to refine
    final = ranked(all_hyps) if merge else next((x.ranked for x in reversed(iterations) if x.ranked), [])
    gt = None
    if pair.gt_a:
        gt = rank_hypotheses([pair.gt_a], emb_a, emb_b, store.texts(embedder, [pair.gt_a]), alpha=rank.alpha,
                             threshold=rank.threshold)[0]  # fmt: skip
    return DiffResult(pair, iterations, final, gt, len(set_a), len(set_b), captions, warnings)
