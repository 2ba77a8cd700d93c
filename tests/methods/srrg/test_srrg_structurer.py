from __future__ import annotations

from medfm.backends.scripted import ScriptedBackend
from medfm.methods.srrg.lexicon import LexiconLabeller, label_sentence
from medfm.methods.srrg.structured import validate_structured
from medfm.methods.srrg.structurer import LLMStructurer, OfflineStructurer


def test_lexicon_statuses():
    assert label_sentence("No pneumothorax or pleural effusion.") == {
        "Simple pneumothorax": "Absent", "Simple pleural effusion": "Absent"}  # fmt: skip
    assert label_sentence("Possible pneumonia in the left lower lobe.") == {"Pneumonia": "Uncertain"}
    assert label_sentence("Minimal left basilar atelectasis.") == {"Atelectasis": "Present"}
    assert label_sentence("The heart is normal in size.") == {"Cardiomegaly": "Absent"}
    assert label_sentence("No acute cardiopulmonary process.") == {"No Finding": "Present"}
    assert label_sentence("Pneumothorax has resolved.") == {"Simple pneumothorax": "Absent"}
    assert label_sentence("Right chest tube in place.") == {"Pleural tube": "Present"}


REPORT = ("FINDINGS: The heart is enlarged. There is no focal consolidation, pleural effusion or pneumothorax. "
          "Right chest tube in place.\nIMPRESSION: No pneumothorax. Cardiomegaly.")  # fmt: skip


def test_offline_structurer_negation_aware_split_and_order():
    res = OfflineStructurer().structure(REPORT)
    assert res.valid, res.problems
    f = res.report.findings
    assert f["Lungs and Airways"] == ["There is no focal consolidation."]
    assert f["Pleura"] == ["There is no pleural effusion or pneumothorax."]
    assert f["Cardiovascular"] == ["The heart is enlarged."]
    assert f["Tubes, Catheters, and Support Devices"] == ["Right chest tube in place."]
    # present finding first in the impression
    assert res.report.impression == ["Cardiomegaly.", "No pneumothorax."]


def test_offline_structurer_bad_input():
    res = OfflineStructurer().structure("")
    assert res.warnings == ["empty report"] and res.text == ""
    res = OfflineStructurer().structure("Keine Pleuraergüsse. Herz normal groß. Lunge frei von Infiltraten.")
    assert any("English" in w for w in res.warnings)


GOOD = "Findings:\nCardiovascular:\n- The heart is enlarged.\n\nImpression:\n1. Cardiomegaly."


def test_llm_structurer_repair_loop():
    answers = iter(["Here is the report: heart big", "Findings:\nHeart:\n- big", GOOD])
    backend = ScriptedBackend(lambda req: next(answers))
    res = LLMStructurer(backend, max_repairs=2).structure("FINDINGS: The heart is enlarged. IMPRESSION: Cardiomegaly.")
    assert res.valid and res.source == "llm" and res.attempts == 3 and res.text == GOOD
    # the repair request lists the problems of the previous answer
    assert "Problems" in backend.calls[1].messages[-1].content


def test_llm_structurer_bounded_and_fallback():
    backend = ScriptedBackend(lambda req: "I cannot do that.")
    res = LLMStructurer(backend, max_repairs=1).structure(REPORT)
    assert len(backend.calls) == 2 and res.source == "llm+fallback" and res.valid
    res = LLMStructurer(ScriptedBackend(lambda req: "nonsense"), max_repairs=0, fallback=False).structure(REPORT)
    assert not res.valid and res.attempts == 1 and validate_structured(res.text)


def test_lexicon_is_a_classifier():
    out = LexiconLabeller().predict(["No edema.", "Cardiomegaly."])
    assert out == [{"Edema": "Absent"}, {"Cardiomegaly": "Present"}]
