from __future__ import annotations

import json

import pytest

from medfm.core.cards import Capabilities, EvaluationResult, ModelCard, Training, TrainingData, load_card
from medfm.core.errors import DataError
from medfm.core.results import Metric, Results


def full_card() -> ModelCard:
    return ModelCard(
        name="tiny-clip",
        method="chexficient",
        data=TrainingData(
            size=100,
            unit="image-report pairs",
            modalities=["CXR", "text"],
            body_regions=["chest"],
            annotation="none",
            sources=["phantom-cxr"],
            synthetic=True,
        ),
        training=Training(
            paradigm=["vision-language-alignment"],
            objective="InfoNCE",
            architecture="ViT-T + MiniLM",
            parameters=1000,
            steps=10,
            samples_seen=320,
            device="cpu",
            device_hours=0.01,
        ),
        capabilities=Capabilities(supported=["zero-shot", "retrieval"], inputs="CXR", outputs="embeddings"),
        intended_use="research",
        limitations=["synthetic data only"],
    )


def test_card_validates_and_roundtrips(tmp_path):
    card = full_card()
    res = Results("chexficient", "evaluate")
    res.add("auroc", Metric(0.8, (0.7, 0.9), n=50))
    res.add("auroc", Metric(0.7, n=20), group="site=B")
    card.add_results(res)
    assert card.validate() == []
    assert [e.setting for e in card.evaluation] == ["in-distribution", "subgroups"]
    (tmp_path / "card.json").write_text(json.dumps(card.to_json()))
    back = load_card(tmp_path)
    assert back == card
    md = card.to_markdown()
    assert md.startswith("---\n") and "library_name: medfm" in md and "Not for clinical use" in md
    assert "| auroc | 0.8 | [0.7, 0.9] | 50 | in-distribution" in md
    assert "<table>" in card.to_html()


def test_card_validation_lists_missing_fields():
    card = ModelCard(name="x", method="y")
    card.training.paradigm = ["magic"]
    card.evaluation.append(EvaluationResult("acc", 0.5, setting="somewhere"))
    problems = card.validate()
    text = " | ".join(problems)
    for fragment in (
        "data.size",
        "data.modalities",
        "data.sources",
        "'magic'",
        "training.objective",
        "capabilities.supported",
        "setting 'somewhere'",
        "intended_use",
        "limitations",
    ):
        assert fragment in text, fragment


def test_load_card_errors(tmp_path):
    with pytest.raises(DataError, match=r"no card\.json"):
        load_card(tmp_path)
    (tmp_path / "card.json").write_text('{"schema": "medfm.card/1", "bogus": 1}')
    with pytest.raises(DataError, match="unknown or missing field"):
        load_card(tmp_path)


def test_method_card_facts_are_data_with_run_facts_filled_in():
    import pytest

    from medfm.core.cards import method_facts

    kinds = {"srrg": ["classifier"], "chexalign": ["policy"], "mass": ["model"], "headentropy": ["probe"],
             "ravl": ["mitigated"], "chexficient": ["model"], "medvae": ["trained", "converted"], "vlm": ["sft"]}  # fmt: skip
    fill = {"data": "site A", "steps": 7, "size": 64, "max_images": 2}
    for method, ks in kinds.items():
        for kind in ks:
            facts = method_facts(f"medfm.methods.{method}", kind, **fill)
            assert facts["intended_use"] and facts["limitations"], (method, kind)
            assert not any("{" in x for x in facts["limitations"])  # every placeholder filled
    assert "Trained on site A for 7 steps" in method_facts("medfm.methods.medvae", "trained", **fill)["limitations"][0]
    with pytest.raises(KeyError, match="steps"):
        method_facts("medfm.methods.medvae", "trained", data="x")
    with pytest.raises(KeyError, match="no card kind"):
        method_facts("medfm.methods.medvae", "nope")
