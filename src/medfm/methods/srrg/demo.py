"""``medfm demo`` step: structure IU reports, and score the lexicon labeller against radlabels' expert labels.

The structuring is shown as a figure (free text beside the structured report); the headline is a measured
effect that is not fixed by construction: leaf-level micro F1 of the offline lexicon labeller against the
annotated labels of radlabels' held-out half (the reports the SRRG benchmark scores SRR-BERT on).
"""

from __future__ import annotations

from pathlib import Path


def run_demo(out_dir: Path, seed: int):
    """Structure 40 IU reports, score their impressions against perturbed copies, score the lexicon labeller
    on radlabels, write report.html and the key figure."""
    import html
    import json

    import numpy as np

    from medfm.core.metrics import with_ci
    from medfm.core.report import Report, save_figure, text_panels_figure
    from medfm.demo import Headline, StepOutcome, benchmark_file
    from medfm.methods.srrg.data import predict_reports, radlabels_texts, restrict
    from medfm.methods.srrg.labels import findings_matrix
    from medfm.methods.srrg.lexicon import LexiconLabeller
    from medfm.methods.srrg.metric import f1_srr_bert
    from medfm.methods.srrg.preservation import content_preservation
    from medfm.methods.srrg.run import read_reports
    from medfm.methods.srrg.structurer import OfflineStructurer
    from medfm.methods.srrg.thresholds import micro_f1

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = read_reports("iu", 40)
    clf = LexiconLabeller()
    st = OfflineStructurer(clf)
    outs = [st.structure(r["report"]) for r in rows]
    cp = content_preservation([r["report"] for r in rows], outs, clf)
    valid = sum(o.valid for o in outs) / len(outs)
    recall = sum(c["recall"] for c in cp) / len(cp)
    refs = [o.report.impression_text() for o in outs if o.report.impression]
    # candidates: identical impressions, and impressions with the first item dropped (a degraded generator)
    same = f1_srr_bert(refs, refs, clf, space="leaves_with_statuses")
    dropped = [
        "\n".join(f"{k}. {x}" for k, x in enumerate(o.report.impression[1:], 1)) for o in outs if o.report.impression
    ]
    worse = f1_srr_bert(dropped, refs, clf, space="leaves_with_statuses")
    # the lexicon against expert labels: radlabels' second half (SRR-BERT's held-out set in the benchmark)
    rl = radlabels_texts()
    held = rl[round(len(rl) * 0.5) :]
    ev = held[0].evaluable
    gold = findings_matrix([restrict(t.gold, ev) for t in held], "leaves").astype(np.int64)
    pred = findings_matrix([restrict(x, ev) for x in predict_reports(held, clf)], "leaves").astype(np.int64)
    lex = with_ci(micro_f1, gold, pred, n_resamples=1000, seed=seed,
                  note="bootstrap over reports; leaf labels with radlabels annotations")  # fmt: skip
    compare = "predicting no finding: 0"
    bf = benchmark_file("srrg")
    if bf is not None:
        claims = {c.get("id"): c for c in json.loads(bf.read_text()).get("claims", [])}
        c = claims.get("leaf_micro_f1_radlabels")
        if c and c.get("ours") is not None:
            compare += f"; SRR-BERT (MiniLM) trained in the benchmark {c['ours']:.3f}"

    # the richest structured report that still fits the figure (<= 16 lines)
    fits = [i for i, o in enumerate(outs) if o.valid and o.text.count("\n") < 16] or [0]
    pick = max(fits, key=lambda i: outs[i].text.count("\n"))
    fig = text_panels_figure(
        [("free-text report (IU)", rows[pick]["report"]), ("structured report (SRRG format)", outs[pick].text)],
        width_chars=58,
    )
    key = save_figure(out_dir / "structured_vs_free_text.png", fig, (
        f"IU report {rows[pick].get('id', pick)}: the free text (left) and the structured report the offline "
        "structurer writes from it (right): findings grouped under organ headers, a numbered impression. Text is cut "
        "at 16 lines."))  # fmt: skip
    rep = Report(
        "SRRG demo: structuring and F1-SRR-BERT on IU reports", subtitle=f"{len(rows)} IU reports, seed {seed}"
    )
    rep.add_table(
        "Summary",
        [
            {"quantity": "structured reports valid", "value": round(valid, 3)},
            {"quantity": "content preservation (label recall)", "value": round(recall, 3)},
            {"quantity": "F1-SRR-BERT identical impressions", "value": round(same.f1, 3)},
            {"quantity": "F1-SRR-BERT first impression item dropped", "value": round(worse.f1, 3)},
            {"quantity": f"lexicon leaf micro F1 vs radlabels annotations ({len(held)} reports)", "value": lex.value},
        ],
    )
    rep.add_figure("A structured report", key)
    body = "<table><tr><th>free text</th><th>structured</th></tr>" + "".join(
        f"<tr><td><pre>{html.escape(r['report'])}</pre></td><td><pre>{html.escape(o.text)}</pre></td></tr>"
        for r, o in list(zip(rows, outs))[:6]
    )
    rep.add_html("Free text vs structured", body + "</table>")
    rep.add_metrics({"lexicon_leaf_micro_f1_radlabels": lex}, heading="Lexicon labeller vs expert labels")
    path = rep.save(out_dir / "report.html")
    return StepOutcome(
        path,
        f"{len(rows)} IU reports structured ({valid:.0%} valid, label recall {recall:.2f}); "
        f"F1-SRR-BERT {same.f1:.2f} identical vs {worse.f1:.2f} with an item dropped; the offline lexicon "
        f"labeller scored against {len(held)} expert-annotated radlabels reports.",
        figure=key,
        headline=Headline.of("lexicon labeller leaf micro F1 vs expert labels", lex, compare=compare),
        smoke=lex.ci is None or lex.ci[0] <= 0,
        benchmark="srrg",
    )
