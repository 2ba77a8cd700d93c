from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass

import numpy as np

from medfm.core.config import CommonOptions, option
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
    assert "[0.7, 0.9]" in html and "href='sub/report.html'" in html and "not for clinical use" in html


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
