"""Run functions of ``medfm smmile`` verbs (imported only when a verb runs)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medfm.core.errors import DataError, UsageError
from medfm.core.runs import Run
from medfm.methods.smmile.config import CONDITION_NAMES, PrepareConfig, ReportConfig, RunConfig, ScoreConfig

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------------
# prepare


def _problem_figure(run: Run, rows: list[Any]) -> None:
    """The first problem as a model sees it: each in-context example's image, question and answer, then the query
    (its answer is the target)."""
    from medfm.core.report import display_array, text_panels_grid

    first = [r for r in rows if r.problem_id == rows[0].problem_id]
    cells = []
    for k, r in enumerate(first):
        if r.image is None:
            continue
        role = "query" if k == len(first) - 1 else f"example {k + 1}"
        cells.append((role, display_array(r.image), f"Q: {r.question}\nA: {r.answer}"))
    if cells:
        run.save_figure("first_problem", text_panels_grid(cells, width_chars=56, max_lines=6), (
            f"Problem {first[0].problem_id}: its in-context examples (image, question, answer) and, last, the query "
            "whose answer the model must give. 0-shot shows the query alone."))  # fmt: skip


def run_prepare(cfg: PrepareConfig) -> int:
    from medfm.methods.smmile.phantom_set import make_problem_set, write_problem_set

    run = Run("smmile", "prepare", cfg)
    n = cfg.n_problems if cfg.limit is None else min(cfg.n_problems, cfg.limit)
    if n < 1:
        raise UsageError("--n_problems must be at least 1")
    if cfg.dry_run:
        return run.plan([f"generate {n} CXR-phantom problems ({cfg.size} px, seed {cfg.seed}) into {run.dir}",
                         "write problems.jsonl, truth.jsonl" + (", data/train-00000-of-00001.parquet" if cfg.parquet else "")])  # fmt: skip
    with run:
        ps = make_problem_set(n, seed=cfg.seed, size=cfg.size, pool_size=cfg.pool_size)
        paths = write_problem_set(ps, run.dir, parquet=cfg.parquet)
        queries = [t for t in ps.truth if t["is_query"]]
        res = run.new_results()
        res.add("n_problems", float(len(queries)), n=len(queries), note="problems generated")
        res.add("n_rows", float(len(ps.rows)), n=len(ps.rows), note="(image, question, answer) triplets")
        from collections import Counter

        rows_by = {r.problem_id: r for r in ps.rows}  # last row per problem = query
        res.tables["composition"] = [
            {"field": f, "value": v, "problems": c}
            for f in ("speciality", "flag_answer_format", "flag_cognitive_process")
            for v, c in sorted(Counter(getattr(r, f) for r in rows_by.values()).items())
        ]
        res.meta["files"] = {k: str(v) for k, v in paths.items()}
        run.save_results(res)
        _problem_figure(run, ps.rows)
        from medfm.core.report import render_run_report

        render_run_report(run.dir, title="SMMILE offline problem set (CXR phantoms)")
    print(run.dir)
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# run


def load_embedder(spec: str) -> Callable[[Sequence[Any]], Any]:
    """``pixels`` -> :func:`conditions.pixel_embedder`; ``module:function`` -> that function."""
    if spec == "pixels":
        from medfm.methods.smmile.conditions import pixel_embedder

        return pixel_embedder
    if ":" not in spec:
        raise UsageError(f"--embedder {spec!r} must be 'pixels' or 'module:function'")
    from medfm.core.commands import load_object

    try:
        return load_object(spec)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"--embedder {spec}: cannot import ({exc})") from None


def _check_names(cfg: RunConfig) -> None:
    bad = [c for c in cfg.conditions if c not in CONDITION_NAMES]
    if bad:
        raise UsageError(f"unknown condition(s) {', '.join(bad)}; use: {', '.join(CONDITION_NAMES)}")
    bad = [t for t in cfg.tasks if t not in ("open", "mcqa")]
    if bad:
        raise UsageError(f"unknown task(s) {', '.join(bad)}; use open and/or mcqa")
    if not cfg.conditions or not cfg.tasks:
        raise UsageError("give at least one --conditions and one --tasks")


def make_run_backend(spec: str, cfg: RunConfig, cache: str | None) -> Any:
    from medfm.backends import make_backend

    kwargs: dict[str, Any] = {}
    if spec.startswith("openai:"):
        kwargs["max_concurrency"] = cfg.max_concurrency
    if spec.startswith("hf:"):
        kwargs["device"] = "cpu" if cfg.device == "auto" else cfg.device
        if cfg.threads:
            kwargs["threads"] = cfg.threads
    return make_backend(spec, cache=cache, cache_mode=cfg.cache_mode, **kwargs)


def run_run(cfg: RunConfig) -> int:
    from medfm.methods.smmile.conditions import expand
    from medfm.methods.smmile.data import load_problems

    _check_names(cfg)
    run = Run("smmile", "run", cfg)
    data = cfg.data
    if data is None:
        data = str(run.dir / "data")
        if not (Path(data) / "problems.jsonl").is_file():
            if cfg.dry_run:
                return run.plan([f"generate {cfg.phantom_problems} phantom problems into {data}",
                                 f"backend {cfg.backend}; conditions {cfg.conditions}; tasks {cfg.tasks}"])  # fmt: skip
            from medfm.methods.smmile.phantom_set import make_problem_set, write_problem_set

            write_problem_set(make_problem_set(cfg.phantom_problems, seed=cfg.seed, size=cfg.phantom_size), data)
    require_images = cfg.text_only is not True
    ps = load_problems(data, image_dir=cfg.image_dir, fetch_urls=cfg.fetch_urls, require_images=require_images)
    ps = ps.limit(cfg.limit)
    if not ps.problems:
        raise DataError(f"no usable problems in {data} ({len(ps.skipped)} skipped; see the log for reasons)")
    if cfg.dry_run:
        lines = [f"data {data}: {len(ps.problems)} problems, {len(ps.skipped)} skipped"]
        for c in cfg.conditions:
            inst, exc = expand(ps.problems, c, seed=cfg.seed, perm_cap=cfg.perm_cap, relevance=cfg.relevance)
            lines.append(f"{c}: {len(inst)} instances ({len(exc)} problems excluded) x tasks {', '.join(cfg.tasks)}")
        lines.append(f"backend {cfg.backend}; judge {cfg.judge}; cache {cfg.cache}")
        return run.plan(lines)
    with run:
        cache = None if (cfg.cache or "none").lower() in ("none", "off", "") else cfg.cache
        if cache == "auto":
            cache = str(run.dir / "cache.sqlite")
        backend = make_run_backend(cfg.backend, cfg, cache)
        judge: Any = None
        if cfg.judge and cfg.judge.lower() not in ("none", ""):
            judge = "contains" if cfg.judge == "contains" else make_run_backend(cfg.judge, cfg, cache)
        results_path = execute(cfg, run, ps, backend, judge)
    print(results_path.parent / "report.html")
    return 0


def execute(cfg: RunConfig, run: Run, ps: Any, backend: Any, judge: Any) -> Path:
    """Run every condition x task, write CSVs, results.json, plots and report.html; returns results.json."""
    from medfm.core.results import Metric
    from medfm.methods.smmile.conditions import MODE_LABEL
    from medfm.methods.smmile.experiment import run_experiment, summarise
    from medfm.methods.smmile.harness import FIELDS_FOR_BREAKDOWN, HarnessOptions
    from medfm.methods.smmile.metrics import breakdown
    from medfm.methods.smmile.prompts import system_text
    from medfm.methods.smmile.report import effect_table, model_table, plot_conditions
    from medfm.methods.smmile.rescore import csv_name, write_csv

    text_only = cfg.text_only if cfg.text_only is not None else not backend.capabilities.images
    if text_only and cfg.text_only is None:
        log.info("smmile: backend %s cannot take images; using the text-only prompt", backend.spec)
    system = system_text("text_only" if text_only and cfg.system_prompt == "physician" else cfg.system_prompt)
    opts = HarnessOptions(system_prompt=system, answer_role=cfg.answer_role, text_only=text_only,
                          max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                          answer_extraction=cfg.answer_extraction, strict_match=cfg.strict_match,
                          batch_size=cfg.batch_size, seed=cfg.seed)  # fmt: skip
    embedder = load_embedder(cfg.embedder)
    results = run_experiment(ps.problems, backend, conditions=cfg.conditions, tasks=cfg.tasks, opts=opts, judge=judge,
                             store_dir=run.dir / "responses", embedder=embedder, perm_cap=cfg.perm_cap,
                             relevance=cfg.relevance, exclude_reasoning=cfg.exclude_reasoning)  # fmt: skip
    model = backend.model_name or backend.spec
    label = f"{model} (text-only)" if text_only else model
    for (cond, task), res in results.items():
        write_csv(res["records"], run.dir / csv_name(model, MODE_LABEL[cond], task), task)
    summary, effect_rows = summarise(results, cfg.bootstrap_resamples, cfg.bootstrap_seed)
    out = run.new_results()
    for r in summary:
        note = f"bootstrap mean {r['bootstrap_mean']:.2f} ± {r['bootstrap_std']:.2f} (percent)"
        if r.get("format_errors"):
            note += f"; {r['format_errors']} unparseable outputs scored wrong"
        if r.get("call_errors"):
            note += f"; {r['call_errors']} failed calls scored wrong"
        ci = (r["ci_low"], r["ci_high"]) if r["ci_low"] is not None else None
        out.add(f"{r['condition']}/{r['task']}/{r['metric']}", Metric(r["accuracy"], ci=ci, n=r["n"], note=note))
    for e in effect_rows:
        ci = (e["ci_low"], e["ci_high"]) if e.get("ci_low") is not None else None
        out.add(f"{e['effect']}/{e['task']}/{e['metric']}", Metric(e["diff"], ci=ci, n=e["n"],
                note=f"{e['a_condition']} - {e['b_condition']}, percentage points"), group="effects")  # fmt: skip
    for (cond, task), res in results.items():
        for m in ("em", "judge", "mcqa"):
            for row in breakdown(res["records"], m, FIELDS_FOR_BREAKDOWN):
                out.tables.setdefault("breakdown", []).append({"condition": cond, "task": task, "metric": m, **row})
        for x in res["excluded"]:
            out.tables.setdefault("excluded", []).append({"condition": cond, "task": task, **x})
    out.tables["summary"] = summary
    out.tables["effects"] = effect_rows
    out.tables["table1"] = model_table([(label, summary)])
    out.tables["order_and_noise"] = effect_table([(label, effect_rows)], [e["effect"] for e in effect_rows])
    out.tables["skipped_problems"] = ps.skipped
    out.meta.update(model=model, label=label, backend=backend.spec, text_only=text_only, data=ps.source,
                    n_problems=len(ps.problems), n_skipped=len(ps.skipped),
                    judge=getattr(judge, "spec", judge), judge_counts={f"{c}/{t}": r["judge_counts"]
                                                                       for (c, t), r in results.items()})  # fmt: skip
    path = run.save_results(out)
    for m in ("em", "judge", "mcqa"):
        fig = plot_conditions([(label, summary)], m)
        if fig is not None:
            run.save_figure(f"accuracy_{m}", fig, (
                f"{ {'em': 'Exact match', 'judge': 'Judge', 'mcqa': 'Multiple-choice'}[m]} accuracy (%) per condition "
                "(0-shot vs in-context, open and closed questions); error bars: bootstrap standard deviation over "
                "problems."))  # fmt: skip
    from medfm.core.report import render_run_report

    render_run_report(run.dir, title=f"SMMILE: {label}")
    return path


# ----------------------------------------------------------------------------------------------------------------------
# score


def _csv_inputs(inputs: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            found = sorted(p.glob("result_*.csv")) or sorted(p.glob("*.csv"))
            if not found:
                raise DataError(f"{p} holds no result_*.csv files")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p} does not exist (give result CSVs or folders holding them)")
    return files


def run_score(cfg: ScoreConfig) -> int:
    """Re-score every result file; a file that cannot be scored gets its own one-line error and the rest go on
    (exit 3 only when no file could be scored)."""
    from medfm.core.results import Metric
    from medfm.methods.smmile.metrics import bootstrap_accuracy
    from medfm.methods.smmile.rescore import agreement, reference_judgements, score_csv

    files = _csv_inputs(cfg.inputs)
    run = Run("smmile", "score", cfg)
    if cfg.dry_run:
        return run.plan([f"score {f}" for f in files] + [f"API-error rows scored as: {cfg.errors}"])
    with run:
        out = run.new_results()
        table: list[dict[str, Any]] = []
        failed: list[dict[str, str]] = []
        judge: Any = None
        if cfg.judge and cfg.judge.lower() != "none":
            from medfm.backends import make_backend

            judge = "contains" if cfg.judge == "contains" else make_backend(
                cfg.judge, cache=cfg.judge_cache or str(run.dir / "judge_cache.sqlite"))  # fmt: skip
        for f in files:
            try:
                ev, rows, scored = score_csv(f, cfg.task, cfg.strict_match, limit=cfg.limit, errors=cfg.errors,
                                             seed=cfg.bootstrap_seed)  # fmt: skip
            except DataError as exc:
                log.error("%s", exc)
                failed.append({"file": f.name, "error": str(exc)})
                continue
            key = f.stem
            s = ev["bootstrap"]
            metric = "mcqa" if ev["task"] == "mcqa" else "em"
            note = (f"bootstrap {s['bootstrap_mean']:.2f} ± {s['bootstrap_std']:.2f}; {ev['err_count']} API-error rows "
                    f"({'excluded' if cfg.errors == 'exclude' else 'scored wrong'}), {ev['unusable_count']} unusable "
                    "rows scored wrong")  # fmt: skip
            out.add(f"{key}/{metric}", Metric(ev["accuracy"], ci=tuple(s["ci"]) if s["ci"] else None, n=s["n"],
                                              note=note))  # fmt: skip
            row = {"file": f.name, "model": ev["model"], "mode": ev["inference_mode"], "task": ev["task"],
                   "metric": metric, "accuracy": round(ev["accuracy"], 2), "ci_low": s["ci"][0] if s["ci"] else None,
                   "ci_high": s["ci"][1] if s["ci"] else None, "bootstrap_mean": s["bootstrap_mean"],
                   "bootstrap_std": s["bootstrap_std"], "n": s["n"], "errors": ev["err_count"],
                   "excluded": ev["excluded_count"], "unusable": ev["unusable_count"]}  # fmt: skip
            if judge is not None and ev["task"] == "open":
                from medfm.methods.smmile.harness import judge_records

                keep = [r for r, x in zip(rows, scored) if not (cfg.errors == "exclude" and x["api_error"])]
                recs = [{**r, "task": "open"} for r in keep]
                counts = judge_records(recs, judge)
                js = bootstrap_accuracy([r["judge"] for r in recs], seed=cfg.bootstrap_seed)
                out.add(f"{key}/judge", Metric(js.accuracy, ci=js.ci, n=js.n,
                        note=f"bootstrap {js.boot_mean:.2f} ± {js.boot_std:.2f}; {counts['format_errors']} "
                             f"unparseable judge outputs scored wrong"))  # fmt: skip
                row.update(judge=round(js.accuracy, 2), judge_format_errors=counts["format_errors"])
                ev["llm_err_count"] = counts["format_errors"]
                ref = reference_judgements(f, keep)
                if ref is not None:
                    agr = agreement([r["judge"] for r in recs], ref)
                    ev["judge_agreement"] = agr
                    if agr.get("n"):
                        row.update(judge_agreement=round(agr["agreement"], 3), judge_kappa=round(agr["kappa"], 3))
                        out.add(f"{key}/judge_agreement", Metric(agr["agreement"], n=agr["n"],
                                note=f"vs the file's reference judge; Cohen's kappa {agr['kappa']:.3f}"))  # fmt: skip
            table.append(row)
            from medfm.core.files import atomic_write_json

            atomic_write_json(run.path("evaluations", f"{key}.json"), ev)
        out.tables["scores"] = table
        if failed:
            out.tables["files_not_scored"] = failed
        out.meta.update({"files": len(files), "scored": len(table), "not_scored": len(failed)})
        _write_summary_csv(run.path("summary.csv"), table)
        run.save_results(out)
        from medfm.core.report import render_run_report

        render_run_report(run.dir, title="SMMILE: re-scored result files")
    for row in table:
        print(f"{row['file']}: {row['metric']} {row['accuracy']:.2f} (bootstrap {row['bootstrap_mean']:.2f} ± "
              f"{row['bootstrap_std']:.2f}, n={row['n']}, API errors {row['errors']})")  # fmt: skip
    for row in failed:
        print(f"{row['file']}: not scored: {row['error']}", file=sys.stderr)
    return 0 if table else 3


def _write_summary_csv(path: Path, table: list[dict[str, Any]]) -> None:
    """One row per scored file, every column any row has (atomic)."""
    import csv
    import io

    from medfm.core.files import atomic_write_text

    cols = list(dict.fromkeys(k for r in table for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(table)
    atomic_write_text(path, buf.getvalue())


# ----------------------------------------------------------------------------------------------------------------------
# report


def load_run_tables(run_dir: str | Path) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """``(label, summary rows, effect rows)`` from a smmile run directory's results.json."""
    p = Path(run_dir) / "results.json"
    if not p.is_file():
        raise DataError(f"{run_dir} has no results.json; give run directories of 'medfm smmile run'")
    d = json.loads(p.read_text())
    if d.get("method") != "smmile" or "summary" not in d.get("tables", {}):
        raise DataError(f"{p} is not a 'medfm smmile run' result (no summary table)")
    return d["meta"].get("label", Path(run_dir).name), d["tables"]["summary"], d["tables"].get("effects", [])


def run_report(cfg: ReportConfig) -> int:
    from medfm.core.report import Report
    from medfm.methods.smmile.report import effect_table, model_table, plot_conditions

    loaded = [load_run_tables(r) for r in cfg.runs]
    run = Run("smmile", "report", cfg)
    if cfg.dry_run:
        return run.plan([f"{lab}: {len(s)} summary rows from {r}" for (lab, s, _), r in zip(loaded, cfg.runs)])
    with run:
        summaries = [(lab, s) for lab, s, _ in loaded]
        effects = [(lab, e) for lab, _, e in loaded]
        rep = Report(cfg.title, subtitle=f"{len(loaded)} runs: " + ", ".join(lab for lab, _, _ in loaded))
        rep.add_table("Table 1: ICL vs 0-shot (bootstrap mean ± std, %)", model_table(summaries))
        rep.add_table("Noise: one irrelevant example (points vs ICL)",
                      effect_table(effects, ["random_noise", "targeted_noise"]))  # fmt: skip
        rep.add_table("Order: most relevant example last / first",
                      effect_table(effects, ["recency_last", "primacy_first", "last_vs_first", "perm_last_matches",
                                             "order_sensitive_problems", "permutation_mean_vs_icl"]))  # fmt: skip
        rep.add_table("ICL gain (points)", effect_table(effects, ["icl_gain"]))
        for m in ("judge", "em", "mcqa"):
            fig = plot_conditions(summaries, m)
            if fig is not None:
                png = run.save_figure(f"accuracy_{m}", fig, (
                    f"{m} accuracy (%) per condition and model (0-shot vs in-context examples); error bars: bootstrap "
                    "standard deviation over problems."))  # fmt: skip
                rep.add_figure(f"{m} accuracy by condition", png)
        res = run.new_results()
        res.tables["table1"] = model_table(summaries)
        res.tables["effects"] = effect_table(effects, sorted({e["effect"] for _, es in effects for e in es}))
        res.meta["runs"] = [str(r) for r in cfg.runs]
        run.save_results(res)
        path = rep.save(run.dir / "report.html")
    print(path)
    return 0
