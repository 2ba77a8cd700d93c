"""End-to-end smoke runs of every ``medfm chexficient`` verb on the tiny preset, resume exactness, bad input."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from medfm.cli import main

TINY = ["--config", "preset:tiny", "--device", "cpu", "--data.phantom_n", "260", "--train.batch_size", "48",
        "--train.micro_batch_size", "48", "--train.epochs", "2", "--eval.bootstrap", "20", "--eval.probe_max_train",
        "120", "--train.save_every", "2", "--curator.warmup_batches", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cx") / "run"
    assert main(["chexficient", "train", *TINY, "--output_dir", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    from medfm.data.phantoms.config import CXRPhantomConfig
    from medfm.data.phantoms.cxr import write_cxr_dataset

    out = tmp_path_factory.mktemp("cxm")
    cfg = CXRPhantomConfig(n=90, size=32, seed=3)
    write_cxr_dataset(cfg, out)
    return out / "manifest.csv"


def test_train_outputs_card_and_results(trained):
    res = json.loads((trained / "results.json").read_text())
    m = res["metrics"]
    assert 0.05 < m["kept_fraction"]["value"] < 0.8
    assert "zero_shot_macro_auroc" in m and "i2t_recall@10" in m and "linear_probe_macro_auroc" in m
    assert res["tables"]["kept_fraction_per_finding"]
    assert (trained / "report.html").is_file() and (trained / "curated_subset.csv").is_file()
    final = trained / "checkpoints" / "final"
    assert main(["card", "validate", str(final)]) == 0
    from medfm.methods.chexficient import CheXficientModel

    model = CheXficientModel.from_pretrained(final)
    assert float(model.prototypes.norm(dim=1).min()) == pytest.approx(1.0, abs=1e-4)  # prototypes travel along


def test_resume_restores_prototypes_and_kept_set_exactly(tmp_path):
    args = [*TINY, "--evaluate_after", "false", "--data.phantom_n", "200", "--train.epochs", "2"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["chexficient", "train", *args, "--output_dir", str(a)]) == 0
    assert main(["chexficient", "train", *args, "--output_dir", str(b), "--train.stop_after_steps", "3"]) == 0
    assert not (b / "checkpoints" / "final").exists()
    assert main(["chexficient", "train", *args, "--output_dir", str(b)]) == 0
    from safetensors.torch import load_file

    sa, sb = (json.loads((d / "checkpoints" / "last" / "trainer_state.json").read_text())["state"] for d in (a, b))
    assert sa["curator"]["kept_ids"] == sb["curator"]["kept_ids"]
    ta, tb = (load_file(str(d / "checkpoints" / "last" / "trainer_tensors.safetensors")) for d in (a, b))
    assert torch.equal(ta["curator.prototypes"], tb["curator.prototypes"])
    assert sa["trainer"]["step"] == sb["trainer"]["step"]
    assert (a / "curated_subset.csv").read_text() == (b / "curated_subset.csv").read_text()


def test_evaluate_embed_curate_report(trained, manifest, tmp_path):
    final = str(trained / "checkpoints" / "final")
    ev = tmp_path / "ev"
    assert main(["chexficient", "evaluate", "--model_dir", final, "--data.manifest", str(manifest), "--eval.split",
                 "train", "--eval.bootstrap", "20", "--eval.linear_probe", "false", "--output_dir", str(ev)]) == 0  # fmt: skip
    r = json.loads((ev / "results.json").read_text())
    assert r["metrics"]["i2t_recall@1"]["ci"] is not None
    em = tmp_path / "em"
    assert main(["chexficient", "embed", "--model_dir", final, "--data.manifest", str(manifest), "--output_dir",
                 str(em)]) == 0  # fmt: skip
    import numpy as np

    z = np.load(em / "embeddings.npz")
    assert z["image"].shape == z["text"].shape and z["image"].shape[0] == 90
    cu = tmp_path / "cu"
    assert main(["chexficient", "curate", "--model_dir", final, "--data.manifest", str(manifest), "--split", "none",
                 "--batch_size", "30", "--curator.warmup_batches", "1", "--curator.num_prototypes", "2",
                 "--curator.max_per_cluster", "3", "--output_dir", str(cu)]) == 0  # fmt: skip
    kept = (cu / "kept.csv").read_text().splitlines()[1:]
    assert 0 < len(kept) < 90
    rows = list(csv.DictReader((cu / "curated_manifest.csv").read_text().splitlines()))
    assert {r["id"] for r in rows} == set(kept)
    assert main(["chexficient", "report", str(cu)]) == 0


def test_dry_run_and_bad_manifests(tmp_path, manifest, capsys):
    assert main(["chexficient", "train", *TINY, "--dry_run", "true", "--output_dir", str(tmp_path / "d")]) == 0
    assert "expected keep fraction" in capsys.readouterr().out
    rows = list(csv.DictReader(manifest.read_text().splitlines()))
    fields = list(rows[0].keys())

    def write(name, rs):
        p = manifest.parent / name
        with open(p, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rs)
        return p

    dup = write("dup.csv", [rows[0], rows[1], {**rows[2], "id": rows[0]["id"]}])
    missing = write("missing.csv", [rows[0], {**rows[1], "image": "images/nope.png"}])
    empty = write("empty.csv", [rows[0], {**rows[1], "report": ""}])
    base = ["chexficient", "curate", "--device", "cpu", "--output_dir", str(tmp_path / "x"), "--split", "none",
            "--model.text_tower", "{kind: bag, width: 8}", "--model.image_tower",
            "{kind: vit, image_size: 32, patch_size: 16, width: 16, layers: 1, head_width: 16}"]  # fmt: skip
    assert main([*base, "--data.manifest", str(dup)]) == 3
    assert "duplicate id" in capsys.readouterr().err
    assert main([*base, "--data.manifest", str(missing)]) == 3
    assert "does not exist" in capsys.readouterr().err
    assert main([*base, "--data.manifest", str(empty), "--data.drop_empty_reports", "false"]) == 3
    assert "empty report" in capsys.readouterr().err


def test_help_is_torch_free_and_presets_resolve():
    import subprocess
    import sys

    code = ("import sys; import medfm.methods.chexficient, medfm.methods.chexficient.cli, "
            "medfm.methods.chexficient.config; print('torch' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    from medfm.core.config import resolve
    from medfm.methods.chexficient.config import TrainConfig

    cfg = resolve(TrainConfig, ["preset:paper", "preset:paper_train"], {}, package="medfm.methods.chexficient")
    assert cfg.train.batch_size == 480 and cfg.curator.max_per_cluster == 10 and cfg.model.init_temperature == 0.01
    assert cfg.model.text_tower["pooling"] == "eos"


def test_random_static_runs_the_curated_step_budget_and_full_sees_everything():
    from medfm.core.config import resolve
    from medfm.methods.chexficient.config import TrainConfig
    from medfm.methods.chexficient.data import phantom_pairs
    from medfm.methods.chexficient.engine import Trainer, cosine_lr

    pairs = phantom_pairs(100, 1, 32, 32)
    over = {"train.batch_size": "32", "train.micro_batch_size": "32", "train.epochs": "2", "train.save_every": "0"}
    steps = {}
    for arm in ("random_static", "full"):
        cfg = resolve(TrainConfig, ["preset:tiny"], {**over, "train.arm": arm}, package="medfm.methods.chexficient")
        tr = Trainer(cfg, pairs)
        assert tr.fit() == "done"
        steps[arm] = (tr.state.step, tr.planned_steps(), len(tr.pool))
    n = steps["full"][2]
    assert steps["full"][0] == 2 * -(-n // 32)
    assert steps["random_static"][0] == steps["random_static"][1]  # same optimiser steps as the curated plan
    assert cosine_lr(0, 10, 1.0, 0.1) == 1.0 and abs(cosine_lr(10, 10, 1.0, 0.1) - 0.1) < 1e-12


def test_validation_early_stopping_keeps_the_best_epoch(tmp_path):
    """Validation zero-shot AUROC every epoch; with learning rate ~0 nothing improves, so training stops after
    `patience` validations and the model holds the best (first) epoch's weights (issue 22: a converged base)."""
    from safetensors.torch import load_file

    from medfm.core.config import resolve
    from medfm.methods.chexficient.config import TrainConfig
    from medfm.methods.chexficient.data import phantom_pairs
    from medfm.methods.chexficient.engine import Trainer

    pairs = phantom_pairs(160, 1, 32, 32)
    assert len(pairs.split_index("val")) > 0
    over = {"train.batch_size": "32", "train.micro_batch_size": "32", "train.epochs": "8", "train.save_every": "0",
            "train.arm": "full", "train.val_every": "1", "train.patience": "2", "train.lr": "1e-12",
            "train.min_lr": "0"}  # fmt: skip
    cfg = resolve(TrainConfig, ["preset:tiny"], over, package="medfm.methods.chexficient")
    tr = Trainer(cfg, pairs, tmp_path)
    assert tr.fit() == "done"
    st = tr.state
    assert st.stopped_early and [r["epoch"] for r in st.val_curve] == [1, 2, 3]
    assert st.best_step == st.val_curve[0]["step"] and st.bad_validations == 2
    best = load_file(str(tmp_path / "checkpoints" / "best" / "model.safetensors"))
    assert all(torch.equal(best[k], v.cpu()) for k, v in tr.raw.state_dict().items())
    again = Trainer(cfg, pairs, tmp_path)  # a rerun resumes the finished run: no further step
    assert again.fit() == "done" and again.state.step == st.step and again.state.stopped_early
