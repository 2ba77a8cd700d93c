"""End-to-end smoke runs of every `medfm mass` verb through the real CLI on a very small configuration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medfm.cli import main

SMALL = ["--data.phantom_shape", "24,24,24", "--data.phantom_spacing", "14,14,14", "--data.min_size", "16"]
NET = ["--model.channels", "4,8,16", "--model.pos_size", "16"]


def _with(prefix: str) -> list[str]:
    return [a.replace("--data.", f"--{prefix}.") for a in SMALL]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mass")
    assert main(["mass", "prepare", "--config", "preset:tiny", "--data.phantom_n", "3", *SMALL,
                 "--output_dir", str(root / "prep")]) == 0  # fmt: skip
    args = ["mass", "pretrain", "--config", "preset:tiny", "--masks", str(root / "prep"), *NET, "--task.crop", "16",
            "--task.crop_margin", "4", "--task.num_masks", "3", "--train.steps", "3", "--train.checkpoint_every", "2",
            "--output_dir", str(root / "pre")]  # fmt: skip
    assert main(args) == 0
    return root, args


def test_prepare_writes_compact_masks_with_quality(runs):
    root, _ = runs
    index = json.loads((root / "prep" / "index.json").read_text())
    assert len(index["volumes"]) == 3 and all(v["n_masks"] > 10 for v in index["volumes"])
    z = np.load(root / "prep" / index["volumes"][0]["file"])
    assert z["masks_indptr"].shape[0] == index["volumes"][0]["n_masks"] + 1
    res = json.loads((root / "prep" / "results.json").read_text())
    assert 0 < res["metrics"]["proposal_best_dice"]["value"] <= 1
    assert (root / "prep" / "report.html").is_file()


def test_pretrain_card_validates_and_resume(runs, capsys):
    root, args = runs
    final = root / "pre" / "checkpoints" / "final"
    assert main(["card", "validate", str(final)]) == 0
    card = json.loads((final / "card.json").read_text())
    assert card["training"]["paradigm"] == ["self-supervised-mask-guided"]
    assert card["data"]["annotation"] == "automatic" and card["training"]["steps"] == 3
    ck = root / "pre" / "checkpoints"
    assert json.loads((ck / "last" / "trainer_state.json").read_text())["step"] == 3  # the end of the run
    assert json.loads((ck / "previous" / "trainer_state.json").read_text())["step"] == 2  # checkpoint_every 2
    # as if killed after the step-2 checkpoint: rerunning resumes from step 2 and runs only step 3
    import shutil

    shutil.rmtree(ck / "last")
    (ck / "previous").rename(ck / "last")
    assert main(args) == 0
    steps = [json.loads(line)["step"] for line in (root / "pre" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 3  # the steps logged after step 2 are not doubled
    log_lines = (root / "pre" / "log.txt").read_text().splitlines()
    assert any("resumed from" in line and line.endswith("at step 2") for line in log_lines)
    res = json.loads((root / "pre" / "results.json").read_text())
    assert res["metrics"]["steps_per_second"]["n"] == 1  # the rate counts only the step this invocation ran


def test_downstream_verbs(runs):
    root, _ = runs
    ckpt = str(root / "pre" / "checkpoints" / "final")
    common = ["--config", "preset:tiny", "--crop", "16", "--checkpoint", ckpt]
    assert main(["mass", "segment", *common, *SMALL, *_with("reference"), "--reference.phantom_first", "5",
                 "--reference.phantom_n", "1", "--data.phantom_first", "6", "--data.phantom_n", "2",
                 "--eval.structures", "liver,spleen", "--output_dir", str(root / "seg")]) == 0  # fmt: skip
    res = json.loads((root / "seg" / "results.json").read_text())
    assert 0 <= res["metrics"]["dice"]["value"] <= 1 and (root / "seg" / "plots" / "overlay.png").is_file()
    assert main(["mass", "finetune", *common, *SMALL, *_with("test"), "--data.phantom_first", "5",
                 "--data.phantom_n", "2", "--label_fraction", "0.5", "--test.phantom_first", "7",
                 "--test.phantom_n", "1", "--steps", "2", "--eval.structures", "liver",
                 "--output_dir", str(root / "ft")]) == 0  # fmt: skip
    assert main(["card", "validate", str(root / "ft" / "checkpoints" / "final")]) == 0
    from medfm.core.hub import from_pretrained
    from medfm.methods.mass.incontext import PromptedIris

    tuned = from_pretrained(root / "ft" / "checkpoints" / "final")  # the saved fine-tuned model loads back whole
    assert isinstance(tuned, PromptedIris) and list(tuned.structures) == ["liver"]
    assert [p.shape[0] for p in tuned.prompts] == [1, 1]
    assert main(["mass", "probe", *common, *SMALL, *_with("test"), "--data.phantom_first", "0",
                 "--data.phantom_n", "6", "--test.phantom_first", "6", "--test.phantom_n", "6",
                 "--target", "metadata:tumour", "--steps", "5", "--output_dir", str(root / "probe")]) == 0  # fmt: skip
    assert "auroc" in json.loads((root / "probe" / "results.json").read_text())["metrics"]
    ft_common = [*common[:-1], str(root / "ft" / "checkpoints" / "final")]  # a fine-tuned checkpoint works too
    assert main(["mass", "probe", *ft_common, *SMALL, *_with("test"), "--data.phantom_first", "0",
                 "--data.phantom_n", "4", "--test.phantom_first", "6", "--test.phantom_n", "4",
                 "--target", "metadata:tumour", "--steps", "2", "--output_dir", str(root / "probe_ft")]) == 0  # fmt: skip
    assert main(["mass", "report", str(root / "seg")]) == 0


def test_dry_run_and_bad_inputs(tmp_path, capsys):
    assert main(["mass", "prepare", "--dry_run", "--output_dir", str(tmp_path / "d")]) == 0
    assert "dry run" in capsys.readouterr().out
    # mismatched image/label geometry in a user datalist -> data error (exit 3)
    from medfm.data.io import save_nifti

    save_nifti(tmp_path / "img.nii.gz", np.zeros((20, 20, 20), np.int16), (2.0, 2.0, 2.0))
    save_nifti(tmp_path / "lab.nii.gz", np.zeros((20, 20, 10), np.uint8), (2.0, 2.0, 4.0))
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [{"image": "img.nii.gz", "label": "lab.nii.gz"}]}))
    assert main(["mass", "prepare", "--data.datalist", str(tmp_path / "dataset.json"),
                 "--output_dir", str(tmp_path / "p")]) == 3  # fmt: skip
    assert "does not match" in capsys.readouterr().err
    # pretraining from a folder that was never prepared -> data error
    assert main(["mass", "pretrain", "--masks", str(tmp_path / "nothing"), "--output_dir", str(tmp_path / "x")]) == 3


def test_small_anisotropic_volume_is_resampled_and_padded(tmp_path):
    from medfm.data.io import save_nifti
    from medfm.methods.mass.config import DataOptions
    from medfm.methods.mass.data import load_cases

    img = np.random.default_rng(0).normal(0, 100, (12, 12, 6)).astype(np.int16)
    lab = np.zeros((12, 12, 6), np.uint8)
    lab[3:8, 3:8, 2:4] = 1
    save_nifti(tmp_path / "i.nii.gz", img, (2.0, 2.0, 4.0))
    save_nifti(tmp_path / "l.nii.gz", lab, (2.0, 2.0, 4.0))
    (tmp_path / "d.json").write_text(
        json.dumps({"labels": {"0": "bg", "1": "organ"}, "training": [{"image": "i.nii.gz", "label": "l.nii.gz"}]})
    )
    case = load_cases(DataOptions(datalist=str(tmp_path / "d.json"), spacing=[2.0], min_size=16))[0]
    assert case.spacing == (2.0, 2.0, 2.0)
    assert min(case.image.shape) >= 16 and case.label.shape == case.image.shape
    assert case.labels[1] == "organ" and (case.label == 1).sum() > 0
