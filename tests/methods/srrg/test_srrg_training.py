"""SRR-BERT training recipe: validation split, tuned thresholds, early stopping, the TF-IDF baseline, and model
folders that load as plain transformers classifiers (issue 25)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medfm.core.errors import DataError
from medfm.methods.srrg.data import Sentence, phantom_texts, silver_sentences, validation_split
from medfm.methods.srrg.labels import LEAVES, LEAVES_WITH_STATUSES
from medfm.methods.srrg.thresholds import label_f1, micro_f1, tune_thresholds
from medfm.methods.srrg.train import lr_lambda


def test_validation_split_keeps_each_report_on_one_side_and_is_seeded():
    sents = [Sentence(f"s{r}-{k}", {}, "x", f"r{r}") for r in range(20) for k in range(3)]
    train, val = validation_split(sents, 0.25, seed=3)
    assert len(val) == 5 * 3 and len(train) == 15 * 3
    assert not {s.report_id for s in train} & {s.report_id for s in val}
    assert [s.text for s in validation_split(sents, 0.25, seed=3)[1]] == [s.text for s in val]
    assert [s.text for s in validation_split(sents, 0.25, seed=4)[1]] != [s.text for s in val]
    assert validation_split(sents, 0.0)[1] == []
    with pytest.raises(DataError):
        validation_split(sents, 1.0)


def test_f1_helpers_by_hand():
    t = np.array([[1, 0], [1, 1], [0, 0]])
    p = np.array([[1, 1], [0, 1], [0, 0]])
    assert label_f1(t, p).tolist() == [pytest.approx(2 / 3), pytest.approx(2 / 3)]  # 2*1/(2+1) each
    assert micro_f1(t, p) == pytest.approx(2 * 2 / (3 + 3))
    assert micro_f1(np.zeros((2, 2)), np.zeros((2, 2))) == 0.0
    assert label_f1(np.zeros((3, 2)), np.zeros((3, 2))).tolist() == [0.0, 0.0]  # no positives anywhere: 0, not nan


def test_tuned_threshold_is_the_f1_maximising_cut_and_rare_labels_keep_the_default():
    # label 0: positives at 0.3-0.4, negatives at <= 0.2: cut 0.5 finds nothing, 0.25 finds all (F1 1).
    # label 1: 2 positives only (< min_positives): keeps 0.5 whatever the probabilities
    proba = np.array([[0.3, 0.9], [0.35, 0.1], [0.4, 0.8], [0.1, 0.2], [0.2, 0.3], [0.32, 0.1], [0.38, 0.2]])
    target = np.array([[1, 1], [1, 0], [1, 1], [0, 0], [0, 0], [1, 0], [1, 0]])
    cuts = tune_thresholds(proba, target, default=0.5, min_positives=5)
    assert cuts.shape == (2,) and cuts[0] == pytest.approx(0.25) and cuts[1] == pytest.approx(0.5)
    # the default minimum is 5 validation positives: label 0 has exactly 5 (tuned), with 4 it keeps the default
    assert tune_thresholds(proba, target)[0] == pytest.approx(0.25)
    fewer = target.copy()
    fewer[6, 0] = 0
    assert tune_thresholds(proba, fewer)[0] == pytest.approx(0.5)
    assert micro_f1(target[:, :1], proba[:, :1] > cuts[0]) == 1.0
    # ties go to the cut nearest the default: a perfectly separated label keeps 0.5
    sep = np.array([[0.9], [0.8], [0.95], [0.7], [0.85], [0.1]])
    assert tune_thresholds(sep, np.array([[1], [1], [1], [1], [1], [0]]))[0] == pytest.approx(0.5)


def test_lr_schedule_warms_up_then_decays_to_zero():
    lin, cos = lr_lambda("linear", 10, 110), lr_lambda("cosine", 10, 110)
    assert lin(0) == pytest.approx(0.1) and lin(9) == pytest.approx(1.0)
    assert lin(60) == pytest.approx(0.5) and lin(110) == pytest.approx(0.0)
    assert cos(60) == pytest.approx(0.5) and cos(35) == pytest.approx(0.5 * (1 + np.cos(np.pi * 0.25)))
    assert lr_lambda("constant", 10, 110)(100) == 1.0


def _sentences(n: int = 40):
    return silver_sentences(phantom_texts(n, 1))


def test_tfidf_baseline_learns_saves_and_reloads(tmp_path):
    from medfm.methods.srrg.classifier import load_classifier
    from medfm.methods.srrg.tfidf import train_tfidf

    sents = _sentences(200)
    out = train_tfidf(sents, seed=0, C_grid=(1.0, 16.0))
    assert set(out.val_f1) == {1.0, 16.0} and max(out.val_f1, key=out.val_f1.get) == out.C
    assert out.val_f1[out.C] > 0.7  # phantom sentences are easy for bag-of-words
    clf = out.classifier
    pred = clf.predict(["Cardiomegaly.", "No cardiomegaly."])
    assert pred == [{"Cardiomegaly": "Present"}, {"Cardiomegaly": "Absent"}]
    clf.save_pretrained(tmp_path / "m")
    again = load_classifier(str(tmp_path / "m"))
    texts = [s.text for s in sents[:30]]
    np.testing.assert_allclose(again.predict_proba(texts), clf.predict_proba(texts), rtol=1e-6)
    assert again.thresholds.tolist() == pytest.approx(clf.thresholds.tolist(), abs=1e-4)
    (tmp_path / "m" / "weights.npz").write_bytes(b"truncated")
    with pytest.raises(DataError, match="corrupt"):
        load_classifier(str(tmp_path / "m"))


def test_early_stopping_stops_after_patience_and_a_rerun_resumes_stopped(tmp_path):
    from medfm.methods.srrg.train import train_classifier

    sents = _sentences(30)
    # learning rates 0: validation F1 never improves, so epoch 1 stays best and patience 1 stops after epoch 2
    kw = dict(epochs=6, batch_size=16, lr=0.0, head_lr=0.0, max_length=24, patience=1, seed=0, val_fraction=0.2)
    out = train_classifier(sents, tmp_path, **kw)
    assert out.stopped_early and out.best_epoch == 1 and out.epochs_run == pytest.approx(2.0)
    assert [r["epoch"] for r in out.curve] == [1.0, 2.0]
    assert (tmp_path / "checkpoints" / "best" / "model.safetensors").is_file()
    assert out.val_sentences > 0 and out.train_sentences + out.val_sentences == len(sents)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_micro_f1_tuned" in r] == [r["step"] for r in out.curve]
    again = train_classifier(sents, tmp_path, **kw)  # resumes the stopped run: no further training
    assert again.steps == out.steps and again.stopped_early and again.samples_seen == 0


def test_saved_model_is_a_plain_transformers_classifier_with_label_names(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from medfm.methods.srrg.classifier import FindingClassifier, load_classifier
    from medfm.methods.srrg.train import train_classifier

    out = train_classifier(_sentences(10), tmp_path / "run", epochs=1, max_steps=2, batch_size=8, max_length=16)
    cuts = np.linspace(0.3, 0.7, len(LEAVES_WITH_STATUSES)).astype(np.float32)
    out.classifier.thresholds = cuts
    out.classifier.save_pretrained(tmp_path / "final")
    hf = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "final"))
    assert hf.config.num_labels == 163 and hf.config.id2label[0] == LEAVES_WITH_STATUSES[0]
    assert hf.config.problem_type == "multi_label_classification"
    clf = load_classifier(str(tmp_path / "final"))
    assert isinstance(clf, FindingClassifier)
    np.testing.assert_allclose(clf.thresholds, cuts, atol=1e-4)


def _released_folder(tmp_path, n_labels: int, id2label=None):
    """A folder shaped like a released SRR-BERT checkpoint: config + weights + tokenizer, no srrg.json."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from medfm.data.assets import minilm_path

    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, num_labels=n_labels, id2label=id2label)  # fmt: skip
    folder = tmp_path / f"released{n_labels}"
    BertForSequenceClassification(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def test_released_checkpoints_load_without_srrg_json(tmp_path):
    from medfm.methods.srrg.classifier import _hub_spec, load_classifier

    c163 = load_classifier(str(_released_folder(tmp_path, 163)))
    assert c163.labels == list(LEAVES_WITH_STATUSES) and float(c163.thresholds[0]) == 0.5
    c55 = load_classifier(str(_released_folder(tmp_path, 55)))
    assert c55.labels == list(LEAVES)  # leaves without status read as Present
    assert all(st == "Present" for f in c55.decode(np.ones((1, 55), np.float32)) for st in f.values())
    named = {i: x for i, x in enumerate(reversed(LEAVES_WITH_STATUSES))}
    assert load_classifier(str(_released_folder(tmp_path / "n", 163, named))).labels == list(named.values())
    with pytest.raises(DataError, match="upper"):
        load_classifier(str(_released_folder(tmp_path, 25)))
    assert (
        _hub_spec("StanfordAIMI/SRR-BERT-Leaves-with-Statuses") == "hf-hub:StanfordAIMI/SRR-BERT-Leaves-with-Statuses"
    )
    assert _hub_spec(str(tmp_path)) == str(tmp_path) and _hub_spec("lexicon") == "lexicon"


def test_per_label_thresholds_decide_each_label():
    from medfm.methods.srrg.tfidf import TfidfClassifier

    labels = ["Edema (Present)", "Edema (Absent)", "Cardiomegaly (Present)"]
    clf = TfidfClassifier({"a": 0}, np.ones(1), np.zeros((3, 1)), np.zeros(3), labels, threshold=[0.6, 0.2, 0.9])
    out = clf.decode(np.array([[0.5, 0.3, 0.95], [0.7, 0.65, 0.5]], np.float32))
    # row 0: Edema Present 0.5 < 0.6, Absent 0.3 > 0.2 -> Absent; row 1: both pass, the more probable wins
    assert out == [{"Edema": "Absent", "Cardiomegaly": "Present"}, {"Edema": "Present"}]
