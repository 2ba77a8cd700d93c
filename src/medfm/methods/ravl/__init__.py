"""RaVL: discover and mitigate spurious correlations of a fine-tuned vision-language model via region clusters.

Paper: Varma et al., "RaVL: Discovering and Mitigating Spurious Correlations in Fine-Tuned Vision-Language
Models" (NeurIPS 2024, arXiv 2411.04097); spec: shared/specs/chexficient_ravl.md part B. CLI: ``medfm ravl
discover|mitigate|evaluate|report``. Audits CLIPs trained by ``medfm chexficient`` or any open_clip model.

Public API (importing this package stays torch-free)::

    from medfm.methods.ravl.model import load_vlm                      # model dir or "open_clip:NAME[@weights]"
    from medfm.methods.ravl.data import cxr_audit_set, quadrant_digits, manifest_audit_set, AuditSet
    from medfm.methods.ravl.zeroshot import embed                      # -> Embedded (image/region emb + scores)
    from medfm.methods.ravl.discover import discover, precision_at_k   # -> Discovery
    from medfm.methods.ravl.mitigate import Finetuner, finetune, region_aware_loss, label_spurious_regions
    from medfm.methods.ravl.evaluation import evaluate_embedded        # overall / worst-group accuracy with CIs
    from medfm.methods.ravl.baselines import rank_george, rank_domino  # image-level discovery baselines
"""

from __future__ import annotations
