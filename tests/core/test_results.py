from __future__ import annotations

import json

import pytest

from medfm.core.errors import DataError
from medfm.core.results import SCHEMA, Metric, MetricsLog, Results, validate


def test_results_roundtrip(tmp_path):
    res = Results("toy", "evaluate", meta={"k": 1})
    res.add("auroc", Metric(0.8, (0.7, 0.9), n=100))
    res.add("loss", 0.25, higher_is_better=False)
    res.add("dice", Metric(0.5, n=3), group="site=A")
    res.tables["rows"] = [{"a": 1}]
    path = res.save(tmp_path / "results.json")
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA and data["metrics"]["auroc"]["ci"] == [0.7, 0.9]
    back = Results.load(path)
    assert back.metrics["auroc"] == res.metrics["auroc"]
    assert back.metrics["loss"].higher_is_better is False
    assert back.groups["site=A"]["dice"].value == 0.5 and back.tables == res.tables


def test_nan_value_becomes_null(tmp_path):
    res = Results("toy", "evaluate")
    res.add("auroc", float("nan"), note="one class")
    data = json.loads(res.save(tmp_path / "r.json").read_text())
    assert data["metrics"]["auroc"]["value"] is None


def test_validate_reports_every_problem():
    bad = {
        "schema": "other",
        "verb": 3,
        "metrics": {"a": {"value": "x"}, "b": {"value": 1, "ci": [2, 1]}, "c": {}},
        "groups": {"g": {"d": {"value": 1, "ci": [1]}}},
    }
    errors = validate(bad)
    text = " | ".join(errors)
    for fragment in (
        "schema",
        "'method'",
        "'verb'",
        "metric a value",
        "low 2 > high 1",
        "metric c has no",
        "groups.g.d ci",
    ):
        assert fragment in text, (fragment, text)


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        Results.load(tmp_path / "nope.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        Results.load(tmp_path / "broken.json")
    (tmp_path / "wrong.json").write_text('{"schema": "x"}')
    with pytest.raises(DataError, match="not a valid"):
        Results.load(tmp_path / "wrong.json")


def test_metrics_log_skips_torn_line_and_truncates(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in range(5):
        log.log(step, loss=1.0 / (step + 1))
    with open(log.path, "a") as fh:
        fh.write('{"step": 5, "loss"')  # crash mid-write
    rows = log.read()
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    log.truncate_after(2)
    assert [r["step"] for r in log.read()] == [0, 1, 2]


def test_metric_format():
    assert Metric(0.81234, (0.7, 0.9)).format(2) == "0.81 [0.70, 0.90]"
    assert Metric(None).format() == "n/a"
