"""End-to-end smoke runs of every ``medfm ravl`` verb through the real CLI, resume, card, bad input."""

from __future__ import annotations

import json

from medfm.cli import main

EVAL = ["--config", "preset:tiny", "--device", "cpu", "--data.phantom_n", "160"]
FT = [*EVAL, "--config", "preset:tiny_mitigate", "--data.cramers_v", "0.95", "--data.phantom_seed", "0",
      "--mitigation.batch_size", "16"]  # fmt: skip


def test_cli_discover_mitigate_evaluate_report(audited, tmp_path):
    model = str(audited["model_dir"])
    disc = tmp_path / "disc"
    assert main(["ravl", "discover", *EVAL, "--model", model, "--output_dir", str(disc), "--dry_run", "true"]) == 0
    assert not (disc / "results.json").exists()
    assert main(["ravl", "discover", *EVAL, "--model", model, "--output_dir", str(disc)]) == 0
    res = json.loads((disc / "results.json").read_text())
    assert res["metrics"]["regions"]["value"] == 4 * res["metrics"]["images"]["value"]
    assert "precision_at_10" in res["metrics"] and (disc / "discovery.npz").is_file()
    meta = json.loads((disc / "discovery.json").read_text())
    assert meta["ranked_clusters"], meta["message"]
    assert (disc / "plots" / "top_cluster_regions.png").is_file() and "top_regions" in res["tables"]
    assert "Top cluster regions" in (disc / "report.html").read_text()

    mit = tmp_path / "mit"
    args = ["ravl", "mitigate", *FT, "--model", model, "--discovery_run", str(disc), "--output_dir", str(mit),
            "--mitigation.save_every", "2"]  # fmt: skip
    assert main([*args, "--mitigation.steps", "3"]) == 0
    assert (mit / "checkpoints" / "last" / "trainer_state.json").is_file()
    assert main([*args, "--mitigation.steps", "4"]) == 0  # same output_dir: resumes from the step-3 checkpoint
    assert "at step 3" in (mit / "log.txt").read_text()
    steps = [json.loads(r)["step"] for r in (mit / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 4
    mres = json.loads((mit / "results.json").read_text())
    assert mres["metrics"]["steps"]["value"] == 4 and mres["metrics"]["spurious_regions"]["value"] > 0
    assert "final_loss_spur" in mres["metrics"]
    final = mit / "checkpoints" / "final"
    assert main(["card", "validate", str(final)]) == 0

    ev = tmp_path / "ev"
    assert main(["ravl", "evaluate", *EVAL, "--model", str(final), "--output_dir", str(ev), "--bootstrap", "30"]) == 0
    eres = json.loads((ev / "results.json").read_text())
    wg = eres["metrics"]["image_worst_group_accuracy"]
    assert wg["value"] <= eres["metrics"]["image_accuracy"]["value"] and wg["ci"] is not None
    assert "pleural effusion|feature=1" in eres["groups"] and "region_accuracy" in eres["metrics"]
    assert main(["ravl", "report", str(ev)]) == 0


def test_cli_baselines_and_bad_input(audited, tmp_path):
    for method in ("gdro", "standard"):
        out = tmp_path / method
        extra = [] if method == "standard" else ["--discovery_run", str(tmp_path / "none")]
        code = main(["ravl", "mitigate", *FT, "--mitigation.init", "scratch", "--mitigation.method", method,
                     "--mitigation.steps", "2", "--output_dir", str(out), *extra])  # fmt: skip
        assert code == (3 if method == "gdro" else 0)  # gdro: the discovery run does not exist -> data error
    assert main(["ravl", "mitigate", *FT, "--mitigation.method", "ravl", "--mitigation.init", "scratch"]) == 2
    assert main(["ravl", "discover", *EVAL, "--model", str(tmp_path / "missing")]) == 3
    # fewer regions than clusters: 1 image x 1 region -> a one-line data error, not a crash
    assert main(["ravl", "discover", *EVAL, "--model", str(audited["model_dir"]), "--limit", "1",
                 "--regions.grid", "1", "--output_dir", str(tmp_path / "few")]) == 3  # fmt: skip
