from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from medfm.cli import main


def test_demo_environment_step_writes_linked_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output_dir", str(out), "--only", "environment"]) == 0
    html = (out / "report.html").read_text()
    assert "href='environment/report.html'" in html and "ok</span> in" in html
    env_html = (out / "environment" / "report.html").read_text()
    assert "Offline assets" in env_html and "smollm2" in env_html


def test_demo_unknown_step_is_usage_error(tmp_path, capsys):
    assert main(["demo", "--output_dir", str(tmp_path), "--only", "nope"]) == 2
    assert "unknown demo step" in capsys.readouterr().err


def _sections(html: str) -> dict[str, str]:
    """Top-page section bodies by their heading."""
    parts = re.split(r"<h2>(.*?)</h2>", html)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _stub_step(out_dir: Path, seed: int):
    """A method step as the real ones are: a run report, a key figure with its caption, a headline with a CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medfm.core.report import Report, save_figure
    from medfm.demo import Headline, StepOutcome

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 0.8])
    ax.set_xlabel("false positive rate")
    key = save_figure(out_dir / "plots" / "roc.png", fig, "ROC of the stub scorer.")
    report = Report("stub").add_figure("ROC", key).save(out_dir / "report.html")
    smoke = out_dir.name == "srrg"
    return StepOutcome(report, "stub ran", figure=key, smoke=smoke, benchmark="srrg" if smoke else None,
                       headline=Headline("AUROC", 0.87654, (0.8123, 0.9346), compare="chance 0.5"))  # fmt: skip


def _broken_step(out_dir: Path, seed: int):
    raise ValueError("the step's input is missing")


def test_top_page_has_a_figure_and_a_number_per_method(tmp_path, monkeypatch, capsys):
    import medfm.demo as demo

    monkeypatch.setattr(demo, "_stub_step", _stub_step, raising=False)
    monkeypatch.setattr(demo, "_broken_step", _broken_step, raising=False)
    steps = (demo.DemoStep("mass", "MASS", "env", "medfm.demo:_stub_step"),
             demo.DemoStep("srrg", "SRRG", "env", "medfm.demo:_stub_step"),
             demo.DemoStep("ravl", "RaVL", "env", "medfm.demo:_broken_step"))  # fmt: skip
    monkeypatch.setattr(demo, "STEPS", steps)
    out = tmp_path / "demo"
    assert main(["demo", "--output_dir", str(out)]) == 1  # one step failed: reported, the others still ran
    html = (out / "report.html").read_text()
    secs = _sections(html)
    for title in ("MASS", "SRRG"):
        body = secs[title]
        assert "<img" in body and "data:image/png;base64," in body, title
        assert "<figcaption>ROC of the stub scorer.</figcaption>" in body
        assert "AUROC: 0.877 [0.812, 0.935] (chance 0.5)" in body  # three significant digits, CI, comparison
        assert "href='" + f"{title.lower()}/report.html'" in body
    assert "smoke scale" not in secs["MASS"] and "smoke scale: not a finding" in secs["SRRG"]
    assert "srrg.json" in secs["SRRG"] and "scale:" in secs["SRRG"]  # the benchmark verdict is linked instead
    assert "FAILED" in secs["RaVL"] and "the step&#x27;s input is missing" in secs["RaVL"]
    assert "{'" not in html and "0.87654" not in html  # no raw dicts, no unrounded numbers
    doc = json.loads((out / "demo.json").read_text())
    assert [s["status"] for s in doc["steps"]] == ["ok", "ok", "FAILED"]
    assert doc["steps"][0]["headline"]["ci"] == [0.8123, 0.9346] and doc["steps"][1]["smoke"] is True


@pytest.mark.slow
def test_fast_method_steps_write_their_key_figure_and_headline(tmp_path, capsys):
    """The real SRRG and RadDiff demo steps (seconds each) end to end."""
    out = tmp_path / "demo"
    assert main(["demo", "--output_dir", str(out), "--only", "srrg,raddiff"]) == 0
    doc = json.loads((out / "demo.json").read_text())
    for step in doc["steps"]:
        fig = Path(step["figure"])
        assert fig.is_file() and fig.with_name(fig.stem + ".caption.txt").read_text().strip(), step["name"]
        assert step["headline"]["value"] is not None and step["benchmark"] == step["name"]
    srrg = next(s for s in doc["steps"] if s["name"] == "srrg")
    lo, hi = srrg["headline"]["ci"]
    assert 0.5 < lo <= srrg["headline"]["value"] <= hi < 1  # the lexicon agrees with expert labels, not by chance
    secs = _sections((out / "report.html").read_text())
    assert all("<img" in secs[t] for t in ("SRRG", "RadDiff"))
