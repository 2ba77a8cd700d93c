"""``medfm raddiff`` verbs: prepare, describe, evaluate, report."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medfm.core.errors import UsageError
from medfm.methods.raddiff.config import DescribeConfig, EvaluateConfig, PrepareConfig

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------------
# Components


def make_chat_backend(spec: str, cache_dir: str | None, device: str = "cpu") -> Any:
    """``offline:contrast`` or any :func:`medfm.backends.make_backend` spec (wrapped in the response cache)."""
    if spec.startswith("offline:"):
        if spec != "offline:contrast":
            raise UsageError(f"unknown offline backend {spec!r}; the offline proposer is offline:contrast")
        from medfm.methods.raddiff.offline import PhraseContrastBackend

        return PhraseContrastBackend()
    from medfm.backends import make_backend

    kwargs = {"device": device} if spec.startswith("hf:") else {}
    return make_backend(spec, cache=_response_cache(cache_dir), **kwargs)


def _response_cache(cache_dir: str | None) -> str | None:
    """The model-response cache shared by the proposer, captioner and judge backends."""
    return str(Path(cache_dir) / "responses.sqlite") if cache_dir else None


def build(cfg: DescribeConfig | EvaluateConfig) -> dict[str, Any]:
    """Proposer, captioner, embedder, store and judge from a config (heavy imports happen here)."""
    from medfm.methods.raddiff.captioner import make_captioner
    from medfm.methods.raddiff.grids import GridSpec
    from medfm.methods.raddiff.proposer import Proposer
    from medfm.methods.raddiff.ranker import EmbeddingStore, make_embedder

    if not cfg.ranker.model:
        raise UsageError("--ranker.model is required: chexficient:DIR, open_clip:ARCH[@CKPT] or concept:DIR "
                         "(build an offline one with 'medfm raddiff prepare')")  # fmt: skip
    device = "cpu" if cfg.device == "auto" else cfg.device
    p = cfg.proposer
    if p.num_iterations < 1:
        raise UsageError(f"--proposer.num_iterations must be at least 1, got {p.num_iterations}")
    backend = make_chat_backend(p.backend, cfg.cache_dir, device)
    if p.mode != "visdiff" and not backend.capabilities.images:
        log.warning("proposer backend %s does not accept images: mode %s proposes from text only", backend.spec,
                    p.mode)  # fmt: skip
    grid = GridSpec(tile=p.grid_tile, resize=p.grid_resize)
    proposer = Proposer(backend, mode=p.mode, num_rounds=p.num_rounds, num_samples=p.num_samples, grid=grid,
                        seed=cfg.seed, max_tokens=p.max_tokens, dedup=p.dedup, topk=p.topk)  # fmt: skip
    captioner = None
    if p.mode != "reports":
        c = cfg.captioner
        captioner = make_captioner(c.source, seed=cfg.seed, dropout=c.dropout, cache=_response_cache(cfg.cache_dir),
                                   device=device, prompt=c.prompt, max_tokens=c.max_tokens)  # fmt: skip
    store = EmbeddingStore(Path(cfg.cache_dir) / "embeddings.sqlite" if cfg.cache_dir else None)
    return {"proposer": proposer, "captioner": captioner, "embedder": make_embedder(cfg.ranker.model, device),
            "store": store, "judge": make_judge(cfg.judge.judge, cfg.cache_dir, device)}  # fmt: skip


def make_judge(spec: str, cache_dir: str | None, device: str = "cpu") -> Any:
    from medfm.methods.raddiff.evaluator import LLMJudge, OfflineJudge

    return OfflineJudge() if spec == "offline" else LLMJudge(make_chat_backend(spec, cache_dir, device))


def _rank_settings(cfg: DescribeConfig | EvaluateConfig) -> Any:
    from medfm.methods.raddiff.pipeline import RankSettings

    r = cfg.ranker
    return RankSettings(alpha=r.alpha, threshold=r.threshold, filter_pvalue=r.filter_pvalue,
                        max_num_samples=r.max_num_samples)  # fmt: skip


def _run_pair(pair: Any, parts: dict[str, Any], cfg: DescribeConfig | EvaluateConfig) -> Any:
    from medfm.methods.raddiff.pipeline import run_pair

    if cfg.proposer.mode == "reports" and not pair.has_reports:
        from medfm.core.errors import DataError

        raise DataError(f"{pair.name}: proposer mode 'reports' needs a report for every image; add a report column "
                        "(or --reports CSV) or use --proposer.mode raddiff")  # fmt: skip
    return run_pair(pair, parts["proposer"], parts["embedder"], parts["store"], captioner=parts["captioner"],
                    num_iterations=cfg.proposer.num_iterations, visual_search=cfg.proposer.visual_search,
                    merge=cfg.proposer.merge, rank=_rank_settings(cfg))  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# prepare


def run_prepare(cfg: PrepareConfig) -> int:
    from medfm.core.runs import Run
    from medfm.methods.raddiff.bench import build_benchmark, pair_specs, train_concept_ranker

    known = [s.name for s in pair_specs()]
    bad = [p for p in cfg.pairs if p not in known]
    if bad:
        raise UsageError(f"unknown pair {bad[0]!r}; pairs: {', '.join(known)}")
    n_pool = min(cfg.n_pool, cfg.limit) if cfg.limit else cfg.n_pool
    run = Run("raddiff", "prepare", cfg)
    if cfg.dry_run:
        return run.plan([f"pool of {n_pool} phantoms ({cfg.size} px), {len(cfg.pairs) or len(known)} pair rules, "
                         f"set size {cfg.set_size} -> {run.dir / 'bench'}",
                         f"concept ranker on {cfg.ranker_n} phantoms (seed {cfg.seed + 1000}) -> {run.dir / 'ranker'}"])  # fmt: skip
    with run:
        summary = build_benchmark(run.dir / "bench", n_pool=n_pool, size=cfg.size, set_size=cfg.set_size,
                                  seed=cfg.seed, only=cfg.pairs or None)  # fmt: skip
        res = run.new_results()
        res.add("pairs", summary["pairs"], n=summary["pairs"], note="set pairs written")
        res.add("images", summary["images"], note="distinct images used by the pairs")
        for d, k in summary["by_difficulty"].items():
            res.add("pairs", k, group=f"difficulty={d}")
        if cfg.ranker_n > 0:
            train_concept_ranker(run.dir / "ranker", n=cfg.ranker_n, size=cfg.size, seed=cfg.seed + 1000,
                                 feature_size=cfg.feature_size)  # fmt: skip
            res.meta["ranker"] = str(run.dir / "ranker")
        res.meta.update(summary)
        run.save_results(res)
        from medfm.core.report import render_run_report

        render_run_report(run.dir, title="RadDiff phantom benchmark")
        print(run.dir / "bench" / "raddiffbench.jsonl")
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# describe


def _load_describe_pair(cfg: DescribeConfig) -> Any:
    from medfm.methods.raddiff.data import load_group_table, load_manifest_sets

    if cfg.input and (cfg.manifest_a or cfg.manifest_b):
        raise UsageError("give either an input table or --manifest_a/--manifest_b, not both")
    if cfg.input:
        pair = load_group_table(cfg.input, cfg.group_a, cfg.group_b)
    elif cfg.manifest_a and cfg.manifest_b:
        pair = load_manifest_sets(cfg.manifest_a, cfg.manifest_b)
    else:
        raise UsageError("give an input table (CSV/JSONL with path, group) or both --manifest_a and --manifest_b")
    pair.gt_a, pair.gt_b = cfg.gt_a, cfg.gt_b
    if cfg.limit:
        pair.set_a, pair.set_b = pair.set_a[: cfg.limit], pair.set_b[: cfg.limit]
    return pair


def _example_figure(result: Any, parts: dict[str, Any], hyp_index: int, k: int) -> Any:
    """Top-k A and B images most similar to a hypothesis, as one matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from medfm.data.io import read_radiograph

    h = result.final[hyp_index]
    store, emb = parts["store"], parts["embedder"]
    t = store.texts(emb, [h.text])[0]
    fig, axes = plt.subplots(2, k, figsize=(1.6 * k, 3.6), squeeze=False)
    for row, items in enumerate((result.pair.set_a, result.pair.set_b)):
        e = store.images(emb, [it.path for it in items])
        order = np.argsort(-(e @ t))[:k]
        for col in range(k):
            ax = axes[row][col]
            ax.axis("off")
            if col < len(order):
                ax.imshow(read_radiograph(items[order[col]].path).array, cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{'AB'[row]} sim {float(e[order[col]] @ t):.2f}", fontsize=7)
    fig.suptitle(f"#{hyp_index + 1} {h.text} (AUROC {h.auroc:.3f})", fontsize=9)
    return fig


def _hyp_rows(result: Any) -> list[dict[str, Any]]:
    rows = []
    for it in result.iterations:
        for rank, h in enumerate(it.ranked, 1):
            rows.append({"iteration": it.iteration, "rank": rank, **h.to_dict()})
    return rows


def run_describe(cfg: DescribeConfig) -> int:
    from medfm.core.report import render_run_report, save_figure
    from medfm.core.runs import Run
    from medfm.methods.raddiff.data import validate_pair
    from medfm.methods.raddiff.evaluator import acc_at_k

    pair = _load_describe_pair(cfg)
    if not cfg.ranker.model:
        raise UsageError("--ranker.model is required: chexficient:DIR, open_clip:ARCH[@CKPT] or concept:DIR")
    warnings = validate_pair(pair)
    run = Run("raddiff", "describe", cfg)
    if cfg.dry_run:
        return run.plan([
            f"set A: {len(pair.set_a)} images, set B: {len(pair.set_b)} images ({pair.name})",
            f"captioner {cfg.captioner.source if cfg.proposer.mode != 'reports' else '(reports)'}; proposer "
            f"{cfg.proposer.backend} mode {cfg.proposer.mode}, {cfg.proposer.num_iterations} iteration(s) x "
            f"{cfg.proposer.num_rounds} rounds x {cfg.proposer.num_samples}+{cfg.proposer.num_samples} images",
            f"ranker {cfg.ranker.model}; cache {cfg.cache_dir}",
            *warnings,
        ])  # fmt: skip
    with run:
        parts = build(cfg)
        result = _run_pair(pair, parts, cfg)
        res = run.new_results()
        res.add("hypotheses", len(result.final), note="ranked hypotheses of the final iteration")
        if result.final:
            res.add("top1_auroc", result.final[0].auroc, n=result.n_a + result.n_b, note=result.final[0].text)
        if result.ground_truth is not None:
            res.add("ground_truth_auroc", result.ground_truth.auroc, n=result.n_a + result.n_b,
                    note=f"ranker ceiling: '{pair.gt_a}' scored by the ranker")  # fmt: skip
            scores = parts["judge"].scores([h.text for h in result.final], pair.gt_a, pair.gt_b or "")
            for k in cfg.judge.ks:
                res.add(f"acc@{k}", acc_at_k(scores, k), n=1, note=f"judge {parts['judge'].name}")
        res.tables["hypotheses"] = _hyp_rows(result)
        res.meta.update({"pair": pair.name, "n_a": result.n_a, "n_b": result.n_b, "warnings": result.warnings +
                         warnings, "embeddings_computed": parts["store"].computed_images,
                         "embeddings_cached": parts["store"].cached_images,
                         "proposer_calls": sum(i.proposal.calls for i in result.iterations)})  # fmt: skip
        run.write_samples([{"id": k, "caption": v} for k, v in result.captions.items()], "captions.jsonl")
        run.write_samples([{"iteration": i.iteration, **r} for i in result.iterations for r in i.proposal.raw],
                          "proposals.jsonl")  # fmt: skip
        plots = run.dir / "plots"
        for j in range(min(3, len(result.final))):
            save_figure(plots / f"top{j + 1}_examples.png", _example_figure(result, parts, j, cfg.examples), (
                f"Hypothesis #{j + 1} '{result.final[j].text}': the {cfg.examples} images of set A (top row) and set "
                "B (bottom row) most similar to it in the ranker's embedding (cosine similarity in the titles); a "
                "true difference shows in A and not in B."))  # fmt: skip
        for it in result.iterations:
            for name, im in it.proposal.images[:7]:
                buf = io.BytesIO()
                im.save(buf, format="PNG")
                save_figure(plots / f"iter{it.iteration}_{name}.png", buf.getvalue(), (
                    f"Iteration {it.iteration}: the image input '{name}' the proposer was shown (image grids of the "
                    "two sets, or visual-search crops)."))  # fmt: skip
        run.save_results(res)
        render_run_report(run.dir, title=f"RadDiff: {pair.name}")
        parts["store"].close()
        if not result.final:
            log.error("the proposer returned no hypotheses (%s); see %s", "; ".join(result.warnings[:2]), run.dir)
            return 1
        for j, h in enumerate(result.final[:5], 1):
            print(f"{j}. {h.text}  AUROC {h.auroc:.3f}  p {h.p_value:.2g}")
        print(run.dir / "report.html")
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# evaluate


def evaluate_pairs(pairs: list[Any], parts: dict[str, Any], cfg: EvaluateConfig) -> list[dict[str, Any]]:
    """Run every pair and judge it; one row per pair with Acc@k per iteration and ranker facts."""
    from medfm.core.runs import progress
    from medfm.methods.raddiff.data import validate_pair
    from medfm.methods.raddiff.protocol import accuracy_at_k

    rows = []
    for pair in progress(pairs, desc="raddiff evaluate"):
        warn = validate_pair(pair)
        result = _run_pair(pair, parts, cfg)
        row: dict[str, Any] = {"pair": pair.name, "difficulty": pair.difficulty, "kind": pair.kind,
                               "gt_a": pair.gt_a, "n_a": result.n_a, "n_b": result.n_b}  # fmt: skip
        row.update(accuracy_at_k(result, parts["judge"], cfg.judge.ks, pair.gt_a or "", pair.gt_b or ""))
        row["top1"] = result.final[0].text if result.final else ""
        row["top1_auroc"] = result.final[0].auroc if result.final else None
        row["gt_auroc"] = result.ground_truth.auroc if result.ground_truth else None
        row["n_hypotheses"] = len(result.final)
        row["warnings"] = "; ".join((warn + result.warnings)[:3])
        rows.append(row)
    return rows


def load_benchmark(cfg: EvaluateConfig) -> list[Any]:
    from medfm.methods.raddiff.data import read_raddiffbench, read_reports_table

    if not cfg.benchmark:
        raise UsageError("give the benchmark JSONL (RadDiffBench format), e.g. <prepare run>/bench/raddiffbench.jsonl")
    bench = Path(cfg.benchmark)
    diff = cfg.difficulty_csv or (str(bench.parent / "difficulty.csv") if (bench.parent / "difficulty.csv").is_file()
                                  else None)  # fmt: skip
    rep_path = cfg.reports or (str(bench.parent / "reports.csv") if (bench.parent / "reports.csv").is_file() else None)
    reports = read_reports_table(rep_path) if rep_path else None
    pairs = read_raddiffbench(bench, cfg.image_root, diff, reports)
    return pairs[: cfg.limit] if cfg.limit else pairs


def run_evaluate(cfg: EvaluateConfig) -> int:
    from medfm.core.report import render_run_report
    from medfm.core.runs import Run

    pairs = load_benchmark(cfg)
    run = Run("raddiff", "evaluate", cfg)
    if cfg.dry_run:
        if not cfg.ranker.model:
            raise UsageError("--ranker.model is required: chexficient:DIR, open_clip:ARCH[@CKPT] or concept:DIR")
        return run.plan([f"{len(pairs)} set pairs from {cfg.benchmark}",
                         f"proposer {cfg.proposer.backend} mode {cfg.proposer.mode}, {cfg.proposer.num_iterations} "
                         f"iteration(s); ranker {cfg.ranker.model}; judge {cfg.judge.judge}"])  # fmt: skip
    with run:
        parts = build(cfg)
        rows = evaluate_pairs(pairs, parts, cfg)
        res = run.new_results()
        from medfm.methods.raddiff.protocol import summarise

        summarise(rows, cfg.judge.ks, res, cfg.bootstrap, cfg.seed)
        res.tables["pairs"] = rows
        res.meta.update({"embeddings_computed": parts["store"].computed_images,
                         "embeddings_cached": parts["store"].cached_images, "judge": parts["judge"].name})  # fmt: skip
        run.write_samples(rows)
        run.save_results(res)
        render_run_report(run.dir, title="RadDiff evaluation")
        parts["store"].close()
        print(", ".join(f"{n} {m.format()}" for n, m in res.metrics.items()))
        print(run.dir / "report.html")
    return 0
