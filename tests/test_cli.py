"""The dispatcher: help, dotted overrides, presets, error lines and exit codes, torch-free --help."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medfm import capabilities, cli
from medfm.capabilities import Capability


@pytest.fixture
def toy(monkeypatch):
    cap = Capability("toy", "Toy", "a toy method", "core.toy_group")
    monkeypatch.setattr(capabilities, "METHODS", (*capabilities.METHODS, cap))
    return cap


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_top_level_help_lists_every_capability(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for cap in capabilities.all_capabilities():
        assert f"  {cap.name} " in out


def test_help_and_list_never_import_heavy_modules():
    """--help of every group and verb, and `medfm list`, stay torch-free (speed: benchmarks/foundation.py)."""
    probe = (
        "import sys, contextlib, io\n"
        "from medfm import capabilities\n"
        "from medfm.cli import load_group, main\n"
        "argvs = [['--help'], ['list']]\n"
        "for cap in capabilities.all_capabilities():\n"
        "    if cap.available:\n"
        "        group = load_group(cap.name)\n"
        "        argvs.append([cap.name, '--help'])\n"
        "        argvs += [[cap.name, c.name, '--help'] for c in group.commands if not group.single]\n"
        "for argv in argvs:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert main(argv) == 0, argv\n"
        "print(len(argvs), sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'numpy', 'transformers', 'monai', 'scipy', 'sklearn', 'pandas'}))"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    count, heavy = res.stdout.strip().split(" ", 1)
    assert int(count) > 10
    assert heavy == "[]", f"--help imported heavy modules: {heavy}"


def test_console_script_help_exit_code():
    res = subprocess.run([sys.executable, "-m", "medfm.cli", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "medfm" in res.stdout


def test_unknown_command_one_line_exit_2(capsys):
    code, _out, err = run(capsys, "lst")
    assert code == 2
    assert err.count("\n") == 1 and "did you mean 'list'" in err and "Traceback" not in err


def test_bad_flag_one_line_exit_2(capsys, toy):
    code, _, err = run(capsys, "toy", "train", "m.csv", "--trian.lr", "1")
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "unrecognized arguments: --trian.lr" in err


def test_bad_value_type_exit_2(capsys, toy):
    code, _, err = run(capsys, "toy", "train", "m.csv", "--train.steps", "many")
    assert code == 2 and "expected an integer" in err and err.count("\n") == 1


def test_unknown_verb_suggests(capsys, toy):
    code, _, err = run(capsys, "toy", "trian")
    assert code == 2 and "did you mean 'train'" in err


def test_group_help_lists_verbs(capsys, toy):
    code, out, _ = run(capsys, "toy", "--help")
    assert code == 0 and "train" in out and "Train the toy." in out


def test_verb_help_shows_sections_defaults_and_presets(capsys, toy):
    code, out, _ = run(capsys, "toy", "train", "--help")
    assert code == 0
    assert "--train.lr" in out and "(default: 0.001)" in out and "presets: tiny" in out
    assert "--output_dir" in out and "--dry_run" in out and "--limit" in out and "--seed" in out


def test_defaults_preset_then_flags(capsys, toy):
    code, out, _ = run(capsys, "toy", "train", "m.csv")
    assert code == 0
    assert json.loads(out) == {
        "manifest": "m.csv",
        "lr": 1e-3,
        "steps": 10,
        "layers": [1, 2],
        "amp": False,
        "dry_run": False,
        "mode": "fast",
    }
    code, out, _ = run(
        capsys,
        "toy",
        "train",
        "m.csv",
        "--config",
        "preset:tiny",
        "--train.lr",
        "1e-4",
        "--train.layers",
        "4,8,16",
        "--train.amp",
        "--dry_run",
    )
    got = json.loads(out)
    assert got["lr"] == 1e-4 and got["steps"] == 3 and got["mode"] == "slow"  # flag beats preset beats default
    assert got["layers"] == [4, 8, 16] and got["amp"] is True and got["dry_run"] is True


def test_bool_flag_accepts_explicit_value_and_keeps_positional(capsys, toy):
    code, out, _ = run(capsys, "toy", "train", "--dry_run", "false", "m.csv")
    assert code == 0 and json.loads(out)["dry_run"] is False and json.loads(out)["manifest"] == "m.csv"
    code, out, _ = run(capsys, "toy", "train", "--dry_run", "m.csv")
    assert json.loads(out)["dry_run"] is True and json.loads(out)["manifest"] == "m.csv"


def test_yaml_config_file_and_print_config(capsys, toy, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  steps: 42\n")
    code, out, _ = run(capsys, "toy", "train", "m.csv", "--config", str(cfg), "--print_config")
    assert code == 0
    assert "steps: 42" in out and "manifest: m.csv" in out


def test_missing_preset_and_bad_yaml(capsys, toy, tmp_path):
    code, _, err = run(capsys, "toy", "train", "m.csv", "--config", "preset:huge")
    assert code == 2 and "available: tiny" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    code, _, err = run(capsys, "toy", "train", "m.csv", "--config", str(bad))
    assert code == 2 and "not valid YAML" in err and err.count("\n") == 1
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train:\n  lrr: 1\n")
    code, _, err = run(capsys, "toy", "train", "m.csv", "--config", str(unknown))
    assert code == 2 and "did you mean 'lr'" in err


def test_missing_positional_exit_2(capsys, toy):
    code, _, err = run(capsys, "toy", "train")
    assert code == 2 and "MANIFEST" in err


def test_data_error_exit_3(capsys, toy):
    code, _, err = run(capsys, "toy", "train", "bad.csv")
    assert code == 3 and "column 'report' is missing" in err and err.count("\n") == 1


def test_list_and_env_json(capsys):
    code, out, _ = run(capsys, "list", "--json")
    assert code == 0
    names = {row["name"] for row in json.loads(out)}
    assert {"env", "list", "demo", "mass", "chexficient"} <= names
    code, out, _ = run(capsys, "env", "--json")
    env = json.loads(out)
    assert code == 0 and env["packages"]["torch"] and "assets" in env and "device" in env


def test_planned_capability_is_a_usage_error(capsys, monkeypatch):
    cap = Capability("ghost", "Ghost", "not built", "medfm.methods.ghost.cli")
    monkeypatch.setattr(capabilities, "METHODS", (*capabilities.METHODS, cap))
    code, _, err = run(capsys, "ghost", "train")
    assert code == 2 and "not available" in err


def test_presets_are_listed_only_for_verbs_they_fit(capsys, toy, monkeypatch):
    from core import toy_group
    from medfm.core.commands import Command, Group

    other = Command("evaluate", "Evaluate.", "medfm.core.builtin:ListConfig", "medfm.core.builtin:run_list",
                    presets="core.toy_presets")  # fmt: skip
    monkeypatch.setattr(toy_group, "GROUP", Group("toy", "A toy method.", (*toy_group.GROUP.commands, other)))
    code, out, _ = run(capsys, "toy", "evaluate", "--help")
    assert code == 0 and "presets:" not in out
    code, _, err = run(capsys, "toy", "evaluate", "--config", "preset:tiny")
    assert code == 2 and "meant for another verb" in err and err.count("\n") == 1
