"""SRRG: structured radiology reports, the SRR-BERT finding classifier and the F1-SRR-BERT metric.

Public API (other methods — CheXalign, RadDiff — use these; importing this package is torch-free)::

    from medfm.methods.srrg.structured import (
        ORGAN_HEADERS,                      # the 8 organ-system headers of the Findings section
        StructuredReport,                   # .findings {header: [bullets]}, .impression [items], .utterances()
        parse_structured,                   # (text, do_lower_case=False) -> StructuredReport (.warnings)
        validate_structured,                # (text, require=("findings","impression")) -> list[Problem]
        render, render_findings, render_impression,
        parse_findings, parse_impression,   # StructEval-compatible section parsers
    )
    from medfm.methods.srrg.labels import (
        LEAVES, UPPER, LEAVES_WITH_STATUSES, UPPER_WITH_STATUSES, LABEL_SPACES, PARENT, STATUSES,
        to_labels,                          # ({leaf: status}, space) -> labels in that space
        encode, findings_matrix,            # -> (N, K) int8 multi-hot; DataError for labels outside the space
    )
    from medfm.methods.srrg.classifier import FindingClassifier, load_classifier
        load_classifier(dir | "org/name" hub id | "lexicon").predict(texts) -> list[{leaf: status}]
        .predict_space(texts, "leaves") -> (N, K) multi-hot
    from medfm.methods.srrg.train import train_classifier     # epochs, early stopping, tuned thresholds
    from medfm.methods.srrg.tfidf import TfidfClassifier, train_tfidf   # TF-IDF + logistic regression baseline
    from medfm.methods.srrg.lexicon import LexiconLabeller   # same predict(); offline baseline
    from medfm.methods.srrg.metric import f1_srr_bert, bleu, rouge_l, section_text_scores
        f1_srr_bert(candidates, references, classifier, section="impression"|"findings",
                    space="leaves"|..., aligned=False, average="samples"|"weighted") -> SRRBertScore
        (.f1, .precision, .recall, .per_sample_f1 — per-report rewards —, .organ, .section_presence)
    from medfm.methods.srrg.structurer import OfflineStructurer, LLMStructurer
        OfflineStructurer(classifier=None).structure(free_text) -> StructureResult(.report, .text, .problems)
        LLMStructurer(backend, max_repairs=2).structure(free_text)

CLI: ``medfm srrg prepare|train|evaluate|structure|score|report``.
"""

from __future__ import annotations
