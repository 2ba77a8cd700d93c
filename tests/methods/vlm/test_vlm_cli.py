"""End-to-end through the real CLI on the tiny preset: phantoms -> prepare -> train (+ resume) -> generate ->
evaluate -> card validate; and the image pathway's effect on data with known ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medfm.cli import main


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    out = tmp_path_factory.mktemp("cxr")
    assert main(["phantom", "cxr", "--n", "16", "--size", "32", "--output_dir", str(out)]) == 0
    return out


def test_cli_every_verb_on_the_tiny_preset(phantoms, tmp_path):
    manifest = str(phantoms / "manifest.csv")
    assert main(["vlm", "prepare", "--reports", manifest, "--output_dir", str(tmp_path / "prep")]) == 0
    vqa = tmp_path / "prep" / "vqa.csv"
    assert vqa.read_text().startswith("id,image,question,answer,finding,split")
    run = tmp_path / "train"
    common = ["--config", "preset:tiny", "--data.reports", manifest, "--data.vqa", str(vqa), "--output_dir", str(run)]
    assert main(["vlm", "train", *common, "--dry_run", "true"]) == 0
    assert not (run / "checkpoints").exists()
    assert main(["vlm", "train", *common, "--train.steps", "2"]) == 0
    assert json.loads((run / "checkpoints" / "last" / "trainer_state.json").read_text())["step"] == 2
    assert main(["vlm", "train", *common, "--train.steps", "3"]) == 0  # same run dir: resumes at step 2
    res = json.loads((run / "results.json").read_text())
    assert res["meta"]["resumed_from"] == 2 and res["metrics"]["train_samples_per_s"]["value"] > 0
    final = run / "checkpoints" / "final"
    assert main(["card", "validate", str(final)]) == 0
    card = json.loads((final / "card.json").read_text())
    assert card["data"]["modalities"] == ["CXR", "text"] and card["training"]["steps"] == 3
    assert main(["vlm", "generate", "--model", str(final), "--data.reports", manifest, "--data.split", "all",
                 "--limit", "2", "--generation.max_new_tokens", "4", "--output_dir", str(tmp_path / "gen")]) == 0  # fmt: skip
    rows = [json.loads(x) for x in (tmp_path / "gen" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["tokens"] <= 4 for r in rows)
    assert main(["vlm", "evaluate", "--model", str(final), "--data.reports", manifest, "--data.vqa", str(vqa),
                 "--data.split", "all", "--limit", "3", "--generation.max_new_tokens", "4", "--bootstrap", "50",
                 "--output_dir", str(tmp_path / "ev")]) == 0  # fmt: skip
    ev = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert ev["metrics"]["finding_f1_reference_ceiling"]["value"] == pytest.approx(1.0)  # extractor vs phantom labels
    assert 0.0 <= ev["metrics"]["vqa_accuracy"]["value"] <= 1.0 and (tmp_path / "ev" / "report.html").is_file()


def test_cli_errors_are_one_line(phantoms, tmp_path, capsys):
    assert main(["vlm", "train", "--config", "preset:tiny", "--output_dir", str(tmp_path / "x")]) == 2  # no data
    assert main(["vlm", "evaluate", "--model", str(tmp_path / "missing"), "--data.reports",
                 str(phantoms / "manifest.csv"), "--output_dir", str(tmp_path / "y")]) == 3  # fmt: skip
    assert "does not exist" in capsys.readouterr().err


def test_image_pathway_learns_a_visual_answer_the_text_only_model_cannot():
    """Known ground truth: the answer is 'yes' exactly when the image is bright (random 50/50). After a few SFT
    steps the VLM is right on held-out images, while the same model shown a grey image can only guess."""
    from medfm.methods.vlm.config import LMSpec, TrainOptions, VisionSpec, VLMSpec
    from medfm.methods.vlm.data import Example
    from medfm.methods.vlm.infer import answer_logprobs
    from medfm.methods.vlm.train import make_model, train_sft

    rng = np.random.default_rng(0)

    def make(n: int, off: int) -> list[Example]:
        out = []
        for i in range(n):
            yes = bool(rng.random() < 0.5)
            img = np.full((16, 16), 0.9 if yes else 0.1, np.float32) + rng.normal(0, 0.05, (16, 16)).astype(np.float32)
            out.append(Example(str(off + i), [img], "Is there a mass?", "yes" if yes else "no", "vqa"))
        return out

    train, test = make(128, 0), make(40, 1000)
    spec = VLMSpec(
        vision=VisionSpec(image_size=16, patch_size=8, hidden_size=32, intermediate_size=64, num_layers=1,
                          num_heads=2),
        lm=LMSpec(source="tiny", tiny_hidden=256, tiny_layers=1), system_prompt="", max_length=64,
    )  # fmt: skip
    model, proc = make_model(spec, seed=0)
    opts = TrainOptions(steps=16, batch_size=8, lr=1e-2, lm_lr=1e-2, warmup_steps=2, lm_mode="full")
    model = train_sft(model, proc, train, opts, spec, seed=0)["model"]
    truth = np.array([e.answer for e in test])
    lp = answer_logprobs(model, proc, test, ["yes", "no"], spec)
    acc = float(np.mean(np.where(lp[:, 0] > lp[:, 1], "yes", "no") == truth))
    lp_blind = answer_logprobs(model, proc, test, ["yes", "no"], spec, blind=True)
    blind = np.where(lp_blind[:, 0] > lp_blind[:, 1], "yes", "no")
    assert acc >= 0.9
    assert len(set(blind)) == 1  # without the image the answer cannot depend on it: one constant guess
