"""SMMILE: a multimodal in-context learning benchmark harness (issue 13; spec: raddiff_smmile_srrg.md, part 2).

This ``__init__`` imports nothing heavy. Public API:

- :mod:`.data`: ``SmmileRow``, ``Problem``, ``ProblemSet``; ``load_problems(source, image_dir=None,
  fetch_urls=False, require_images=True) -> ProblemSet`` (JSONL or the Hugging Face parquet layout; bad problems
  are listed in ``ProblemSet.skipped`` with a reason); ``write_jsonl(rows, path)``, ``write_parquet(rows, path)``.
- :mod:`.phantom_set`: ``make_problem_set(n_problems, seed, size) -> PhantomProblemSet`` (offline CXR-phantom
  problems that need in-context learning, with ground truth); ``write_problem_set(ps, out_dir)``,
  ``load_truth(path)``.
- :mod:`.conditions`: ``CONDITIONS``; ``expand(problems, condition, seed=, perm_cap=24, relevance="answer",
  embedder=None) -> (instances, excluded)``; ``permutation_orders(k, cap, rng)``; ``pixel_embedder(images)``.
- :mod:`.prompts`: ``build_messages(examples, query, system_prompt=, answer_role=, text_only=, query_text=)``,
  ``mcqa_options(rows, query_answer, rng)``, ``mcqa_text``, ``extract_option(text, options)``,
  ``judge_prompt``, ``parse_judge(text) -> 1 | 0 | None``.
- :mod:`.metrics`: ``normalize_answer``, ``exact_match``, ``bootstrap_accuracy(scores, 1000, 42) -> Summary``,
  ``paired_difference``, ``breakdown``, ``majority_answer``, ``random_answer``, ``nearest_image_answer``.
- :mod:`.harness`: ``HarnessOptions``, ``run_instances(instances, backend, opts, store, embedder)``,
  ``judge_records(records, judge)``, ``ResponseStore``.
- :mod:`.rescore`: ``score_csv(path) -> (evaluation, rows, scores)``, ``write_csv``, ``csv_name``.
- :mod:`.experiment`: ``run_experiment(problems, backend, conditions, tasks, ...) -> dict`` and
  ``summarise(records_by_key) -> (summary_rows, effect_rows)`` used by the CLI and benchmarks.

CLI: ``medfm smmile prepare|run|score|report``.
"""
