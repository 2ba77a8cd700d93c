"""Every verb through the real CLI on the tiny preset (sample -> judge -> pairs -> train -> evaluate), resumable
sampling, the LLM judge through a scripted backend, and bad input (ties, empty or unparseable judge output)."""

from __future__ import annotations

import json

import pytest

from medfm.cli import main
from medfm.methods.chexalign.green import GreenCounts, clean_report, format_green, make_prompt


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _res(run):
    return json.loads((run / "results.json").read_text())


@pytest.fixture(scope="module")
def sampled(cxr_phantoms, sft_policy, tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    argv = [
        "chexalign",
        "sample",
        "--policy",
        str(sft_policy),
        "--data.reports",
        str(cxr_phantoms),
        "--data.split",
        "all",
        "--limit",
        "4",
        "--n",
        "4",
        "--max_new_tokens",
        "8",
        "--batch_size",
        "2",
        "--seed",
        "1",
        "--output_dir",
        str(out),
    ]
    assert main([*argv, "--dry_run", "true"]) == 0 and not (out / "candidates.jsonl").exists()
    assert main(argv) == 0
    return out, argv


def test_sample_writes_n_candidates_and_resumes_identically(sampled):
    out, argv = sampled
    recs = _rows(out / "candidates.jsonl")
    assert len(recs) == 4 and all(len(r["candidates"]) == 4 and r["reference"] and r["images"] for r in recs)
    assert all(t <= 8 for r in recs for t in r["tokens"])
    # interrupt after the first chunk (2 studies): a rerun resamples only the rest and gets the same candidates
    partial = out / "candidates.partial.jsonl"
    partial.write_text("".join(partial.read_text().splitlines(keepends=True)[:2]) + '{"torn": ')
    (out / "candidates.jsonl").unlink()
    assert main(argv) == 0
    again = _rows(out / "candidates.jsonl")
    assert [r["candidates"] for r in again] == [r["candidates"] for r in recs]


def test_judge_pairs_train_evaluate(sampled, sft_policy, cxr_phantoms, tmp_path):
    out, _ = sampled
    assert main(["chexalign", "judge", "--candidates", str(out), "--output_dir", str(tmp_path / "jo")]) == 0
    judged = _rows(tmp_path / "jo" / "judged.jsonl")
    assert all(len(r["scores"]) == 4 and all(0.0 <= s <= 1.0 for s in r["scores"]) for r in judged)
    assert (
        main(
            [
                "chexalign",
                "judge",
                "--candidates",
                str(out / "candidates.jsonl"),
                "--judge.kind",
                "bertscore",
                "--judge.length_control",
                "true",
                "--output_dir",
                str(tmp_path / "jb"),
            ]
        )
        == 0
    )
    assert main(["chexalign", "pairs", "--judged", str(tmp_path / "jb"), "--output_dir", str(tmp_path / "p")]) == 0
    pairs = _rows(tmp_path / "p" / "pairs.jsonl")
    assert pairs and all(p["chosen_score"] > p["rejected_score"] for p in pairs)
    assert len(_rows(tmp_path / "p" / "kto.jsonl")) == 2 * len(pairs)
    run = tmp_path / "t"
    common = [
        "chexalign",
        "train",
        "--config",
        "preset:tiny",
        "--policy",
        str(sft_policy),
        "--pairs",
        str(tmp_path / "p"),
        "--algorithm",
        "rdpo",
        "--train.steps",
        "2",
        "--output_dir",
        str(run),
    ]
    assert main([*common, "--dry_run", "true"]) == 0 and not (run / "checkpoints").exists()
    assert main(common) == 0
    final = run / "checkpoints" / "final"
    assert main(["card", "validate", str(final)]) == 0
    card = json.loads((final / "card.json").read_text())
    assert card["training"]["paradigm"] == ["preference-alignment"] and card["data"]["size"] == len(pairs)
    res = _res(run)["groups"]["beta=0.1"]
    assert res["first_loss"]["value"] > 0 and (run / "report.html").is_file()
    assert (
        main(
            [
                "chexalign",
                "evaluate",
                "--model",
                str(final),
                "--baseline",
                str(sft_policy),
                "--data.reports",
                str(cxr_phantoms),
                "--data.split",
                "all",
                "--limit",
                "3",
                "--max_new_tokens",
                "8",
                "--bootstrap",
                "50",
                "--output_dir",
                str(tmp_path / "ev"),
            ]
        )
        == 0
    )
    ev = _res(tmp_path / "ev")["metrics"]
    for name in (
        "green",
        "lc_green",
        "finding_f1",
        "f1_srr_bert",
        "bertscore",
        "rouge_l",
        "bleu4",
        "length_ratio",
        "delta_green",
        "length_ratio_vs_sft",
        "tax_vqa_accuracy",
        "delta_tax_vqa_accuracy",
    ):
        assert name in ev, name
    assert 0.0 <= ev["tax_vqa_accuracy"]["value"] <= 1.0 and (tmp_path / "ev" / "report.html").is_file()


def test_llm_judge_through_a_backend_and_unparseable_output(sampled, tmp_path):
    out, _ = sampled
    recs = _rows(out / "candidates.jsonl")
    script = []
    for i, r in enumerate(recs):
        for k, c in enumerate(r["candidates"]):
            prompt = make_prompt(clean_report(r["reference"]), clean_report(c))
            if i == 0:  # the judge rambles for every candidate of the first study
                answer = "I think the candidate is reasonable overall."
            else:
                answer = format_green(GreenCounts(matched=k + 1, matched_findings=["x"] * (k + 1)))
                answer = answer.replace(
                    "(a) False report of a finding in the candidate: 0.",
                    f"(a) False report of a finding in the candidate: {i}.",
                )
            script.append(json.dumps({"prompt": prompt, "response": answer}))
    (tmp_path / "judge.jsonl").write_text("\n".join(script) + "\n")
    assert (
        main(
            [
                "chexalign",
                "judge",
                "--candidates",
                str(out),
                "--judge.kind",
                "llm",
                "--judge.backend",
                f"scripted:{tmp_path / 'judge.jsonl'}",
                "--output_dir",
                str(tmp_path / "j"),
            ]
        )
        == 0
    )
    judged = _rows(tmp_path / "j" / "judged.jsonl")
    assert judged[0]["scores"] == [None] * 4 and "unparseable" in judged[0]["judgements"][0]["error"]
    assert judged[1]["scores"] == pytest.approx([(k + 1) / (k + 2) for k in range(4)])  # M=k+1, E=1
    assert _res(tmp_path / "j")["metrics"]["unparsed_rate"]["value"] == pytest.approx(0.25)
    assert main(["chexalign", "pairs", "--judged", str(tmp_path / "j"), "--output_dir", str(tmp_path / "p")]) == 0
    meta = _res(tmp_path / "p")["meta"]
    assert meta["pairs"] == 3 and meta["dropped_unscored"] == 1
    assert all(p["chosen"] == r["candidates"][3] for p, r in zip(_rows(tmp_path / "p" / "pairs.jsonl"), recs[1:]))


def test_bad_input_ties_and_missing_files(sampled, sft_policy, tmp_path, capsys):
    out, _ = sampled
    tied = [{**r, "candidates": [""] * 4, "scores": [0.0] * 4} for r in _rows(out / "candidates.jsonl")]
    (tmp_path / "judged.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tied))
    assert main(["chexalign", "pairs", "--judged", str(tmp_path), "--output_dir", str(tmp_path / "p")]) == 0
    assert _res(tmp_path / "p")["metrics"]["tie_drop_rate"]["value"] == 1.0
    code = main(
        [
            "chexalign",
            "train",
            "--policy",
            str(sft_policy),
            "--pairs",
            str(tmp_path / "p"),
            "--output_dir",
            str(tmp_path / "t"),
        ]
    )
    assert code == 3 and "no pairs" in capsys.readouterr().err
    assert (
        main(["chexalign", "judge", "--candidates", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "j")]) == 3
    )
    assert (
        main(
            [
                "chexalign",
                "sample",
                "--policy",
                str(sft_policy),
                "--data.reports",
                str(tmp_path / "x.csv"),
                "--n",
                "1",
                "--output_dir",
                str(tmp_path / "s"),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "chexalign",
                "judge",
                "--candidates",
                str(out),
                "--judge.kind",
                "llm",
                "--output_dir",
                str(tmp_path / "j2"),
            ]
        )
        == 2
    )  # llm judge without a backend


def test_sample_through_a_backend_is_cached(cxr_phantoms, tmp_path):
    from medfm.methods.chexalign.config import DEFAULT_PROMPT

    script = tmp_path / "policy.jsonl"
    script.write_text(json.dumps({"prompt": DEFAULT_PROMPT, "response": "Small left pleural effusion."}) + "\n")
    argv = [
        "chexalign",
        "sample",
        "--backend",
        f"scripted:{script}",
        "--data.reports",
        str(cxr_phantoms),
        "--data.split",
        "all",
        "--limit",
        "3",
        "--n",
        "2",
        "--output_dir",
        str(tmp_path / "s"),
    ]
    assert main(argv) == 0
    recs = _rows(tmp_path / "s" / "candidates.jsonl")
    assert [r["candidates"] for r in recs] == [["Small left pleural effusion."] * 2] * 3
    assert (tmp_path / "s" / "backend_cache.sqlite").is_file()
    assert main(["chexalign", "sample", "--data.reports", str(cxr_phantoms), "--output_dir", str(tmp_path / "x")]) == 2
