"""Effect on data with known ground truth: phantom reports' labels are known by construction."""

from __future__ import annotations

from medfm.methods.srrg.data import phantom_texts, predict_reports, restrict
from medfm.methods.srrg.lexicon import LexiconLabeller
from medfm.methods.srrg.metric import f1_srr_bert, findings_label_f1
from medfm.methods.srrg.structurer import OfflineStructurer


class NegationBlind:
    """A broken labeller that ignores negation and uncertainty (every mention Present)."""

    def predict(self, texts):
        return [{k: "Present" for k in f} for f in LexiconLabeller().predict(texts)]


def test_labeller_recovers_phantom_labels_and_statuses():
    texts = phantom_texts(60, seed=123)
    ev = texts[0].evaluable
    gold = [restrict(t.gold, ev) for t in texts]
    good = findings_label_f1([restrict(p, ev) for p in predict_reports(texts, LexiconLabeller())], gold,
                             "leaves_with_statuses")  # fmt: skip
    blind = findings_label_f1([restrict(p, ev) for p in predict_reports(texts, NegationBlind())], gold,
                              "leaves_with_statuses")  # fmt: skip
    assert good["micro"] > 0.85
    assert good["micro"] - blind["micro"] > 0.3


def test_metric_ranks_correct_structured_impressions_above_negation_flipped():
    texts = phantom_texts(40, seed=7)
    st = OfflineStructurer()
    refs = [st.structure(t.meta["report"]).report.impression_text() for t in texts]
    flipped = [r.replace("No ", "").replace("no ", "") for r in refs]
    clf = LexiconLabeller()
    same = f1_srr_bert(refs, refs, clf, space="leaves_with_statuses").f1
    worse = f1_srr_bert(flipped, refs, clf, space="leaves_with_statuses").f1
    assert same > 0.9 and same - worse > 0.1
