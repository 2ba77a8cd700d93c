"""No verb creates a folder on --dry_run, nor when its configuration is rejected (every verb of every method)."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from medfm import capabilities
from medfm.cli import main
from medfm.core.commands import load_object


def _verbs_with_dry_run():
    out = []
    for cap in capabilities.all_capabilities():
        if not cap.available:
            continue
        group = getattr(importlib.import_module(cap.module), capabilities.GROUP_ATTR.get(cap.name, "GROUP"))
        for cmd in group.commands:
            fields = {f.name for f in dataclasses.fields(load_object(cmd.config))}
            if "dry_run" in fields and "output_dir" in fields:
                out.append(pytest.param(group, cmd, id=f"{group.name}-{cmd.name}"))
    return out


VERBS = _verbs_with_dry_run()


def test_every_method_verb_is_covered():
    assert len(VERBS) >= 30  # the method verbs that write a run folder


@pytest.mark.parametrize("group,cmd", VERBS)
def test_dry_run_leaves_no_folder(group, cmd, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default location runs/<method>/... would be created here
    out = tmp_path / "out"
    argv = [group.name] if group.single else [group.name, cmd.name]
    code = main([*argv, "--dry_run", "true", "--output_dir", str(out)])
    assert code in (0, 2, 3)  # a plan, or one clear error for a missing required input
    assert not out.exists()
    code = main([*argv, "--dry_run", "true"])
    assert code in (0, 2, 3)
    assert not (tmp_path / "runs").exists()


# Verbs whose defaults are a complete configuration: their dry run must reach the plan (exit 0), so the test
# above exercises the plan path and not only the rejection of a missing input.
PLANNING = ["chexficient curate", "chexficient train", "mass finetune", "mass prepare", "mass probe", "mass segment",
            "medvae train", "phantom ct", "phantom cxr", "raddiff prepare", "smmile prepare", "smmile run",
            "srrg evaluate", "srrg prepare", "srrg structure", "srrg train"]  # fmt: skip


@pytest.mark.parametrize("verb", PLANNING)
def test_dry_run_prints_a_plan_and_leaves_no_folder(verb, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert main([*verb.split(), "--dry_run", "true", "--output_dir", str(out)]) == 0
    assert "dry run" in capsys.readouterr().out and not out.exists() and not (tmp_path / "runs").exists()
