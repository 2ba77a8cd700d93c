from __future__ import annotations

import base64
import json
import os
import random
import stat
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from medfm.core.config import CommonOptions, option
from medfm.core.errors import DataError, UsageError
from medfm.core.files import atomic_dir, atomic_write_text
from medfm.core.report import Report, render_run_report
from medfm.core.results import Metric
from medfm.core.runs import Run, capture_env, seed_everything


@dataclass
class Cfg(CommonOptions):
    lr: float = option(0.1, help="lr")


def test_run_directory_layout_and_resume(tmp_path):
    out = tmp_path / "run"
    with Run("toy", "train", Cfg(output_dir=str(out), seed=3)) as run:
        assert not run.resumed
        for step in range(3):
            run.metrics.log(step, loss=1.0 / (step + 1), acc=step / 3)
        res = run.new_results()
        res.add("acc", Metric(0.9, (0.8, 0.95), n=10))
        run.save_results(res)
        run.write_samples([{"id": 1, "pred": 0}])
    for name in ("config.yaml", "env.json", "log.txt", "metrics.jsonl", "results.json", "samples.jsonl"):
        assert (out / name).is_file(), name
    assert "toy train: run directory" in (out / "log.txt").read_text()
    env = json.loads((out / "env.json").read_text())
    assert env["packages"]["medfm"] and "device" in env
    with Run("toy", "train", Cfg(output_dir=str(out), lr=0.2)) as again:
        assert again.resumed
    assert "lr: 0.1" in (out / "config.previous.yaml").read_text() and "lr: 0.2" in (out / "config.yaml").read_text()


def test_default_location(tmp_path):
    run = Run("toy", "evaluate", Cfg(), root=tmp_path)
    assert run.dir.parent == tmp_path / "toy" and run.dir.name.endswith("-evaluate")


def test_nothing_is_created_before_start_and_user_errors_leave_nothing(tmp_path):
    run = Run("toy", "evaluate", Cfg(), root=tmp_path)
    assert run.plan(["would do x"]) == 0 and not (tmp_path / "toy").exists()  # a dry run leaves no folder
    with pytest.raises(DataError), Run("toy", "evaluate", Cfg(), root=tmp_path) as failing:
        raise DataError("manifest has no column 'report'")
    assert not failing.dir.exists()
    with pytest.raises(RuntimeError), Run("toy", "evaluate", Cfg(), root=tmp_path) as crashed:
        raise RuntimeError("a bug")
    assert (crashed.dir / "log.txt").is_file()  # crashes keep their log
    given = tmp_path / "mine"
    given.mkdir()
    with pytest.raises(DataError), Run("toy", "evaluate", Cfg(output_dir=str(given))):
        raise DataError("x")
    assert given.is_dir()  # a folder the user had is never removed


def test_second_writer_is_refused_with_the_holders_pid(tmp_path):
    out = tmp_path / "run"
    code = (
        "import sys, time; from medfm.core.runs import Run; from medfm.core.config import CommonOptions\n"
        f"r = Run('toy', 'train', CommonOptions(output_dir={str(out)!r})).start(with_device=False)\n"
        "print('locked', flush=True); time.sleep(30)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UsageError, match=f"in use by another medfm process \\(pid {holder.pid}\\)") as err:
            Run("toy", "train", Cfg(output_dir=str(out))).start(with_device=False)
        assert err.value.exit_code == 2
    finally:
        holder.kill()
        holder.wait()
    with Run("toy", "train", Cfg(output_dir=str(out))) as run:  # the lock died with its holder
        assert run.resumed


def test_files_and_folders_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with Run("toy", "train", Cfg(output_dir=str(tmp_path / "run"))) as run:
            run.save_results(run.new_results())
        assert stat.S_IMODE((run.dir / "results.json").stat().st_mode) == 0o644
        assert stat.S_IMODE((run.dir / "config.yaml").stat().st_mode) == 0o644
        with atomic_dir(tmp_path / "model") as d:
            (d / "w").write_text("x")
        assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.txt", "x")
        assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_only_the_main_process_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    out = tmp_path / "run"
    with Run("toy", "train", Cfg(output_dir=str(out))) as run:
        run.metrics.log(0, loss=1.0)
        run.save_results(run.new_results())
        run.write_samples([{"id": 1}])
    assert not out.exists()


def test_seed_everything_repeats():
    import torch

    seed_everything(7)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(7)
    assert a == (random.random(), np.random.rand(), torch.rand(1).item())


def test_report_is_self_contained_and_escaped(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    rep = Report("T <script>", subtitle="s")
    rep.add_metrics({"auroc": Metric(0.8, (0.7, 0.9), n=5)})
    rep.add_table("rows", [{"a": 1, "b": "<b>x</b>"}, {"a": 2.5}])
    rep.add_figure("fig", fig, caption="cap")
    rep.add_links("parts", [("sub", "sub/report.html", "ok")])
    html = rep.save(tmp_path / "r.html").read_text()
    assert "<script>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    payload = html.split("data:image/png;base64,")[1].split("'")[0]
    assert base64.b64decode(payload)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "[0.700, 0.900]" in html and "href='sub/report.html'" in html and "not for clinical use" in html


def test_render_run_report_from_files(tmp_path):
    out = tmp_path / "run"
    with Run("toy", "train", Cfg(output_dir=str(out))) as run:
        for step in range(4):
            run.metrics.log(step, loss=4 - step)
        res = run.new_results()
        res.add("acc", 0.5)
        res.add("acc", 0.4, group="site=B")
        res.tables["per_class"] = [{"class": "a", "f1": 0.3}]
        run.save_results(res)
    html = render_run_report(out).read_text()
    assert "Training curves" in html and "site=B" in html and "Per class" in html and "lr: 0.1" in html


def test_capture_env_without_device():
    env = capture_env(with_device=False)
    assert "device" not in env and env["python"]


def test_one_report_verb_for_every_method(tmp_path, capsys):
    from medfm.cli import main
    from medfm.core.results import Results

    run = tmp_path / "run"
    run.mkdir()
    r = Results(method="ravl", verb="evaluate")
    r.add("auroc", 0.8, n=50)
    r.save(run / "results.json")
    assert main(["report", str(run)]) == 0 and (run / "report.html").is_file()
    for method in ("mass", "medvae", "chexficient", "ravl", "srrg", "raddiff"):
        (run / "report.html").unlink()
        assert main([method, "report", str(run)]) == 0 and "auroc" in (run / "report.html").read_text()
    assert main(["report", str(tmp_path / "empty")]) == 3  # no results.json: one actionable line
    assert "no results.json" in capsys.readouterr().err
    assert main(["report", str(run), "--dry_run", "true"]) == 0


def test_run_folder_says_how_its_last_attempt_ended(tmp_path):
    import json as _json

    from medfm.core.runs import STATUS_NAME, Run

    cfg = CommonOptions(output_dir=str(tmp_path / "r"))
    with pytest.raises(RuntimeError), Run("toy", "train", cfg):
        assert _json.loads((tmp_path / "r" / STATUS_NAME).read_text())["status"] == "running"
        raise RuntimeError("out of memory\nsecond line")
    doc = _json.loads((tmp_path / "r" / STATUS_NAME).read_text())
    assert doc["status"] == "failed" and doc["error"] == "RuntimeError: out of memory"
    with Run("toy", "train", cfg):
        pass
    assert _json.loads((tmp_path / "r" / STATUS_NAME).read_text())["status"] == "completed"


def test_numbers_are_rendered_for_people():
    import doctest

    from medfm.core import report
    from medfm.core.report import _fmt, fmt_ci, fmt_num

    assert doctest.testmod(report).failed == 0
    assert fmt_num(0.000012345) == "1.23e-05" and fmt_num(-0.5) == "-0.500" and fmt_num(2.5e7) == "2.50e+07"
    assert fmt_num(float("nan")) == "nan" and fmt_num(True) == "True"
    assert fmt_ci(0.87654, (0.851, 0.9021), "dB") == "0.877 [0.851, 0.902] dB"
    assert fmt_ci(None, (0.1, 0.2), "dB") == "n/a"
    # a dict in a table cell becomes key/value text, never Python's repr
    assert _fmt({"auroc": 0.123456, "note": "undefined"}) == "auroc 0.123; note undefined"


def test_saved_figure_carries_its_caption_into_reports(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from medfm.core.report import (
        Report,
        caption_path,
        display_array,
        image_grid_figure,
        save_figure,
        text_panels_figure,
        text_panels_grid,
    )

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    png = save_figure(tmp_path / "plots" / "curve.png", fig, "A line & its <caption>.")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert caption_path(png).read_text() == "A line & its <caption>.\n"
    html = Report("t").add_figure("Curve", png).render()
    assert "<figcaption>A line &amp; its &lt;caption&gt;.</figcaption>" in html
    # the figure helpers build real figures from arrays, volumes and text
    vol = np.random.default_rng(0).random((8, 9, 5)).astype("float32")
    assert display_array(vol).shape == (8, 9)
    for f in (image_grid_figure([[("a", vol), ("b", vol[..., 0], {"cmap": "magma"})], [("c", vol)]]),
              text_panels_figure([("free text", "x " * 200), ("structured", "1. y")], image=vol[..., 0]),
              text_panels_grid([("img", vol[..., 0], "GENERATED: a\nREFERENCE: b")])):  # fmt: skip
        assert len(f.axes) >= 2
        plt.close(f)
