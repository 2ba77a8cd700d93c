"""Unit tests of RadDiff's algorithmic core against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medfm.backends.base import Capabilities
from medfm.backends.scripted import ScriptedBackend
from medfm.methods.raddiff.captioner import make_captioner
from medfm.methods.raddiff.data import ImageItem
from medfm.methods.raddiff.evaluator import acc_at_k, offline_score, parse_judge
from medfm.methods.raddiff.grids import GridSpec, crop, crop_grids, make_grid, parse_boxes, stack_vertical
from medfm.methods.raddiff.offline import PhraseContrastBackend, contrast_phrases
from medfm.methods.raddiff.proposer import (
    Proposer,
    exact_dedup,
    format_feedback,
    parse_hypotheses,
    sample_rounds,
)
from medfm.methods.raddiff.ranker import Embedder, EmbeddingStore, auroc_rows, rank_hypotheses, welch_pvalues


def test_auroc_hand_values_and_sklearn():
    # A = [3, 1], B = [2, 2]: pairs (3>2, 3>2, 1<2, 1<2) -> 2/4; ties count 1/2: A=[2], B=[2] -> 0.5
    assert auroc_rows(np.array([[3.0, 1.0]]), np.array([[2.0, 2.0]]))[0] == pytest.approx(0.5)
    assert auroc_rows(np.array([[3.0, 2.5]]), np.array([[2.0, 1.0, 2.5]]))[0] == pytest.approx((3 + 2.5) / 6)
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    a, b = np.round(rng.normal(0.3, 1, (7, 40)), 1), np.round(rng.normal(0, 1, (7, 55)), 1)  # with ties
    ours = auroc_rows(a, b)
    ref = [roc_auc_score(np.r_[np.ones(40), np.zeros(55)], np.r_[a[i], b[i]]) for i in range(7)]
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_welch_matches_scipy_and_rank_order():
    from scipy import stats

    rng = np.random.default_rng(1)
    a, b = rng.normal(0.5, 1, (3, 20)), rng.normal(0, 2, (3, 30))
    np.testing.assert_allclose(welch_pvalues(a, b), [stats.ttest_ind(a[i], b[i], equal_var=False).pvalue
                                                     for i in range(3)])  # fmt: skip
    # 2-D embeddings: A images point along x, B along y; "x" text must rank first with AUROC 1
    ea = np.tile([1.0, 0.0], (5, 1)) + rng.normal(0, 0.01, (5, 2))
    eb = np.tile([0.0, 1.0], (6, 1)) + rng.normal(0, 0.01, (6, 2))
    t = np.array([[0.0, 1.0], [1.0, 0.0], [0.7071, 0.7071]])
    ranked = rank_hypotheses(["y", "x", "diag"], ea, eb, t, threshold=0.5)
    assert ranked[0].text == "x" and ranked[0].auroc == 1.0 and ranked[-1].text == "y"
    assert ranked[0].correct_delta == pytest.approx(1.0)  # all A above 0.5, no B
    assert ranked[0].significant
    kept = rank_hypotheses(["y", "x", "same"], ea, eb, np.array([[0, 1.0], [1.0, 0], [0, 0.0]]), filter_pvalue=True)
    assert "same" not in [r.text for r in kept]


def test_ranking_1000_by_10000_matches_sklearn():
    """Full-scale ranking is exact (its speed is measured side by side in benchmarks/raddiff.py)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(10000, 64)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    txt = rng.normal(size=(1000, 64)).astype(np.float32)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    texts = [f"h{i}" for i in range(1000)]
    ranked = rank_hypotheses(texts, emb[:5000], emb[5000:], txt)
    assert len(ranked) == 1000
    assert [r.auroc for r in ranked] == sorted((r.auroc for r in ranked), reverse=True)
    labels = np.r_[np.ones(5000), np.zeros(5000)]
    for r in ranked[:3] + ranked[-3:]:
        i = int(r.text[1:])
        assert r.auroc == pytest.approx(roc_auc_score(labels, emb @ txt[i]), abs=1e-6)


class _CountingEmbedder(Embedder):
    id = "count-v1"

    def __init__(self):
        self.image_calls = 0

    def embed_image_files(self, paths):
        self.image_calls += len(paths)
        return np.stack([[len(p.name), 1.0] for p in paths]).astype(np.float32)

    def embed_texts(self, texts):
        return np.ones((len(texts), 2), np.float32)


def test_embedding_store_computes_each_image_once_across_runs(tmp_path):
    paths = []
    for i in range(4):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(np.full((8, 8), i * 40, np.uint8)).save(p)
        paths.append(p)
    emb = _CountingEmbedder()
    store = EmbeddingStore(tmp_path / "e.sqlite")
    first = store.images(emb, paths[:3])
    store.images(emb, paths)  # one new image
    assert emb.image_calls == 4 and store.computed_images == 4 and store.cached_images == 3
    store.close()
    again = EmbeddingStore(tmp_path / "e.sqlite")  # a later run
    np.testing.assert_allclose(again.images(emb, paths[:3]), first)
    assert emb.image_calls == 4 and again.computed_images == 0


def test_parse_hypotheses_variants():
    assert parse_hypotheses('{"differences": ["left effusion", "2", " cardiomegaly "]}') == [
        "left effusion",
        "cardiomegaly",
    ]
    double = json.dumps(json.dumps({"differences": ["pneumothorax"]}))
    assert parse_hypotheses(double) == ["pneumothorax"]
    assert parse_hypotheses("Sure!\n```json\n{'d': ['a tube', 'edema',]}\n```") == ["a tube", "edema"]
    assert parse_hypotheses("* enlarged heart\n* pacemaker\nnot a bullet") == ["enlarged heart", "pacemaker"]
    assert parse_hypotheses("") == [] and parse_hypotheses(None) == []
    assert exact_dedup(["The effusion", "effusion.", "Effusion", "edema"]) == ["The effusion", "edema"]


def test_sampling_reseeds_and_feedback_format():
    r1 = sample_rounds(30, 12, 3, 10, seed=4)
    assert r1 == sample_rounds(30, 12, 3, 10, seed=4) and r1 != sample_rounds(30, 12, 3, 10, seed=5)
    assert all(len(a) == 10 and len(b) == 10 and len(set(a)) == 10 for a, b in r1)
    assert len(sample_rounds(5, 40, 1, 20, 0)[0][0]) == 5  # smaller set: all of it

    class R:
        def __init__(self, t, a):
            self.text, self.auroc = t, a

    assert format_feedback([R("x", 0.91), R("y", 0.5)], topk=1) == "Top 1 Difference: x\nTop 1 Score: 0.910"


def test_boxes_and_grids():
    boxes = parse_boxes('{"boxes": [{"x1": 0.8, "y1": 1.4, "x2": 0.2, "y2": 0.1}, [0, 0, 0.5, 0.5], "junk"]}')
    assert boxes[0] == (0.2, 0.1, 0.8, 1.0) and boxes[1] == (0.0, 0.0, 0.5, 0.5)
    assert boxes[2:] == [(0.0, 0.0, 0.0, 0.0)] * 3 and len(boxes) == 5
    assert parse_boxes({"group_b": [[0, 0, 1, 1]], "group_a": [[0, 0, 0.5, 1]]})[0] == (0, 0, 0.5, 1)
    assert parse_boxes("nonsense") == [(0.0, 0.0, 0.0, 0.0)] * 5
    spec = GridSpec(tile=16, gap=2, resize=32, group_gap=5)
    ims = [Image.fromarray(np.full((20, 20), 200, np.uint8)) for _ in range(3)]
    g = make_grid(ims, spec)
    assert g.size == (5 * 16 + 4 * 2, 4 * 16 + 3 * 2)
    assert np.asarray(g)[0, 0] == 200 and np.asarray(g)[-1, -1] == 0  # filled first cell, empty last cell
    crops = crop_grids(ims, ims, boxes, spec)
    assert len(crops) == 2 and crops[0][1].size == (g.size[0], 2 * g.size[1] + 5)
    # each crop grid is the A-over-B tiling of crop() applied to every image
    rng = np.random.default_rng(2)
    noisy = [Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)) for _ in range(4)]
    box = (0.1, 0.25, 0.6, 0.9)
    want = stack_vertical(make_grid([crop(im, box, spec) for im in noisy[:3]], spec),
                          make_grid([crop(im, box, spec) for im in noisy[1:]], spec), spec.group_gap)  # fmt: skip
    ((got_box, got),) = crop_grids(noisy[:3], noisy[1:], [box, (0.5, 0.5, 0.5, 0.9)], spec)
    assert got_box == box and np.array_equal(np.asarray(got), np.asarray(want))


def test_make_captioner_uses_prompt_and_token_budget(tmp_path):
    script = tmp_path / "captions.jsonl"
    script.write_text(json.dumps({"prompt": "Name the findings.", "response": "left pleural effusion"}) + "\n")
    img = tmp_path / "im.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(img)
    cap = make_captioner(f"scripted:{script}", prompt="Name the findings.", max_tokens=2)
    assert cap.captions([ImageItem(img, "im")]) == ["left pleural"]  # scripted answer for that prompt, cut at 2
    assert make_captioner(f"scripted:{script}").captions([ImageItem(img, "im")]) == [""]  # default prompt: unknown


def test_judge_parsing_and_offline_scores():
    assert parse_judge('{"score": [2]}') == 2 and parse_judge('{"score": 1}') == 1
    assert parse_judge("garbage") == 0 and parse_judge('{"score": [7]}') == 0 and parse_judge("2") == 2
    assert offline_score("pleural effusion", "pleural effusion", "no pleural effusion") == 2
    assert offline_score("blunted costophrenic angle", "pleural effusion", "no pleural effusion") == 2
    assert offline_score("no pleural effusion", "pleural effusion", "no pleural effusion") == 0
    assert offline_score("left pleural effusion", "left pleural effusion", "right pleural effusion") == 2
    assert offline_score("right pleural effusion", "left pleural effusion", "right pleural effusion") == 0
    assert offline_score("pleural effusion", "left pleural effusion", "right pleural effusion") == 0
    assert offline_score("pleural effusion", "left pleural effusion", "no pleural effusion") == 1
    assert offline_score("lung opacity", "consolidation", "no consolidation") == 1
    assert offline_score("cardiomegaly", "pleural effusion", "no pleural effusion") == 0
    assert offline_score("large pleural effusion", "large pleural effusion", "small pleural effusion") == 2
    assert offline_score("small pleural effusion", "large pleural effusion", "small pleural effusion") == 0
    assert acc_at_k([0, 1, 2], 1) == 0.0 and acc_at_k([0, 1, 2], 2) == 0.5 and acc_at_k([0, 1, 2], 5) == 1.0
    assert acc_at_k([], 5) == 0.0


def _grid_prompt_check(req):
    user = req.messages[-1]
    if "numbered list" in user.content:
        return json.dumps({"differences": ["left pleural effusion"]})
    if "bounding boxes" in user.content:
        assert len(user.images) == 1  # the combined A-over-B grid
        return json.dumps({"boxes": [[0, 0.5, 0.5, 1.0], [0.5, 0.5, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [1, 1, 0, 0]]})
    if "Sharpen" in user.content:
        return json.dumps({"differences": [f"crops:{len(user.images)}"]})
    return json.dumps({"differences": [f"images:{len(user.images)}", "left pleural effusion"]})


def _proposer(mode, backend, **kw):
    return Proposer(backend, mode=mode, num_rounds=2, num_samples=4, grid=GridSpec(tile=8, gap=1, resize=16),
                    dedup=False, **kw)  # fmt: skip


def test_proposer_variants_send_what_the_paper_sends():
    ims = [Image.fromarray(np.full((16, 16), 10 * i, np.uint8)) for i in range(6)]
    texts = [f"caption {i}" for i in range(6)]
    backend = ScriptedBackend(_grid_prompt_check)
    p = _proposer("raddiff", backend).propose(texts, texts, ims.__getitem__, ims.__getitem__)
    assert "images:2" in p.hypotheses and p.calls == 2  # two grids per round, two rounds
    assert "Group A: caption" in backend.calls[0].messages[-1].content
    v = _proposer("visdiff", backend).propose(texts, texts, ims.__getitem__, ims.__getitem__)
    assert "images:0" in v.hypotheses

    class Fb:
        text, auroc = "left pleural effusion", 0.8

    backend.calls.clear()
    s = _proposer("raddiff", backend).propose(texts, texts, ims.__getitem__, ims.__getitem__, feedback=[Fb()],
                                              visual_search=True)  # fmt: skip
    assert s.hypotheses == ["crops:4"]  # [1,1,0,0] is re-ordered to a full box; only [0,0,0,0] is skipped
    assert "Top 1 Difference: left pleural effusion" in backend.calls[0].messages[-1].content
    assert len(s.boxes) == 2 and s.calls == 4
    # text-only backend: no images even in raddiff mode
    text_only = ScriptedBackend(_grid_prompt_check, capabilities=Capabilities(chat=True, images=False))
    t = _proposer("raddiff", text_only).propose(texts, texts, ims.__getitem__, ims.__getitem__)
    assert "images:0" in t.hypotheses


def test_proposer_with_empty_or_failing_backend():
    texts = ["a"] * 5
    empty = _proposer("visdiff", ScriptedBackend(lambda r: "")).propose(texts, texts, None, None)
    assert empty.hypotheses == []
    failing = _proposer("visdiff", ScriptedBackend({}, default=None)).propose(texts, texts, None, None)
    assert failing.hypotheses == [] and failing.errors
    # de-duplication answer unusable -> exact-match list kept
    p = Proposer(ScriptedBackend(lambda r: "no json" if "numbered" in r.messages[-1].content
                                 else '{"d": ["x", "X", "y"]}'), mode="visdiff", num_rounds=1, num_samples=2)  # fmt: skip
    assert p.propose(texts, texts, None, None).hypotheses == ["x", "y"]


def test_offline_contrast_proposer_finds_the_planted_phrase():
    a = ["Left pleural effusion. Heart size is normal."] * 8 + ["No pleural effusion. Atelectasis."] * 2
    b = ["Heart size is normal. No pleural effusion."] * 7 + ["Atelectasis at the right base."] * 3
    top = contrast_phrases(a, b, k=3)
    assert top[0][0] == "left pleural effusion" and top[0][1] == pytest.approx(0.8)
    prompt = "\n".join([f"Group A: {t}" for t in a] + [f"Group B: {t}" for t in b])
    ans = PhraseContrastBackend().chat(prompt)
    assert parse_hypotheses(ans.text)[0] == "left pleural effusion"
