"""Every training verb under real 2-process data parallelism on CPU (torchrun, gloo), on its tiny preset.

Each test launches ``torchrun --nproc_per_node 2 -m medfm.cli <method> <verb> ...`` and checks: the launch
completes, one writer (rank 0) wrote every output exactly once, the checkpoint records 2 processes, and, where the
verb promises it, the result equals one process's (the curator's kept set, RaVL's loss). ``accelerate launch --cpu
--num_processes 2`` is not used: on a machine without GPUs it silently starts a single process.

Marked ``distributed``: ``pytest -m "not distributed"`` skips them on a machine where processes cannot talk.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from medfm.cli import main

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(600)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun(args: list[str], nproc: int = 2, timeout: int = 400) -> str:
    """Run ``medfm <args>`` on ``nproc`` processes; returns the combined output (fails the test on a non-zero exit)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "medfm.cli", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"torchrun {' '.join(args[:2])} failed ({r.returncode}):\n{out[-4000:]}"
    return out


def assert_one_writer(run: Path, world: int = 2, medfm_loop: bool = True) -> None:
    """Outputs written once by rank 0: results, no stray temporary files, metrics without repeated steps, the
    process layout in env.json and (for medfm's own loops; CheXalign runs TRL's) in the checkpoint."""
    assert (run / "results.json").is_file()
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp") or "rank-scratch" in p.name]
    if (run / "metrics.jsonl").is_file():
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert steps == sorted(set(steps)), steps
    dist = json.loads((run / "env.json").read_text())["distributed"]
    assert dist["world_size"] == world and dist["distributed_type"] == "MULTI_CPU" and dist["rank"] == 0
    if medfm_loop:
        assert json.loads((run / "checkpoints" / "last" / "trainer_state.json").read_text())["world_size"] == world


def test_medvae_train_both_stages(tmp_path):
    s1 = tmp_path / "s1"
    out = torchrun(["medvae", "train", "--config", "preset:tiny", "--device", "cpu", "--optim.steps", "4",
                    "--output_dir", str(s1)])  # fmt: skip
    assert out.count("saved model to") == 1  # one process tells, one writes
    assert_one_writer(s1)
    s2 = tmp_path / "s2"
    torchrun(["medvae", "train", "--config", "preset:tiny", "--device", "cpu", "--stage", "2", "--optim.steps", "2",
              "--model.init", str(s1 / "checkpoints" / "final"), "--output_dir", str(s2)])  # fmt: skip
    assert_one_writer(s2)


def test_vlm_train(tmp_path):
    assert main(["phantom", "cxr", "--n", "16", "--size", "32", "--output_dir", str(tmp_path / "cxr")]) == 0
    run = tmp_path / "vlm"
    torchrun(["vlm", "train", "--config", "preset:tiny", "--data.reports", str(tmp_path / "cxr" / "manifest.csv"),
              "--data.split", "all", "--train.steps", "3", "--output_dir", str(run)])  # fmt: skip
    assert_one_writer(run)
    assert (run / "checkpoints" / "final").is_dir()


def test_srrg_train(tmp_path):
    assert (
        main(["srrg", "prepare", "--sources", "phantom", "--phantom_n", "20", "--output_dir", str(tmp_path / "p")]) == 0
    )
    run = tmp_path / "tr"
    torchrun(["srrg", "train", "--config", "preset:tiny", "--data", str(tmp_path / "p" / "sentences.jsonl"),
              "--limit", "20", "--device", "cpu", "--output_dir", str(run)])  # fmt: skip
    assert_one_writer(run)
    assert (run / "checkpoints" / "final" / "srrg.json").is_file()


SMALL = ["--data.phantom_shape", "24,24,24", "--data.phantom_spacing", "14,14,14", "--data.min_size", "16"]


def test_mass_pretrain_and_finetune(tmp_path):
    assert main(["mass", "prepare", "--config", "preset:tiny", "--data.phantom_n", "3", *SMALL,
                 "--output_dir", str(tmp_path / "prep")]) == 0  # fmt: skip
    pre = tmp_path / "pre"
    torchrun(["mass", "pretrain", "--config", "preset:tiny", "--masks", str(tmp_path / "prep"), "--model.channels",
              "4,8,16", "--model.pos_size", "16", "--task.crop", "16", "--task.crop_margin", "4", "--task.num_masks",
              "3", "--train.steps", "3", "--train.batch_size", "2", "--output_dir", str(pre)])  # fmt: skip
    assert_one_writer(pre)
    test = [a.replace("--data.", "--test.") for a in SMALL]
    ft = tmp_path / "ft"
    torchrun(["mass", "finetune", "--config", "preset:tiny", "--crop", "16", "--checkpoint",
              str(pre / "checkpoints" / "final"), *SMALL, *test, "--data.phantom_first", "5", "--data.phantom_n", "2",
              "--label_fraction", "0.5", "--test.phantom_first", "7", "--test.phantom_n", "1", "--steps", "2",
              "--batch_size", "2", "--eval.structures", "liver", "--output_dir", str(ft)])  # fmt: skip
    assert_one_writer(ft)


CHEX = ["chexficient", "train", "--config", "preset:tiny", "--device", "cpu", "--data.phantom_n", "260",
        "--train.batch_size", "48", "--train.micro_batch_size", "48", "--train.epochs", "2", "--evaluate_after",
        "false", "--curator.warmup_batches", "2"]  # fmt: skip


def test_chexficient_kept_set_and_compute_match_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*CHEX, "--output_dir", str(one)]) == 0
    torchrun([*CHEX, "--output_dir", str(two)])
    assert_one_writer(two)
    assert (one / "curated_subset.csv").read_text() == (two / "curated_subset.csv").read_text()
    s1, s2 = (json.loads((d / "checkpoints" / "last" / "trainer_state.json").read_text())["state"] for d in (one, two))
    assert s1["curator"]["kept_ids"] == s2["curator"]["kept_ids"]
    assert s1["trainer"]["keep_per_step"] == s2["trainer"]["keep_per_step"]
    c1, c2 = s1["trainer"]["compute"], s2["trainer"]["compute"]
    assert (c1["fwd"], c1["fwd_nograd"], c1["bwd"]) == (c2["fwd"], c2["fwd_nograd"], c2["bwd"])
    # the contrastive loss sees the whole global batch on every process: the logged losses agree
    rows = [[json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()] for d in (one, two)]
    assert [r["step"] for r in rows[0]] == [r["step"] for r in rows[1]]
    for a, b in zip(*rows, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)


RAVL = ["ravl", "mitigate", "--config", "preset:tiny", "--device", "cpu", "--data.phantom_n", "160", "--config",
        "preset:tiny_mitigate", "--data.cramers_v", "0.95", "--data.phantom_seed", "0", "--mitigation.batch_size",
        "16"]  # fmt: skip


@pytest.mark.parametrize("method", ["ravl", "gdro"])
def test_ravl_mitigate_matches_one_process(tmp_path, method):
    base = tmp_path / "base"
    assert main([*RAVL, "--mitigation.init", "scratch", "--mitigation.method", "standard", "--mitigation.steps", "2",
                 "--output_dir", str(base)]) == 0  # fmt: skip
    disc = tmp_path / "disc"
    assert main(["ravl", "discover", "--config", "preset:tiny", "--device", "cpu", "--data.phantom_n", "160", "--model",
                 str(base / "checkpoints" / "final"), "--output_dir", str(disc)]) == 0  # fmt: skip
    args = [*RAVL, "--model", str(base / "checkpoints" / "final"), "--discovery_run", str(disc), "--mitigation.method",
            method, "--mitigation.steps", "3", "--mitigation.log_every", "1"]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*args, "--output_dir", str(one)]) == 0
    torchrun([*args, "--output_dir", str(two)])
    assert_one_writer(two)
    rows = [[json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()] for d in (one, two)]
    for a, b in zip(*rows, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)


def test_chexalign_train(tmp_path):
    assert (
        main(["phantom", "cxr", "--n", "16", "--size", "32", "--seed", "3", "--output_dir", str(tmp_path / "cxr")]) == 0
    )
    manifest = str(tmp_path / "cxr" / "manifest.csv")
    sft = tmp_path / "sft"
    assert main(["vlm", "train", "--config", "preset:tiny", "--data.reports", manifest, "--data.split", "all",
                 "--train.steps", "4", "--seed", "0", "--output_dir", str(sft)]) == 0  # fmt: skip
    policy = str(sft / "checkpoints" / "final")
    assert main(["chexalign", "sample", "--policy", policy, "--data.reports", manifest, "--data.split", "all",
                 "--limit", "4", "--n", "4", "--max_new_tokens", "8", "--batch_size", "2", "--seed", "1", "--output_dir",
                 str(tmp_path / "s")]) == 0  # fmt: skip
    assert main(["chexalign", "judge", "--candidates", str(tmp_path / "s" / "candidates.jsonl"), "--judge.kind",
                 "bertscore", "--judge.length_control", "true", "--output_dir", str(tmp_path / "j")]) == 0  # fmt: skip
    assert main(["chexalign", "pairs", "--judged", str(tmp_path / "j"), "--output_dir", str(tmp_path / "p")]) == 0
    run = tmp_path / "t"
    torchrun(["chexalign", "train", "--config", "preset:tiny", "--policy", policy, "--pairs", str(tmp_path / "p"),
              "--train.steps", "2", "--output_dir", str(run)])  # fmt: skip
    assert_one_writer(run, medfm_loop=False)  # TRL trainer: its own checkpoint-N layout
    assert (run / "checkpoints" / "final").is_dir()
