"""Content preservation of a structured report (SRRG): do the structured utterances keep the input's findings?

Both sides are labelled by the same finding classifier (leaves with statuses, 163 labels); per report, recall is
the share of the input's labels the output keeps, precision the share of the output's labels the input had, and
``exact`` whether the two label sets are equal. An empty side counts as fully preserved on that axis.
"""

from __future__ import annotations

from typing import Any


def content_preservation(inputs: list[str], outputs: list[Any], classifier: Any) -> list[dict[str, float]]:
    """Per report ``{"recall", "precision", "exact"}``: labels of the input sentences vs the structured utterances.

    Args:
        inputs: free-text reports.
        outputs: structurer outputs (``.report.utterances()`` gives the structured sentences), one per input.
        classifier: anything with ``predict(list[str]) -> list[findings]`` (a FindingClassifier or the lexicon).
    """
    from medfm.methods.srrg.labels import merge_findings, to_labels
    from medfm.methods.srrg.text import split_sentences

    in_s = [split_sentences(t) for t in inputs]
    out_s = [o.report.utterances() for o in outputs]
    uniq = list(dict.fromkeys(s for ss in in_s + out_s for s in ss))
    lab = dict(zip(uniq, classifier.predict(uniq))) if uniq else {}
    rows = []
    for a, b in zip(in_s, out_s):
        la = set(to_labels(merge_findings([lab[s] for s in a]), "leaves_with_statuses"))
        lb = set(to_labels(merge_findings([lab[s] for s in b]), "leaves_with_statuses"))
        tp = len(la & lb)
        rec = tp / len(la) if la else 1.0
        prec = tp / len(lb) if lb else 1.0
        rows.append({"recall": rec, "precision": prec, "exact": float(la == lb)})
    return rows
