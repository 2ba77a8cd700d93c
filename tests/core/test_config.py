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


@dataclass
class _Bounded:
    arm: str = C.option("a", help="x", choices=("a", "b"))
    kinds: list[str] = C.option(default_factory=lambda: ["a"], help="x", choices=("a", "b"))
    epochs: int = C.option(2, help="x", ge=1)
    lr: float = C.option(0.1, help="x", gt=0, lt=1)
    cap: int | None = C.option(None, help="x", ge=1)


@pytest.mark.parametrize("data,message", [
    ({"arm": "bogus"}, "--arm: 'bogus' is not one of a, b"),
    ({"kinds": "a,c"}, "--kinds: 'c' is not one of a, b"),
    ({"epochs": "-1"}, "--epochs: -1 must be >= 1"),
    ({"lr": -1}, "--lr: -1.0 must be > 0"),
    ({"lr": "1"}, "--lr: 1.0 must be < 1"),
    ({"cap": 0}, "--cap: 0 must be >= 1"),
])  # fmt: skip
def test_choices_and_bounds_are_enforced_for_yaml_and_flags(data, message):
    with pytest.raises(UsageError) as err:
        C.merge(_Bounded(), data)
    assert str(err.value) == message
    with pytest.raises(UsageError):
        C.resolve(_Bounded, [], {k: str(v) for k, v in data.items()})


def test_bounds_pass_valid_values_and_none():
    cfg = C.merge(_Bounded(), {"arm": "b", "kinds": ["a", "b"], "epochs": 1, "lr": 0.5, "cap": None})
    assert (cfg.arm, cfg.kinds, cfg.epochs, cfg.cap) == ("b", ["a", "b"], 1, None)


def test_every_verb_default_and_preset_satisfies_its_own_choices_and_bounds():
    import importlib

    from medfm import capabilities
    from medfm.core.commands import load_object

    checked = presets = 0
    for cap in capabilities.all_capabilities():
        if not cap.available:
            continue
        group = getattr(importlib.import_module(cap.module), capabilities.GROUP_ATTR.get(cap.name, "GROUP"))
        for cmd in group.commands:
            cls = load_object(cmd.config)
            cfg = cls()
            for name, f, _tp in C.iter_options(cls):
                value = cfg
                for part in name.split("."):
                    value = getattr(value, part)
                C.check_value(value, f.metadata, name)
                checked += 1
            package = cmd.config.split(":", 1)[0].rsplit(".", 1)[0]
            for preset in C.list_presets(package):
                try:  # a preset may be meant for another verb of the group; a value out of bounds is a broken preset
                    C.merge(cls(), C.load_config_source(f"preset:{preset}", package))
                except C.ConstraintError:
                    raise
                except UsageError:
                    continue
                presets += 1
    assert checked > 300 and presets > 20


@pytest.mark.parametrize("flags", [
    ["--train.arm", "bogus"], ["--train.epochs", "-1"], ["--limit", "-5"], ["--train.lr", "-1"],
])  # fmt: skip
def test_out_of_range_flags_exit_2_before_anything_runs(flags, tmp_path, capsys):
    from medfm.cli import main

    out = tmp_path / "run"
    assert main(["chexficient", "train", *flags, "--dry_run", "--output_dir", str(out)]) == 2
    assert not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flags[0] in err[0]
