"""Effect on known ground truth: alignment against the offline judge moves the policy towards correct reports.

Each study gets its correct report (the reference impression) and three candidates of about the same length with
planted, known errors: sides swapped (wrong location), all findings substituted (false plus missed findings), the first finding
substituted.
They go through the real pipeline (`judge` with the offline GREEN judge -> `pairs` -> `train` DPO from the shared
tiny SFT policy). Measured on the full candidate sets, with the policy's own distribution restricted to them
(``softmax`` of its sequence log-probabilities): the expected judge reward must rise, and the planted-error rate
(the policy's most likely candidate carries a planted error) must fall, by margins a broken implementation (no
update, swapped chosen/rejected, wrong sign) cannot reach. Two of the three corruptions per study are never the
rejected response in training, so the test also checks that the preference generalises across error types.
"""

from __future__ import annotations

import json
import re

import numpy as np

from medfm.cli import main
from medfm.methods.chexalign.corruptions import swap_findings, swap_sides


def _candidates(reference: str, rng: np.random.Generator) -> list[str]:
    """The correct report and three of (nearly) the same length with planted errors: every side swapped, every
    finding substituted, the first finding substituted (so the policy's length preference cannot decide)."""
    cands = [reference, swap_sides(reference), swap_findings(reference), swap_findings(reference, count=1)]
    return [cands[i] for i in rng.permutation(4)]


def _expected_reward(policy, studies, cands, rewards):
    from dataclasses import replace

    from medfm.methods.vlm.infer import answer_logprobs
    from medfm.methods.vlm.model import load_vlm

    model, proc = load_vlm(policy)
    lp = np.stack([answer_logprobs(model, proc, [replace(ex, answer="")], c)[0] for ex, c in zip(studies, cands)])
    p = np.exp(lp - lp.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = float((p * rewards).sum(1).mean())
    planted = float((rewards[np.arange(len(rewards)), lp.argmax(1)] < 1.0).mean())
    return expected, planted


def test_dpo_against_the_offline_judge_prefers_correct_reports(cxr_phantoms, sft_policy, tmp_path):
    from medfm.methods.chexalign.sampling import study_record
    from medfm.methods.vlm.data import load_report_examples

    rng = np.random.default_rng(0)
    studies = [
        ex
        for ex in load_report_examples(cxr_phantoms, "all", section="impression")
        if re.search(r"\b(left|right)\b", ex.answer) and swap_findings(ex.answer) != ex.answer
    ][:8]
    assert len(studies) >= 6
    cands = [_candidates(ex.answer, rng) for ex in studies]
    rows = [
        {**study_record(ex), "candidates": c, "tokens": [0] * 4, "errors": [None] * 4} for ex, c in zip(studies, cands)
    ]
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["chexalign", "judge", "--candidates", str(tmp_path / "s"), "--output_dir", str(tmp_path / "j")]) == 0
    judged = [json.loads(x) for x in (tmp_path / "j" / "judged.jsonl").read_text().splitlines()]
    rewards = np.array([r["scores"] for r in judged], dtype=float)
    truth = np.array([[c == ex.answer for c in cs] for ex, cs in zip(studies, cands)])
    assert np.all(rewards[truth] == 1.0) and np.all(rewards[~truth] < 1.0)  # the judge sees every planted error
    assert main(["chexalign", "pairs", "--judged", str(tmp_path / "j"), "--output_dir", str(tmp_path / "p")]) == 0
    assert (
        main(
            [
                "chexalign",
                "train",
                "--config",
                "preset:tiny",
                "--policy",
                str(sft_policy),
                "--pairs",
                str(tmp_path / "p"),
                "--algorithm",
                "dpo",
                "--train.steps",
                "8",
                "--train.batch_size",
                "4",
                "--train.lr",
                "0.01",
                "--seed",
                "0",
                "--output_dir",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )
    before, err_before = _expected_reward(sft_policy, studies, cands, rewards)
    after, err_after = _expected_reward(tmp_path / "t" / "checkpoints" / "final", studies, cands, rewards)
    print(f"expected reward {before:.3f} -> {after:.3f}; planted-error rate {err_before:.2f} -> {err_after:.2f}")
    assert after > before + 0.2
    assert err_after <= err_before - 0.25
