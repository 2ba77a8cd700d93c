"""SRRG content preservation: labels of the input's sentences vs the structured utterances."""

from __future__ import annotations

from types import SimpleNamespace

from medfm.methods.srrg.preservation import content_preservation


class _Lexicon:
    """Sentence -> findings ({leaf: status}): effusion and edema present when named, nothing otherwise."""

    def predict(self, sentences):
        return [{leaf: "Present" for word, leaf in (("effusion", "Simple pleural effusion"), ("edema", "Edema"))
                 if word in s.lower()} for s in sentences]  # fmt: skip


def _out(*utterances):
    return SimpleNamespace(report=SimpleNamespace(utterances=lambda: list(utterances)))


def test_recall_precision_exact_per_report():
    rows = content_preservation(
        ["Small effusion. Mild edema.", "Small effusion.", "Normal."],
        [_out("Effusion: small."), _out("Effusion: small.", "Edema: mild."), _out()],
        _Lexicon(),
    )
    assert rows[0] == {"recall": 0.5, "precision": 1.0, "exact": 0.0}  # dropped the edema
    assert rows[1] == {"recall": 1.0, "precision": 0.5, "exact": 0.0}  # added an edema
    assert rows[2] == {"recall": 1.0, "precision": 1.0, "exact": 1.0}  # nothing on either side
