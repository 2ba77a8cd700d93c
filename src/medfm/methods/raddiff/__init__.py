"""RadDiff: describe clinically meaningful differences between two sets of radiology images.

Paper: Shen et al., "RadDiff" (arXiv 2601.03733), built on VisDiff (Dunlap et al., CVPR 2024); spec:
shared/specs/raddiff_smmile_srrg.md part 1. CLI: ``medfm raddiff prepare|describe|evaluate|report``.

Public API (importing this package is torch-free; modules import what they need)::

    from medfm.methods.raddiff.data import SetPair, ImageItem, load_group_table, load_manifest_sets,
        read_raddiffbench, write_raddiffbench, validate_pair
    from medfm.methods.raddiff.captioner import make_captioner, BackendCaptioner, ReportCaptioner
    from medfm.methods.raddiff.proposer import Proposer, parse_hypotheses, sample_rounds, format_feedback
    from medfm.methods.raddiff.ranker import (rank_hypotheses, auroc_rows, welch_pvalues, make_embedder,
        EmbeddingStore, CheXficientEmbedder, OpenCLIPEmbedder)
    from medfm.methods.raddiff.concept import ConceptEmbedder          # offline concept-bottleneck ranker
    from medfm.methods.raddiff.offline import PhraseContrastBackend     # offline proposer stand-in
    from medfm.methods.raddiff.evaluator import LLMJudge, OfflineJudge, offline_score, acc_at_k
    from medfm.methods.raddiff.grids import make_grid, parse_boxes, crop_grids, GridSpec
    from medfm.methods.raddiff.pipeline import run_pair, RankSettings, DiffResult
    from medfm.methods.raddiff.bench import build_benchmark, train_concept_ranker

    result = run_pair(pair, Proposer(backend, mode="raddiff"), make_embedder("chexficient:DIR"),
                      EmbeddingStore("cache/emb.sqlite"), captioner=make_captioner("hf:/path/to/vlm"))
    result.final[0].text, result.final[0].auroc
"""
