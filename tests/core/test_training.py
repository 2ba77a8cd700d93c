"""core.training: one checkpoint layout, resume with fallback, metrics trimmed on resume, the step loop."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from medfm.core.files import atomic_dir, atomic_write_text
from medfm.core.results import MetricsLog
from medfm.core.training import STATE_FILE, Checkpointer, CheckpointError, fit, make_accelerator, shard


def _acc_and_model(seed: int = 0):
    acc = make_accelerator("cpu")
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model, opt = acc.prepare(model, opt)
    return acc, model, opt


def _train(model, opt, steps: int) -> None:
    for _ in range(steps):
        opt.zero_grad()
        model(torch.ones(4, 3)).sum().backward()
        opt.step()


def test_save_then_load_restores_weights_state_and_tensors(tmp_path):
    acc, model, opt = _acc_and_model()
    ck = Checkpointer(tmp_path, acc)
    _train(model, opt, 2)
    ck.save(2, {"q": [0.25, 0.75]}, {"ema.w": torch.arange(3.0)})
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    doc = json.loads((tmp_path / "checkpoints" / "last" / STATE_FILE).read_text())
    assert doc["step"] == 2 and doc["format"] == "medfm.checkpoint/1" and doc["world_size"] == 1
    _train(model, opt, 3)
    assert not torch.equal(model.weight, saved["weight"])
    r = ck.load()
    assert r is not None and r.step == 2 and r.state == {"q": [0.25, 0.75]}
    assert torch.equal(r.tensors["ema.w"], torch.arange(3.0))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    # no pickle in the layout beyond what loads with weights_only=True
    assert {p.suffix for p in (tmp_path / "checkpoints" / "last").iterdir()} <= {
        ".json",
        ".safetensors",
        ".bin",
        ".pkl",
    }


def test_no_checkpoint_and_disabled_checkpointer(tmp_path):
    assert Checkpointer(tmp_path).load() is None
    off = Checkpointer(None)
    off.save(3, {"a": 1})
    assert off.load() is None


def test_rotation_keeps_the_previous_checkpoint(tmp_path):
    ck = Checkpointer(tmp_path)
    ck.save(1, {"n": 1})
    ck.save(2, {"n": 2})
    ck.save(3, {"n": 3})
    root = tmp_path / "checkpoints"
    assert json.loads((root / "last" / STATE_FILE).read_text())["step"] == 3
    assert json.loads((root / "previous" / STATE_FILE).read_text())["step"] == 2
    assert not (root / ".last.tmp").exists()


def test_truncated_last_checkpoint_falls_back_to_previous_with_a_warning(tmp_path, caplog):
    acc, model, opt = _acc_and_model()
    ck = Checkpointer(tmp_path, acc)
    ck.save(1)
    _train(model, opt, 1)
    ck.save(2)
    weights = tmp_path / "checkpoints" / "last" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])  # a kill mid-copy / a full disk
    with caplog.at_level(logging.WARNING):
        r = ck.load()
    assert r is not None and r.step == 1
    assert "model.safetensors" in caplog.text and "unreadable" in caplog.text


def test_no_readable_checkpoint_is_one_error_naming_the_file(tmp_path):
    ck = Checkpointer(tmp_path)
    ck.save(1)
    ck.save(2)
    for name in ("last", "previous"):
        (tmp_path / "checkpoints" / name / STATE_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=r"trainer_state\.json") as e:
        ck.load()
    assert e.value.exit_code == 3 and "Delete that folder" in str(e.value)


def test_resume_trims_metrics_logged_after_the_checkpoint(tmp_path):
    metrics = MetricsLog(tmp_path / "metrics.jsonl")
    ck = Checkpointer(tmp_path, metrics=metrics)
    ck.save(4)
    for s in range(1, 8):  # steps 5..7 were logged, then the run was killed before the next checkpoint
        metrics.log(s, loss=1.0 / s)
    assert ck.load().step == 4
    assert [r["step"] for r in metrics.read()] == [1, 2, 3, 4]


def test_fit_runs_from_start_logs_and_checkpoints_on_schedule(tmp_path):
    metrics = MetricsLog(tmp_path / "metrics.jsonl")
    ck = Checkpointer(tmp_path)
    seen = []
    saved = []
    orig = ck.save
    ck.save = lambda step, state=None, tensors=None: (saved.append(step), orig(step, state, tensors))  # type: ignore[method-assign]
    logs = fit(lambda s: (seen.append(s), {"loss": float(s)})[1], steps=7, start=2, checkpointer=ck, metrics=metrics,
               log_every=2, checkpoint_every=3, state_fn=lambda: {"seen": len(seen)})  # fmt: skip
    assert seen == [2, 3, 4, 5, 6] and logs == {"loss": 6.0}
    assert [r["step"] for r in metrics.read()] == [4, 6, 7]
    assert saved == [3, 6, 7]  # every 3 steps and at the end
    assert ck.load().state == {"seen": 5}


def test_fit_stop_fn_ends_early_and_checkpoints_the_stop_step(tmp_path):
    metrics = MetricsLog(tmp_path / "metrics.jsonl")
    ck = Checkpointer(tmp_path)
    seen = []
    fit(lambda s: (seen.append(s), {"loss": 1.0})[1], steps=20, checkpointer=ck, metrics=metrics, log_every=10,
        checkpoint_every=10, stop_fn=lambda done: done == 4)  # fmt: skip
    assert seen == [0, 1, 2, 3]
    assert ck.load().step == 4 and [r["step"] for r in metrics.read()] == [4]


def test_other_ranks_write_nothing_through_the_atomic_writers(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    atomic_write_text(tmp_path / "results.json", "{}")
    with atomic_dir(tmp_path / "final") as d:
        (d / "model.safetensors").write_bytes(b"x")
    assert list(tmp_path.iterdir()) == []


def test_batch_sizes_are_global_and_shards_cover_the_batch():
    acc = make_accelerator("cpu", global_batch=5)  # one process: any size splits
    assert shard([3, 1, 4, 1, 5], acc) == [3, 1, 4, 1, 5]

    class Two:
        num_processes, process_index = 2, 1

    assert shard([3, 1, 4, 1, 5], Two()) == [1, 1]


@pytest.mark.parametrize("umask,dir_mode,file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_checkpoint_files_follow_the_umask(tmp_path, umask, dir_mode, file_mode):
    import os

    acc, _model, _opt = _acc_and_model()
    old = os.umask(umask)
    try:
        Checkpointer(tmp_path, acc).save(1, {"a": 1}, {"t": torch.zeros(2)})
    finally:
        os.umask(old)
    last = tmp_path / "checkpoints" / "last"
    assert last.stat().st_mode & 0o777 == dir_mode
    files = [p for p in last.iterdir() if p.is_file()]
    assert files and all(p.stat().st_mode & 0o777 == file_mode for p in files), [oct(p.stat().st_mode) for p in files]
