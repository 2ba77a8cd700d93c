"""The benchmark harness: declarations, --quick, cached base models, verbs, the written file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medfm.core.bench import Benchmark, code_hash, load_declarations
from medfm.core.claims import Control, validate_benchmark

TOY = """
scale: effect
claims:
  gain:
    paper: "X improves Y (+5 points)"
    metric: "accuracy, X - baseline"
    threshold: 0.0
    min_effect: 0.03
    resample: seeds×items
    trained: true
    falsifiable_by: "a CI below +0.03"
  beats:
    paper: "X beats the lexicon"
    metric: "F1"
    threshold: baseline
    min_effect: 0.02
    falsifiable_by: "F1 at or below the lexicon's"
  later:
    paper: "measured by a later run"
    metric: "seconds"
    threshold: 1.0
    expect: less
    min_effect: 0.1
    falsifiable_by: "a CI reaching 1 s"
"""


@pytest.fixture
def bench_dir(tmp_path):
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "toy.yaml").write_text(TOY)
    return tmp_path


def test_claims_come_from_declarations_and_unmeasured_ones_are_not_run(bench_dir, tmp_path):
    bench = Benchmark("toy", "doc", bench_dir=bench_dir)
    out = tmp_path / "out" / "toy.json"
    bench.parse(["--out", str(out), "--seeds", "3"])
    assert bench.seeds == [0, 1, 2] and bench.scale == "effect"
    c = bench.claim("gain", 0.06, ci=(0.04, 0.09), seeds=3, n=300,
                    controls=[Control("shuffle", "shuffled images lose the gain", True, -0.01)])  # fmt: skip
    assert c.status == "holds" and c.min_effect == 0.03 and c.paper.startswith("X improves")
    b = bench.claim("beats", 0.50, baseline=0.60, ci=(0.49, 0.52))
    assert b.threshold == 0.60 and b.status == "fails"
    with pytest.raises(KeyError):
        bench.claim("undeclared", 1.0)
    with pytest.raises(ValueError):
        bench.claim("gain", 0.1)
    bench.write({"x": 1})
    doc = json.loads(out.read_text())
    assert validate_benchmark(doc) == []
    by_id = {c["id"]: c for c in doc["claims"]}
    assert by_id["later"]["status"] == "inconclusive" and by_id["later"]["reason"] == "not_run"
    assert doc["seeds"] == 3 and doc["scale"] == "effect"  # the gain claim rests on 3 seeds and doc["wall_s"] >= 0
    assert "--seeds 3" in doc["command"] and doc["device"] == "cpu"


def test_quick_runs_are_smoke_and_never_write_into_results(bench_dir):
    bench = Benchmark("toy", "doc", bench_dir=bench_dir)
    bench.parse(["--quick", "--seeds", "5"])
    assert bench.scale == "smoke" and bench.seeds == [0] and bench.size(1000, 10) == 10
    assert not bench.out_path.is_relative_to(bench_dir / "results")
    assert "bench-quick" in str(bench.out_path)


def test_declarations_are_checked(tmp_path):
    (tmp_path / "claims").mkdir()
    with pytest.raises(FileNotFoundError, match="declare"):
        load_declarations("none", tmp_path)
    (tmp_path / "claims" / "bad.yaml").write_text("claims:\n  a:\n    paper: p\n    metric: m\n    min_efect: 0.1\n")
    with pytest.raises(ValueError, match="unknown key"):
        load_declarations("bad", tmp_path)
    (tmp_path / "claims" / "bad.yaml").write_text("claims:\n  a:\n    paper: p\n    metric: m\n    min_effect: 0.1\n")
    with pytest.raises(ValueError, match="falsifiable_by"):
        load_declarations("bad", tmp_path)


def test_cached_base_model_is_built_once_per_config_and_code(bench_dir, tmp_path):
    bench = Benchmark("toy", "doc", bench_dir=bench_dir)
    bench.parse([])
    calls = []

    def build(folder: Path) -> None:
        calls.append(folder)
        (folder / "model.txt").write_text("weights")

    cache = tmp_path / "cache"
    a = bench.cached("base", {"steps": 10}, ["medfm.core.claims"], build, cache_dir=cache)
    again = bench.cached("base", {"steps": 10}, ["medfm.core.claims"], build, cache_dir=cache)
    assert a == again and len(calls) == 1 and (a / "model.txt").read_text() == "weights"
    meta = json.loads((a / "cache.json").read_text())
    assert meta["config"] == {"steps": 10} and len(meta["code_hash"]) == 64
    other = bench.cached("base", {"steps": 20}, ["medfm.core.claims"], build, cache_dir=cache)
    assert other != a and len(calls) == 2

    def broken(folder: Path) -> None:
        (folder / "half.txt").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        bench.cached("base", {"steps": 30}, ["medfm.core.claims"], broken, cache_dir=cache)
    finished = sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))
    assert finished == sorted([a.name, other.name])  # an interrupted build is never offered as finished
    seen = []

    def resume(folder: Path) -> None:  # the next attempt gets the interrupted build's folder back
        seen.append((folder / "half.txt").read_text())
        (folder / "model.txt").write_text("weights")

    done = bench.cached("base", {"steps": 30}, ["medfm.core.claims"], resume, cache_dir=cache)
    assert seen == ["x"] and (done / "model.txt").is_file() and not list(cache.glob(".*partial"))


def test_code_hash_follows_the_source(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("x = 1\n")
    h1 = code_hash([f])
    f.write_text("x = 2\n")
    assert code_hash([f]) != h1


def test_run_verb_goes_through_the_cli_and_reports_failures(bench_dir, tmp_path):
    bench = Benchmark("toy", "doc", bench_dir=bench_dir)
    bench.parse([])
    with pytest.raises(RuntimeError, match="exited 2"):
        bench.run_verb("srrg", "no_such_verb", output_dir=tmp_path / "run")
    with bench.tmpdir("x") as d:
        assert d.is_dir()
    assert not d.exists()
