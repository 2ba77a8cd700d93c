"""CheXalign: judge-scored preference pairs and direct alignment of a report generator (issue 12; spec
``headentropy_align.md`` part B). This ``__init__`` imports nothing heavy.

Pipeline (``medfm chexalign sample|judge|pairs|train|evaluate``)::

    SFT policy (medfm vlm train) --sample N=4, T=1--> candidates.jsonl --judge--> judged.jsonl
        --pairs (best vs worst, ties dropped; KTO rows)--> pairs.jsonl / kto.jsonl
        --train (TRL: DPO, IPO, KTO, ORPO, R-DPO, SimPO; beta sweep)--> checkpoints/final (+ model card)
        --evaluate--> GREEN, LC-GREEN, finding F1, F1-SRR-BERT, BERTScore, ROUGE-L, BLEU-4, length ratio, tax

Public API:

- :mod:`.green` (torch-free): ``green_score(matched, significant_errors)`` (0 when M = 0),
  ``length_controlled(score, candidate, reference)`` (LC-GREEN), ``make_prompt(reference, candidate)`` (the GREEN
  judge prompt), ``parse_green(text) -> GreenCounts`` (raises ``GreenParseError``), ``GreenCounts``,
  ``clean_report``, ``CATEGORIES``.
- :mod:`.judges`: ``OfflineGreenJudge(classifier="lexicon" | FindingClassifier | folder, length_control=False)``,
  ``LLMGreenJudge(backend | "hf:..." , length_control=False)``, ``BertScoreJudge(model=None)``,
  ``make_judge(kind, ...)``; every judge has ``judge(references, candidates) -> list[JudgeResult]`` (``score``
  None + ``error`` when an LLM answer does not parse) and ``scores(...)``. ``read_findings``/``compare_findings``
  expose the offline judge's finding extraction and counting.
- :mod:`.pairs` (torch-free): ``select_pair(scores, tie_threshold=1e-8)``, ``build_pairs(studies) -> (pairs,
  PairStats)``, ``kto_rows(pairs)``.
- :mod:`.losses`: reference formulas ``dpo_loss``, ``ipo_loss``, ``kto_loss``, ``orpo_loss``, ``rdpo_loss``,
  ``simpo_loss`` on sequence log-probs (the trainers are tested against them).
- :mod:`.trainers`: ``build_trainer(algorithm, model, ref_model, processor, rows, opts, beta, output_dir, ...)``
  returns a TRL ``DPOTrainer`` (dpo, ipo), ``KTOTrainer`` (kto) or :class:`AlignTrainer` (a small ``DPOTrainer``
  subclass adding R-DPO, and ORPO / SimPO for vision-language batches, which TRL's text-only experimental trainers
  cannot take); ``preference_dataset(pairs)``, ``kto_dataset(rows)``, ``freeze_vision_tower(model)``.
- :mod:`.sampling`: ``vlm_sampler``, ``backend_sampler``, ``run_resumable`` (chunked, cached, resumable).
- :mod:`.corruptions` (torch-free): ``swap_sides(text)``, ``swap_findings(text, count=0)``: planted, known
  errors for candidates with ground truth (tests, benchmarks).
- :mod:`.metrics`: ``per_study_scores``, ``summarise``, ``paired_differences``, ``alignment_tax``, ``tax_metrics``.
"""
