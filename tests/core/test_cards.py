from __future__ import annotations

import json

import pytest

from medfm.core.cards import Capabilities, EvaluationResult, ModelCard, Training, TrainingData, load_card
from medfm.core.claims import claim, holds, replace_block, results_table, update_readme, write_benchmark
from medfm.core.errors import DataError
from medfm.core.results import Metric, Results


def test_holds_uses_ci_bounds():
    assert holds(0.8, 0.5) and not holds(0.4, 0.5)
    assert not holds(0.8, 0.5, ci=(0.45, 0.9))  # point above, but the CI does not exclude the threshold
    assert holds(0.8, 0.5, ci=(0.55, 0.9))
    assert holds(0.1, 0.5, expect="less", ci=(0.0, 0.4)) and not holds(0.1, 0.5, expect="less", ci=(0.0, 0.6))
    assert not holds(None, 0.0)
    with pytest.raises(ValueError):
        holds(1.0, 0.0, expect="bigger")


def test_claim_requires_a_reference():
    c = claim("c1", "ICL helps (+8%)", "accuracy gain", 0.05, threshold=0.0, ci=(0.01, 0.09), n=100)
    assert c.holds and c.ci == [0.01, 0.09]
    c2 = claim("c2", "beats baseline", "auroc", 0.70, baseline=0.72)
    assert not c2.holds
    with pytest.raises(ValueError):
        claim("c3", "x", "y", 1.0)


def test_benchmark_file_and_readme_table(tmp_path):
    results = tmp_path / "results"
    write_benchmark(
        results / "toy.json",
        "toy",
        "python benchmarks/toy.py",
        [
            claim("speed", "X is faster", "speedup |a / b|", 3.0, threshold=1.0),
            claim("acc", "Y beats Z", "delta", -0.1, threshold=0.0, note="did not reproduce"),
        ],
        {"seconds": 1.5},
    )
    doc = json.loads((results / "toy.json").read_text())
    assert {"method", "command", "commit", "machine", "created_at", "claims", "metrics"} <= set(doc)
    assert [c["holds"] for c in doc["claims"]] == [True, False]
    table = results_table(results)
    assert (
        "| toy | speed: speedup \\|a / b\\| | X is faster |" in table
        and "**no**" in table
        and "python benchmarks/toy.py" in table
    )
    readme = tmp_path / "README.md"
    readme.write_text(
        "a\n<!-- capabilities:start -->\nSTALE\n<!-- capabilities:end -->\n"
        "<!-- results:start -->\nSTALE\n<!-- results:end -->\nz\n"
    )
    assert update_readme(readme, results) is True
    text = readme.read_text()
    assert "| toy | speed" in text and "`medfm mass`" in text and text.endswith("z\n") and "STALE" not in text
    assert update_readme(readme, results) is False
    with pytest.raises(ValueError):
        replace_block("no markers", "results", "x")


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
