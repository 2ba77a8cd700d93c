from __future__ import annotations

import json

import pytest

from medfm.cli import main


def test_help_is_torch_free():
    import subprocess
    import sys

    code = "import sys; from medfm.cli import main; main(['srrg', 'score', '--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("False")


def test_structure_score_report_smoke(tmp_path):
    d = tmp_path / "st"
    assert main(["srrg", "structure", "--input", "iu", "--limit", "8", "--output_dir", str(d)]) == 0
    res = json.loads((d / "results.json").read_text())
    assert res["metrics"]["validity"]["value"] == 1.0
    assert res["metrics"]["content_recall"]["value"] >= 0.95
    assert "Free text vs structured" in (d / "report.html").read_text()
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in [
        {"reference": "1. Small left pleural effusion.\n2. No pneumothorax.", "candidate": "1. Left pleural effusion.\n2. Small pneumothorax."},
        {"reference": "1. Cardiomegaly.", "candidate": "1. The heart is enlarged."},
    ]))  # fmt: skip
    s = tmp_path / "sc"
    assert main(["srrg", "score", str(pairs), "--output_dir", str(s), "--bootstrap", "20"]) == 0
    m = json.loads((s / "results.json").read_text())["metrics"]
    assert m["f1_srr_bert/leaves/unaligned/samples"]["value"] == pytest.approx(1.0)
    assert m["f1_srr_bert/leaves_with_statuses/unaligned/samples"]["value"] == pytest.approx((0.5 + 1) / 2)
    assert "f1_srr_bert/leaves_with_statuses/unaligned/weighted" in m and "bleu4" in m and "rougeL" in m
    assert main(["srrg", "report", str(s)]) == 0
    assert main(["srrg", "score", str(tmp_path / "missing.jsonl")]) == 3
    bad = tmp_path / "bad.csv"
    bad.write_text("ref,cand\na,b\n")
    assert main(["srrg", "score", str(bad), "--output_dir", str(tmp_path / "b")]) == 3
    assert main(["srrg", "structure", "--input", "iu", "--dry_run"]) == 0


def test_train_evaluate_card_smoke(tmp_path):
    d = tmp_path / "tr"
    assert (
        main(["srrg", "prepare", "--sources", "phantom", "--phantom_n", "20", "--output_dir", str(tmp_path / "prep")])
        == 0
    )
    rows = (tmp_path / "prep" / "sentences.jsonl").read_text().splitlines()
    assert len(rows) > 20 and "labels" in json.loads(rows[0])
    args = ["srrg", "train", "--config", "preset:tiny", "--data", str(tmp_path / "prep" / "sentences.jsonl"),
            "--output_dir", str(d), "--limit", "20", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    final = d / "checkpoints" / "final"
    assert (final / "srrg.json").is_file() and (d / "checkpoints" / "last" / "trainer_state.json").is_file()
    assert main(["card", "validate", str(final)]) == 0
    from medfm.methods.srrg.classifier import FindingClassifier

    clf = FindingClassifier.from_pretrained(final)
    out = clf.predict(["No pneumothorax.", "Cardiomegaly."])
    assert len(out) == 2 and all(isinstance(x, dict) for x in out)
    assert clf.predict_space(["Edema."], "upper").shape == (1, 25)
    e = tmp_path / "ev"
    assert main(["srrg", "evaluate", "--classifier", str(final), "--limit", "10", "--output_dir", str(e)]) == 0
    res = json.loads((e / "results.json").read_text())
    assert "lexicon" in res["groups"] and "phantom/leaves/micro_f1" in res["metrics"]
    assert main(["srrg", "evaluate", "--classifier", str(tmp_path / "nope")]) == 3


def test_tfidf_baseline_trains_and_scores_through_the_verbs(tmp_path):
    d = tmp_path / "tf"
    assert main(["srrg", "train", "--model", "tfidf", "--sources", "phantom", "--phantom_n", "200",
                 "--eval_phantom_n", "20", "--output_dir", str(d)]) == 0  # fmt: skip
    res = json.loads((d / "results.json").read_text())
    assert res["meta"]["model"] == "tfidf" and res["tables"]["C_selection"]
    assert res["metrics"]["phantom/leaves/micro_f1"]["value"] > 0.5
    final = d / "checkpoints" / "final"
    assert main(["card", "validate", str(final)]) == 0
    e = tmp_path / "ev"
    assert main(["srrg", "evaluate", "--classifier", str(final), "--limit", "10", "--output_dir", str(e)]) == 0
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"reference": "1. Cardiomegaly.", "candidate": "1. Cardiomegaly."}) + "\n")
    s = tmp_path / "sc"
    assert main(["srrg", "score", str(pairs), "--classifier", str(final), "--output_dir", str(s),
                 "--bootstrap", "10"]) == 0  # fmt: skip
    assert (
        json.loads((s / "results.json").read_text())["metrics"]["f1_srr_bert/leaves/unaligned/samples"]["value"] == 1.0
    )
