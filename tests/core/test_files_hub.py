from __future__ import annotations

import json

import pytest
import torch

from medfm.core.cards import ModelCard
from medfm.core.errors import DataError
from medfm.core.files import atomic_dir, atomic_path, atomic_write_json, atomic_write_text
from medfm.core.hub import PretrainedMixin, from_pretrained, load_config, resolve_source, save_pretrained


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary left behind


def test_atomic_json_is_strict(tmp_path):
    p = atomic_write_json(tmp_path / "a.json", {"x": float("nan"), "y": (1, 2)})
    assert json.loads(p.read_text()) == {"x": None, "y": [1, 2]}


def test_atomic_dir_replaces_whole_or_nothing(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as d:
        (d / "a").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target) as d:
        (d / "b").write_text("2")
        raise RuntimeError("crash")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    with atomic_dir(target) as d:
        (d / "c").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


class Tiny(torch.nn.Module, PretrainedMixin):
    def __init__(self, width: int = 4, tie: bool = True):
        super().__init__()
        self.init_kwargs = {"width": width, "tie": tie}
        self.a = torch.nn.Linear(width, width)
        self.b = torch.nn.Linear(width, width)
        if tie:
            self.b.weight = self.a.weight


def test_save_and_load_pretrained_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = Tiny(width=5)
    card = ModelCard(name="tiny", method="toy")
    model.save_pretrained(tmp_path / "m", card=card)
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["README.md", "card.json", "config.json", "model.safetensors"]
    assert load_config(tmp_path / "m")["medfm_class"] == f"{Tiny.__module__}:Tiny"
    back = from_pretrained(f"local-dir:{tmp_path / 'm'}")
    x = torch.randn(2, 5)
    assert isinstance(back, Tiny) and back.init_kwargs["width"] == 5
    assert torch.equal(back.b(back.a(x)), model.b(model.a(x)))


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    save_pretrained(tmp_path / "m", {"w": torch.ones(3)}, {"medfm_class": "x:y"})
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:20])
    with pytest.raises(DataError, match="corrupt or truncated"):
        Tiny.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{")
    with pytest.raises(DataError, match="corrupt"):
        load_config(tmp_path / "m")
    with pytest.raises(DataError, match="does not exist"):
        resolve_source(tmp_path / "missing")
