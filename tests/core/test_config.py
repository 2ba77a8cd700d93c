from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from medfm.core import config as C
from medfm.core.errors import UsageError


@dataclass
class Inner:
    lr: float = C.option(0.1, help="lr")
    mode: Literal["a", "b"] = C.option("a", help="mode")


@dataclass
class Outer:
    name: str = C.option("x", help="name")
    path: Path | None = C.option(None, help="path")
    sizes: list[int] = C.option(default_factory=lambda: [1], help="sizes")
    extra: dict = C.option(default_factory=dict, help="extra")
    inner: Inner = C.section(Inner, help="inner")


@pytest.mark.parametrize(
    ("value", "tp", "expected"),
    [
        ("3", int, 3),
        ("1_000", int, 1000),
        (2.0, int, 2),
        ("1e-4", float, 1e-4),
        (3, float, 3.0),
        ("yes", bool, True),
        ("off", bool, False),
        ("none", int | None, None),
        ("7", int | None, 7),
        ("1,2,3", list[int], [1, 2, 3]),
        ("[4, 5]", list[int], [4, 5]),
        ("b", Literal["a", "b"], "b"),
        ("{a: 1}", dict, {"a": 1}),
        ("p/q", Path, Path("p/q")),
    ],
)
def test_coerce(value, tp, expected):
    assert C.coerce(value, tp, "x") == expected


@pytest.mark.parametrize(
    ("value", "tp"), [("x", int), (1.5, int), ("maybe", bool), ("c", Literal["a", "b"]), (True, int), ("[1", list[int])]
)
def test_coerce_rejects(value, tp):
    with pytest.raises((UsageError, Exception)):
        C.coerce(value, tp, "x")


def test_iter_options_flattens_sections():
    names = [n for n, _f, _t in C.iter_options(Outer)]
    assert names == ["name", "path", "sizes", "extra", "inner.lr", "inner.mode"]


def test_merge_and_roundtrip():
    cfg = C.from_dict(Outer, {"inner": {"lr": "0.5"}, "sizes": [3]})
    assert cfg.inner.lr == 0.5 and cfg.sizes == [3] and cfg.inner.mode == "a"
    again = C.from_dict(Outer, C.to_dict(cfg))
    assert again == cfg
    assert "lr: 0.5" in C.dump_yaml(cfg)


def test_unknown_key_suggests_close_match():
    with pytest.raises(UsageError, match="did you mean 'lr'"):
        C.from_dict(Outer, {"inner": {"lrr": 1}})


def test_section_needs_mapping():
    with pytest.raises(UsageError, match="section"):
        C.from_dict(Outer, {"inner": 3})


def test_resolve_order_file_then_flags(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("name: fromfile\ninner:\n  lr: 0.2\n")
    cfg = C.resolve(Outer, [str(f)], {"inner.lr": "0.3"})
    assert cfg.name == "fromfile" and cfg.inner.lr == 0.3


def test_required_option_reported():
    @dataclass
    class Req:
        manifest: str = C.option(help="required")

    assert Req().manifest is None
    with pytest.raises(UsageError, match="--manifest"):
        C.resolve(Req, [], {})
    assert C.resolve(Req, [], {"manifest": "m.csv"}).manifest == "m.csv"


def test_non_mapping_yaml_rejected(tmp_path):
    f = tmp_path / "list.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(UsageError, match="mapping"):
        C.resolve(Outer, [str(f)], {})
    with pytest.raises(UsageError, match="does not exist"):
        C.resolve(Outer, [str(tmp_path / "missing.yaml")], {})
