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


def _bad_inputs(tmp_path):
    """A manifest with a broken JSON line, one without the image column, a datalist naming a missing file."""
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"image": "a.png", "report": "ok"}\n{"image": "b.png", "report": \n')
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("img,report\na.png,ok\n")
    dl = tmp_path / "dl.json"
    dl.write_text('{"training": [{"image": "missing.nii.gz"}]}')
    return broken, nocol, dl


@pytest.mark.parametrize("argv,which", [
    (["chexficient", "train", "--data.manifest"], "broken"),
    (["chexficient", "train", "--data.manifest"], "nocol"),
    (["ravl", "mitigate", "--mitigation.init", "scratch", "--mitigation.method", "standard", "--data.manifest"],
     "broken"),
    (["vlm", "train", "--data.reports"], "nocol"),
    (["mass", "prepare", "--data.datalist"], "dl"),
    (["medvae", "train", "--data.source"], "broken"),
])  # fmt: skip
def test_dry_run_runs_the_data_validate_checks_on_every_input(argv, which, tmp_path, capsys):
    broken, nocol, dl = _bad_inputs(tmp_path)
    path = {"broken": broken, "nocol": nocol, "dl": dl}[which]
    out = tmp_path / "run"
    assert main([*argv, str(path), "--dry_run", "--output_dir", str(out)]) == 3
    err = capsys.readouterr().err
    assert str(path.name) in err  # named by the shared input check, or by a verb that reads its data before planning
    assert not out.exists()


def test_dry_run_of_a_clean_manifest_reaches_the_plan(tmp_path, capsys):
    from PIL import Image

    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("image,report,split\na.png,No effusion.,train\na.png,Edema.,test\n")
    assert main(["chexficient", "train", "--data.manifest", str(tmp_path / "m.csv"), "--dry_run",
                 "--output_dir", str(tmp_path / "run")]) == 0  # fmt: skip
    assert "dry run: chexficient train" in capsys.readouterr().out
