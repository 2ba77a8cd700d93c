"""``medfm demo`` step: structure and score a few IU reports (offline structurer, lexicon classifier)."""

from __future__ import annotations

from pathlib import Path


def run_demo(out_dir: Path, seed: int):
    """Structure 40 IU reports, score their impressions against perturbed copies, write report.html."""
    import html

    from medfm.core.report import Report
    from medfm.demo import StepOutcome
    from medfm.methods.srrg.lexicon import LexiconLabeller
    from medfm.methods.srrg.metric import f1_srr_bert
    from medfm.methods.srrg.preservation import content_preservation
    from medfm.methods.srrg.run import read_reports
    from medfm.methods.srrg.structurer import OfflineStructurer

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
        ],
    )
    body = "<table><tr><th>free text</th><th>structured</th></tr>" + "".join(
        f"<tr><td><pre>{html.escape(r['report'])}</pre></td><td><pre>{html.escape(o.text)}</pre></td></tr>"
        for r, o in list(zip(rows, outs))[:6]
    )
    rep.add_html("Free text vs structured", body + "</table>")
    path = rep.save(out_dir / "report.html")
    return StepOutcome(
        path,
        f"{len(rows)} IU reports structured ({valid:.0%} valid, label recall {recall:.2f}); "
        f"F1-SRR-BERT {same.f1:.2f} identical vs {worse.f1:.2f} with an item dropped",
    )
