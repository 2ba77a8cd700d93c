"""The evidence standard: claim status from numbers, the results-file schema, the README table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medfm.core.claims import (
    Control,
    _num,
    benchmark_doc,
    claim,
    decide,
    git_state,
    recheck,
    replace_block,
    results_table,
    update_readme,
    validate_benchmark,
    write_benchmark,
)

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
FALS = "a CI below the threshold"


def _decide(**kw):
    base = {"ours": 0.1, "threshold": 0.0, "min_effect": 0.05, "ci": (0.06, 0.14), "n": 500}
    base.update(kw)
    return decide(**base)


def test_clear_effect_holds_and_clear_reverse_effect_fails():
    assert _decide()[:2] == ("holds", None)
    assert _decide(ours=-0.1, ci=(-0.14, -0.06))[:2] == ("fails", None)
    # "less" mirrors it: a speed-up claim on latency
    assert _decide(ours=-0.1, ci=(-0.14, -0.06), expect="less")[:2] == ("holds", None)
    assert _decide(expect="less")[:2] == ("fails", None)
    # a null effect measured tightly excludes min_effect: fails (not merely "not holds")
    assert _decide(ours=0.0, ci=(-0.02, 0.02))[:2] == ("fails", None)


def test_threshold_is_strict_and_fails_needs_min_effect_excluded():
    assert _decide(ci=(0.0, 0.08))[:2] == ("inconclusive", "underpowered")  # lower bound equal to threshold
    assert _decide(ci=(-0.01, 0.07))[:2] == ("inconclusive", "underpowered")  # neither side excluded
    assert _decide(ci=(-0.04, 0.049))[:2] == ("fails", None)
    assert _decide(ci=(-0.04, 0.05))[:2] == ("inconclusive", "underpowered")  # upper bound equal to min_effect


def test_underpowered_ci_wider_than_twice_min_effect():
    status, reason, why = _decide(ci=(0.01, 0.2))  # excludes 0, but 0.19 wide > 2 x 0.05
    assert (status, reason) == ("inconclusive", "underpowered") and "CI width" in why
    assert _decide(ci=(0.01, 0.11))[:2] == ("holds", None)  # 0.10 wide: exactly 2 x min_effect is allowed
    assert _decide(ci=None)[:2] == ("inconclusive", "underpowered")
    assert _decide(min_n=600)[:2] == ("inconclusive", "underpowered")
    assert _decide(min_n=500)[:2] == ("holds", None)
    assert _decide(positives=30, negatives=400, min_positives=40)[:2] == ("inconclusive", "underpowered")


def test_trained_arms_need_three_seeds_resampled():
    assert _decide(trained=True, seeds=1)[:2] == ("inconclusive", "underpowered")
    assert _decide(trained=True, seeds=3, resample="items")[:2] == ("inconclusive", "underpowered")
    assert _decide(trained=True, seeds=3, resample="seeds×items")[:2] == ("holds", None)
    assert _decide(trained=True, seeds=2, resample="seeds")[:2] == ("inconclusive", "underpowered")
    assert _decide(trained=False, seeds=1, resample="items")[:2] == ("holds", None)


def test_one_class_and_small_cells_are_degenerate():
    assert _decide(positives=0, negatives=96)[:2] == ("inconclusive", "degenerate")
    status, reason, why = _decide(positives=4, negatives=25)
    assert (status, reason) == ("inconclusive", "degenerate") and "4 positives" in why
    assert _decide(positives=19, negatives=200)[:2] == ("inconclusive", "degenerate")
    assert _decide(positives=20, negatives=20)[:2] == ("holds", None)


def test_floor_ceiling_and_constant_predictor_are_degenerate():
    lv = {"latent": 1.0, "bicubic": 0.97}
    assert _decide(bounds=(0, 1), levels=lv)[:2] == ("inconclusive", "degenerate")
    assert _decide(bounds=(0, 1), levels={"a": 0.0, "b": 0.3})[:2] == ("inconclusive", "degenerate")
    assert _decide(bounds=(0, 1), levels={"a": 0.6, "b": 0.5})[:2] == ("holds", None)
    assert _decide(degenerate="constant predictor: every answer is 'yes'")[:2] == ("inconclusive", "degenerate")
    # a CI of zero width (every paired difference 0, a policy that answers identically) decides nothing
    status, reason, why = _decide(ours=0.0, ci=(0.0, 0.0))
    assert (status, reason) == ("inconclusive", "degenerate") and "zero-width" in why
    assert _decide(ours=0.0, ci=(0.0, 0.0), resample="none")[:2] == ("fails", None)  # exact values are fine
    # without levels the bounds apply to ours itself
    assert _decide(ours=0.0, ci=(0.0, 0.0), bounds=(0, 1))[:2] == ("inconclusive", "degenerate")


def test_failed_control_and_missing_measurement():
    ok = Control("image_shuffle", "shuffled images lower the score", True, -0.2)
    bad = Control("sft_above_chance", "the SFT policy answers above chance", False, 0.5)
    assert _decide(controls=[ok])[:2] == ("holds", None)
    status, reason, why = _decide(controls=[ok, bad])
    assert (status, reason) == ("inconclusive", "control_failed") and "sft_above_chance" in why
    assert _decide(controls=[{"id": "x", "what": "y", "passed": False, "value": None}])[1] == "control_failed"
    assert _decide(ours=None)[:2] == ("inconclusive", "not_run")
    assert _decide(ours=float("nan"))[:2] == ("inconclusive", "not_run")
    assert _decide(ours=None, degenerate="AUROC undefined: one class")[:2] == ("inconclusive", "degenerate")


def test_exact_measurements_use_the_point_value():
    assert _decide(ours=12.0, threshold=10.0, ci=None, resample="none")[:2] == ("holds", None)
    assert _decide(ours=9.0, threshold=10.0, ci=None, resample="none")[:2] == ("fails", None)


def test_decide_rejects_bad_declarations():
    with pytest.raises(ValueError):
        _decide(min_effect=0)
    with pytest.raises(ValueError):
        _decide(expect="bigger")
    with pytest.raises(ValueError):
        _decide(resample="bootstrap")


def test_claim_uses_threshold_over_baseline():
    # ours 0.7 with a CI above the threshold 0.5 but below the baseline 0.9: the threshold decides
    c = claim("c1", "p", "m", 0.7, baseline=0.9, threshold=0.5, ci=(0.66, 0.74), min_effect=0.05, falsifiable_by=FALS)
    assert c.status == "holds" and c.holds and c.threshold == 0.5 and c.baseline == 0.9
    c2 = claim("c2", "p", "auroc", 0.70, baseline=0.72, ci=(0.69, 0.71), min_effect=0.02, falsifiable_by=FALS)
    assert c2.status == "fails" and not c2.holds and c2.threshold == 0.72
    with pytest.raises(ValueError):
        claim("c3", "x", "y", 1.0, min_effect=0.1, falsifiable_by=FALS)
    with pytest.raises(ValueError):
        claim("c4", "x", "y", 1.0, threshold=0.0, min_effect=0.1, falsifiable_by=" ")


def _doc(claims, scale="effect"):
    return benchmark_doc("toy", "python benchmarks/toy.py", claims, {"seconds": 1.5}, scale=scale, seeds=3,
                         wall_s=12.3, device="cpu", commit="abc", dirty=False)  # fmt: skip


def test_results_document_validates_and_recomputes():
    c = claim("acc", "Y beats Z", "delta", 0.1, threshold=0.0, ci=(0.06, 0.14), n=300, min_effect=0.05,
              falsifiable_by=FALS, controls=[Control("shuffle", "w", True, 0.0)])  # fmt: skip
    doc = _doc([c])
    assert validate_benchmark(doc) == [] and doc["claims"][0]["status"] == "holds"
    assert recheck(doc["claims"][0])[:2] == ("holds", None)
    typed = json.loads(json.dumps(doc))
    typed["claims"][0]["ci"] = [-0.01, 0.14]  # numbers changed, status left as typed
    assert any("numbers give inconclusive/underpowered" in e for e in validate_benchmark(typed))
    typed = json.loads(json.dumps(doc))
    typed["claims"][0]["holds"] = False
    assert any("holds must equal" in e for e in validate_benchmark(typed))
    for key, bad in (("scale", "toy"), ("seeds", 0), ("schema", "medfm.claims/1")):
        wrong = {**doc, key: bad}
        assert validate_benchmark(wrong), key
    assert validate_benchmark({k: v for k, v in doc.items() if k != "dirty"})


def test_one_primary_claim_per_paper_statement():
    a = claim("a", "P", "m", 0.1, threshold=0.0, ci=(0.06, 0.14), min_effect=0.05, falsifiable_by=FALS)
    b = claim("b", "P", "m2", 0.1, threshold=0.0, ci=(0.06, 0.14), min_effect=0.05, falsifiable_by=FALS)
    with pytest.raises(ValueError, match="primary"):
        _doc([a, b])
    b.primary = False
    assert validate_benchmark(_doc([a, b])) == []


def test_readme_table_shows_status_and_leaves_out_smoke(tmp_path):
    results = tmp_path / "results"
    good = claim("speed", "X is faster", "speedup |a / b|", 3.0, threshold=1.0, resample="none", min_effect=0.1,
                 falsifiable_by=FALS)  # fmt: skip
    under = claim("acc", "Y beats Z", "delta", 0.1, threshold=0.0, ci=(0.01, 0.3), min_effect=0.05, seeds=3,
                  resample="seeds", trained=True, falsifiable_by=FALS)  # fmt: skip
    second = claim("speed2", "X is faster", "speedup, other input", 2.0, threshold=1.0, resample="none", min_effect=0.1,
                   primary=False, falsifiable_by=FALS)  # fmt: skip
    write_benchmark(results / "toy.json", "toy", "python benchmarks/toy.py", [good, under, second], {}, scale="effect",
                    seeds=3, wall_s=1.0, device="cpu")  # fmt: skip
    write_benchmark(results / "tiny.json", "tiny", "python benchmarks/tiny.py --quick", [good], {}, scale="smoke",
                    seeds=1, wall_s=1.0, device="cpu")  # fmt: skip
    table = results_table(results)
    assert "| toy | speed: speedup \\|a / b\\| | X is faster |" in table
    assert "| [0.01, 0.3] |" in table and "speed2 (secondary): speedup" in table and "speed: speedup" in table
    assert "| holds |" in table and "inconclusive: underpowered" in table and "| seeds | n | status |" in table
    assert "| tiny |" not in table and "tiny (1 claims)" in table and "python benchmarks/toy.py" in table
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


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_committed_results_files_validate(path):
    doc = json.loads(path.read_text())
    assert validate_benchmark(doc) == []
    for c in doc["claims"]:
        assert c["min_effect"] > 0 and c["falsifiable_by"] and c["resample"] and c["seeds"] >= 1
        assert isinstance(c["controls"], list) and "n" in c


def test_readme_table_is_generated_from_the_committed_files():
    readme = (RESULTS.parents[1] / "README.md").read_text()
    assert results_table(RESULTS).strip() in readme


def test_decision_boundaries():
    # "less" mirrors "greater" exactly at its bounds
    assert _decide(ours=-0.05, ci=(-0.09, 0.0), expect="less")[:2] == ("inconclusive", "underpowered")
    assert _decide(ours=0.0, ci=(-0.02, 0.02), expect="less")[:2] == ("fails", None)
    assert _decide(ours=-0.03, ci=(-0.05, -0.01), expect="less")[:2] == ("holds", None)
    assert _decide(ours=-0.01, ci=(-0.05, 0.03), expect="less")[:2] == ("inconclusive", "underpowered")
    # CI width between 2 and 3 x min_effect is underpowered, and the reason says by how much
    status, reason, why = _decide(ci=(0.01, 0.13))
    assert (status, reason) == ("inconclusive", "underpowered") and why == "CI width 0.12 > 2 x min_effect (0.1)"
    # class counts: one side given is enough to judge, and the reason names both counts
    status, reason, why = _decide(positives=30)
    assert (status, reason, why) == ("inconclusive", "degenerate", "30 positives / 0 negatives (< 20 of a class)")
    assert _decide(negatives=30)[2] == "0 positives / 30 negatives (< 20 of a class)"
    assert _decide(min_positives=25)[:2] == ("inconclusive", "underpowered")  # positives unknown
    assert _decide(min_positives=25, positives=25, negatives=100)[:2] == ("holds", None)


def test_floor_and_ceiling_tolerance_scales_with_the_metric_range():
    pct = (50.0, 100.0)  # a metric in percent on [50, 100]: tolerance 1e-9 x 50
    assert _decide(bounds=pct, levels={"a": 100 - 3e-8})[2] == "a = 100 is at the metric's ceiling"
    assert _decide(bounds=pct, levels={"a": 100 - 1e-7})[:2] == ("holds", None)
    assert _decide(bounds=pct, levels={"a": 50.0})[2] == "a = 50 is at the metric's floor"
    assert _decide(bounds=pct, levels={"a": 75.0})[:2] == ("holds", None)


def test_results_document_facts_and_malformed_documents(tmp_path):
    c = claim("acc", "Y beats Z", "delta", 0.1, threshold=0.0, ci=(0.06, 0.14), n=300, min_effect=0.05,
              falsifiable_by=FALS)  # fmt: skip
    doc = benchmark_doc("toy", "cmd", [c], {}, scale="effect", seeds=1, wall_s=12.345, device="cpu")
    assert doc["wall_s"] == 12.3 and (doc["commit"], doc["dirty"]) == git_state()  # the checkout medfm runs from
    assert git_state(tmp_path) == (None, False)
    assert any("non-empty" in e for e in validate_benchmark({**doc, "claims": []}))
    bad_seeds = json.loads(json.dumps(doc))
    bad_seeds["claims"][0]["seeds"] = "3"
    assert any("seeds must be a positive integer" in e for e in validate_benchmark(bad_seeds))
    bad_seeds["claims"][0]["seeds"] = 0
    assert any("seeds must be a positive integer" in e for e in validate_benchmark(bad_seeds))
    bad_ctl = json.loads(json.dumps(doc))
    bad_ctl["claims"][0]["controls"] = [{"id": "x", "what": "y", "passed": True}]
    assert any("control" in e for e in validate_benchmark(bad_ctl))
    bad_ctl["claims"][0]["controls"] = [{"id": "x", "what": "y", "passed": "yes", "value": None}]
    assert any("control" in e for e in validate_benchmark(bad_ctl))


def test_table_numbers_are_for_people():
    assert _num(None) == "—" and _num(0.123456) == "0.123" and _num(999.7) == "1,000" and _num(1234.5) == "1,234"
    assert _num(999.4) == "999" and _num(-1500.0) == "-1,500" and _num(7) == "7"


def test_messages_name_what_the_verdict_rests_on_and_given_commits_are_kept():
    assert _decide()[2] == "CI lower bound 0.06 > 0"
    assert _decide(ours=-0.1, ci=(-0.14, -0.06))[2].startswith("CI upper bound -0.06 <")
    assert _decide(resample="none", ci=None)[2] == "value 0.1 > 0"
    c = claim("acc", "Y beats Z", "delta", 0.1, threshold=0.0, ci=(0.06, 0.14), n=300, min_effect=0.05,
              falsifiable_by=FALS)  # fmt: skip
    doc = benchmark_doc("toy", "cmd", [c], {}, scale="effect", seeds=1, wall_s=1.0, device="cpu", commit="a" * 40,
                        dirty=True)  # fmt: skip
    assert (doc["commit"], doc["dirty"]) == ("a" * 40, True)
    assert _num(999.5) == "1,000" and _num(999.4) == "999"


def test_rewritten_results_do_not_make_the_checkout_dirty(tmp_path):
    """A benchmark rerun rewrites its own results file and the README table: neither is code, so the new file
    must not be flagged dirty for it; a changed source file still is."""
    import subprocess

    def git(*a):
        subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "src").mkdir()
    for f in ("benchmarks/results/m.json", "README.md", "src/code.py"):
        (tmp_path / f).write_text("0\n")
    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    (tmp_path / "benchmarks/results/m.json").write_text("1\n")
    (tmp_path / "README.md").write_text("1\n")
    assert git_state(tmp_path / "src")[1] is False
    (tmp_path / "src/code.py").write_text("1\n")
    assert git_state(tmp_path / "src")[1] is True
