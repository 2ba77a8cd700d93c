"""RadDiff through the real CLI (every verb, tiny presets), bad input, and the effect on known ground truth."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from medfm.cli import main


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """Tiny phantom benchmark (5 pairs) + an offline concept ranker trained on other phantoms."""
    out = tmp_path_factory.mktemp("raddiff") / "prep"
    assert main(["raddiff", "prepare", "--config", "preset:tiny_prepare", "--output_dir", str(out)]) == 0
    return out


def _read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def _write_rows(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def _sets_csv(prepared: Path, tmp_path: Path, pair_index: int = 0, with_reports: bool = True) -> tuple[Path, dict]:
    bench = prepared / "bench"
    pair = json.loads((bench / "raddiffbench.jsonl").read_text().splitlines()[pair_index])
    reports = dict(_read_rows(bench / "reports.csv"))
    path = tmp_path / "sets.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "group", "report"] if with_reports else ["path", "group"])
        for g, key in (("A", "set1_images"), ("B", "set2_images")):
            for rel in pair[key]:
                w.writerow([str(bench / rel), g, reports[rel]] if with_reports else [str(bench / rel), g])
    return path, pair


def _common(prepared: Path, out: Path) -> list[str]:
    return ["--config", "preset:tiny", "--ranker.model", f"concept:{prepared / 'ranker'}", "--output_dir", str(out),
            "--cache_dir", str(prepared / "cache")]  # fmt: skip


def test_prepare_writes_raddiffbench_format(prepared):
    rows = [json.loads(line) for line in (prepared / "bench" / "raddiffbench.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all({"set1", "set2", "set1_images", "set2_images"} <= set(r) for r in rows)
    assert all(not set(r["set1_images"]) & set(r["set2_images"]) for r in rows)  # disjoint sets
    assert len({len(r["set2_images"]) for r in rows}) > 1  # unequal B sizes by design
    assert (prepared / "bench" / "difficulty.csv").read_text().startswith("index,condition_A,condition_B")
    assert (prepared / "report.html").is_file()


def test_describe_finds_effusion_and_reports(prepared, tmp_path, capsys):
    sets, pair = _sets_csv(prepared, tmp_path)
    out = tmp_path / "run"
    code = main(["raddiff", "describe", str(sets), *_common(prepared, out), "--gt_a", pair["set1"], "--gt_b",
                 pair["set2"]])  # fmt: skip
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    top = [r for r in res["tables"]["hypotheses"] if r["iteration"] == 2]
    assert top and "effusion" in top[0]["text"] and top[0]["auroc"] > 0.85
    assert res["metrics"]["acc@1"]["value"] == 1.0
    assert res["metrics"]["ground_truth_auroc"]["value"] > 0.85  # ranker ceiling
    html = (out / "report.html").read_text()
    assert "Top1 examples" in html and "auroc" in html and "data:image/png" in html
    # a second run reuses every image embedding (never computed twice across runs)
    out2 = tmp_path / "run2"
    assert main(["raddiff", "describe", str(sets), *_common(prepared, out2)]) == 0
    meta = json.loads((out2 / "results.json").read_text())["meta"]
    assert meta["embeddings_computed"] == 0 and meta["embeddings_cached"] > 0
    assert main(["raddiff", "report", str(out)]) == 0


def test_evaluate_effect_on_known_ground_truth(prepared, tmp_path):
    """Easy pairs (finding present vs absent, devices) are found; a ranker with permuted labels is not."""
    out = tmp_path / "eval"
    bench = str(prepared / "bench" / "raddiffbench.jsonl")
    assert main(["raddiff", "evaluate", bench, *_common(prepared, out), "--bootstrap", "50"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["metrics"]["acc@1"]["value"] >= 0.8 and res["metrics"]["acc@5"]["value"] >= 0.8
    assert res["metrics"]["ground_truth_auroc"]["value"] > 0.8
    rows = res["tables"]["pairs"]
    assert {"acc@1_iter1", "acc@1_iter2"} <= set(rows[0])
    # control: the same pipeline with A and B images shuffled between sets cannot find the truth
    from medfm.methods.raddiff.data import read_raddiffbench

    pairs = read_raddiffbench(bench)
    rng = np.random.default_rng(0)
    shuffled = tmp_path / "shuffled.jsonl"
    with open(shuffled, "w") as fh:
        for line in (prepared / "bench" / "raddiffbench.jsonl").read_text().splitlines():
            row = json.loads(line)
            pool = row["set1_images"] + row["set2_images"]
            rng.shuffle(pool)
            row["set1_images"], row["set2_images"] = pool[: len(row["set1_images"])], pool[len(row["set1_images"]) :]
            fh.write(json.dumps(row) + "\n")
    for f in ("reports.csv", "difficulty.csv"):
        (tmp_path / f).write_text((prepared / "bench" / f).read_text())
    out_s = tmp_path / "eval_shuffled"
    assert main(["raddiff", "evaluate", str(shuffled), "--image_root", str(prepared / "bench"),
                 *_common(prepared, out_s), "--bootstrap", "50"]) == 0  # fmt: skip
    res_s = json.loads((out_s / "results.json").read_text())
    assert res_s["metrics"]["ground_truth_auroc"]["value"] < 0.75
    assert res_s["metrics"]["acc@1"]["value"] <= res["metrics"]["acc@1"]["value"] - 0.4
    assert len(pairs) == 5


def test_dry_run_and_bad_input(prepared, tmp_path, capsys):
    sets, _ = _sets_csv(prepared, tmp_path)
    assert main(["raddiff", "describe", str(sets), *_common(prepared, tmp_path / "d"), "--dry_run", "true"]) == 0
    assert "set A:" in capsys.readouterr().out and not (tmp_path / "d" / "results.json").exists()
    # no ranker -> usage error (exit 2)
    assert main(["raddiff", "describe", str(sets), "--output_dir", str(tmp_path / "x")]) == 2
    # unreadable images are dropped with a warning; a set with none left is a data error (exit 3)
    rows = _read_rows(sets)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    rows.append([str(bad), "A", "x"])
    broken = tmp_path / "broken.csv"
    _write_rows(broken, rows)
    assert main(["raddiff", "describe", str(broken), *_common(prepared, tmp_path / "b"), "--dry_run", "true"]) == 0
    assert "unreadable" in capsys.readouterr().out
    only_bad = tmp_path / "only_bad.csv"
    _write_rows(only_bad, [rows[0], [str(bad), "A", ""], [str(bad), "A", ""],
                                                           *rows[-4:-1]])  # fmt: skip
    assert main(["raddiff", "describe", str(only_bad), *_common(prepared, tmp_path / "c")]) == 3
    # very different set sizes: runs, with a warning in the results
    sizes = tmp_path / "sizes.csv"
    a_rows = [r for r in rows[1:] if r[1] == "A"][:2]
    b_rows = [r for r in rows[1:] if r[1] == "B"] * 12
    _write_rows(sizes, [rows[0], *a_rows, *b_rows])
    assert main(["raddiff", "describe", str(sizes), *_common(prepared, tmp_path / "s")]) == 0
    meta = json.loads((tmp_path / "s" / "results.json").read_text())["meta"]
    assert any("differ a lot" in w for w in meta["warnings"])
    # reports mode without reports -> data error
    no_rep, _ = _sets_csv(prepared, tmp_path / "nr" if (tmp_path / "nr").mkdir() is None else tmp_path, 0, False)
    assert main(["raddiff", "describe", str(no_rep), *_common(prepared, tmp_path / "r"), "--proposer.mode",
                 "reports"]) == 3  # fmt: skip


def test_backend_with_no_hypotheses_exits_1_with_outputs(prepared, tmp_path):
    sets, _ = _sets_csv(prepared, tmp_path)
    script = tmp_path / "empty.jsonl"
    script.write_text("")
    out = tmp_path / "empty"
    code = main(["raddiff", "describe", str(sets), *_common(prepared, out), "--proposer.backend",
                 f"scripted:{script}"])  # fmt: skip
    assert code == 1
    res = json.loads((out / "results.json").read_text())
    assert res["metrics"]["hypotheses"]["value"] == 0
    assert any("no hypotheses" in w for w in res["meta"]["warnings"])
