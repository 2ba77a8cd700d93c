"""End-to-end smoke runs of every ``medfm smmile`` verb through the real CLI, and one real SmolLM2 call."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medfm.cli import main


@pytest.fixture(scope="module")
def problem_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("smmile") / "problems"
    assert (
        main(["smmile", "prepare", "--n_problems", "8", "--size", "48", "--pool_size", "150", "--output_dir", str(out)])
        == 0
    )
    return out


def test_help_is_torch_free():
    code = "import sys; from medfm.cli import main; main(['smmile', 'run', '--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("False")


def test_prepare_writes_both_layouts(problem_dir):
    assert (problem_dir / "problems.jsonl").is_file() and (problem_dir / "truth.jsonl").is_file()
    assert (problem_dir / "data" / "train-00000-of-00001.parquet").is_file()
    assert (problem_dir / "report.html").is_file()
    from medfm.methods.smmile.data import load_problems

    a, b = load_problems(problem_dir / "problems.jsonl"), load_problems(problem_dir / "data")
    assert [p.problem_id for p in a.problems] == [p.problem_id for p in b.problems] and len(a.problems) == 8
    assert [r.answer for r in a.problems[0].rows] == [r.answer for r in b.problems[0].rows]


def test_run_resume_score_report(problem_dir, tmp_path, capsys):
    rows = [json.loads(x) for x in (problem_dir / "problems.jsonl").read_text().splitlines()]
    script = tmp_path / "answers.jsonl"
    # every plain question gets the same answer; MCQA prompts are not scripted -> per-item errors, counted
    script.write_text(
        "".join(json.dumps({"prompt": q, "response": "Yes."}) + "\n" for q in {r["question"] for r in rows})
    )
    run_dir = tmp_path / "run"
    args = ["smmile", "run", "--data", str(problem_dir), "--backend", f"scripted:{script}", "--output_dir",
            str(run_dir), "--conditions", "zero_shot,icl,permutations,random_noise,order_last,order_not_last",
            "--tasks", "open,mcqa", "--judge", "contains", "--perm_cap", "2", "--max_tokens", "8"]  # fmt: skip
    assert main([*args, "--dry_run"]) == 0
    assert "permutations:" in capsys.readouterr().out
    assert main(args) == 0
    res = json.loads((run_dir / "results.json").read_text())
    assert res["metrics"]["icl/open/em"]["n"] == 8
    assert res["metrics"]["icl/mcqa/mcqa"]["value"] == 0.0  # every MCQA call failed ...
    assert "8 failed calls scored wrong" in res["metrics"]["icl/mcqa/mcqa"]["note"]  # ... and is reported
    assert (run_dir / "result_scripted_ICL_open.csv").is_file() and (
        run_dir / "result_scripted_0-shot_mcqa.csv"
    ).is_file()
    assert (run_dir / "report.html").is_file() and (run_dir / "plots" / "accuracy_em.png").is_file()
    lines = (run_dir / "responses" / "icl_open.jsonl").read_text().count("\n")
    # resume: finished instances are not asked again (failed MCQA calls are retried)
    assert main(args) == 0
    assert (run_dir / "responses" / "icl_open.jsonl").read_text().count("\n") == lines
    assert main(["smmile", "score", str(run_dir), "--output_dir", str(tmp_path / "score")]) == 0
    scored = json.loads((tmp_path / "score" / "results.json").read_text())
    assert scored["metrics"]["result_scripted_ICL_open/em"]["value"] == pytest.approx(
        res["metrics"]["icl/open/em"]["value"]
    )
    # --limit scores only the first rows: accuracy and n describe the same rows
    assert main(["smmile", "score", str(run_dir), "--limit", "3", "--output_dir", str(tmp_path / "score3")]) == 0
    lim = json.loads((tmp_path / "score3" / "results.json").read_text())["metrics"]["result_scripted_ICL_open/em"]
    assert lim["n"] == 3
    assert main(["smmile", "report", str(run_dir), str(run_dir), "--output_dir", str(tmp_path / "rep")]) == 0
    assert "Table 1" in (tmp_path / "rep" / "report.html").read_text()


def test_bad_inputs_exit_with_one_line(tmp_path, capsys):
    assert main(["smmile", "run", "--data", str(tmp_path / "nope"), "--backend", "scripted:x"]) == 3
    assert main(["smmile", "run", "--conditions", "shuffled", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("medfm: error: unknown condition")


def test_real_smollm2_text_only_call(problem_dir):
    from medfm.backends.hf import shared_backend
    from medfm.methods.smmile.conditions import expand
    from medfm.methods.smmile.data import load_problems
    from medfm.methods.smmile.harness import HarnessOptions, build_request, run_instances

    lm = shared_backend("default", device="cpu", threads=1)
    problems = load_problems(problem_dir).problems[:2]
    inst, _ = expand(problems, "icl")
    opts = HarnessOptions(text_only=True, max_tokens=6, answer_extraction="first_line", batch_size=2)
    req, _ = build_request(inst[0], opts)
    assert not req.has_images and problems[0].examples[0].answer in req.messages[-1].content
    recs = run_instances(inst, lm, opts)
    assert len(recs) == 2 and all(r["error"] is None and r["full_response"] for r in recs)
    assert all(r["em"] in (0.0, 1.0) for r in recs)


def test_run_with_a_saved_medfm_vlm_sees_every_example_image(problem_dir, tmp_path):
    """`medfm smmile run --backend hf:<saved VLM>`: multimodal ICL requests (one image per example + the query)
    reach the VLM; a VLM built for fewer images gets per-item errors that are counted, not dropped."""
    import torch

    from medfm.methods.smmile.conditions import expand
    from medfm.methods.smmile.data import load_problems
    from medfm.methods.smmile.harness import HarnessOptions, build_request
    from medfm.methods.vlm.config import LMSpec, VisionSpec, VLMSpec
    from medfm.methods.vlm.model import build_vlm, save_vlm

    def saved(max_images: int, name: str):
        spec = VLMSpec(vision=VisionSpec(image_size=48, patch_size=16, hidden_size=32, intermediate_size=64,
                                         num_layers=1, num_heads=2),
                       lm=LMSpec(source="tiny", tiny_hidden=32, tiny_layers=1), system_prompt="",
                       max_images=max_images, max_length=2048)  # fmt: skip
        torch.manual_seed(0)
        return save_vlm(*build_vlm(spec, seed=0), tmp_path / name)

    problems = load_problems(problem_dir).problems
    inst, _ = expand(problems[:1], "icl")
    req, _ = build_request(inst[0], HarnessOptions())
    assert sum(len(m.images) for m in req.messages) == len(problems[0].rows)  # examples + query, each with its image

    ok, small = saved(16, "vlm16"), saved(1, "vlm1")
    common = ["--data", str(problem_dir), "--conditions", "zero_shot,icl", "--tasks", "open", "--max_tokens", "4",
              "--judge", "contains"]  # fmt: skip
    assert main(["smmile", "run", "--backend", f"hf:{ok}", "--output_dir", str(tmp_path / "r16"), *common]) == 0
    res = json.loads((tmp_path / "r16" / "results.json").read_text())["metrics"]
    assert res["icl/open/em"]["n"] == len(problems) and "failed" not in res["icl/open/em"].get("note", "")
    assert main(["smmile", "run", "--backend", f"hf:{small}", "--output_dir", str(tmp_path / "r1"), *common]) == 0
    res1 = json.loads((tmp_path / "r1" / "results.json").read_text())["metrics"]
    assert res1["icl/open/em"]["value"] == 0.0 and f"{len(problems)} failed calls" in res1["icl/open/em"]["note"]
    assert "failed" not in res1["zero_shot/open/em"].get("note", "")  # one image: within the limit
