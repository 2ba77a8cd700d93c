"""TRL's DPOTrainer trains the VLM (the CheXalign issue relies on this): one step on a tiny preference set."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medfm.methods.vlm.config import LMSpec, VisionSpec, VLMSpec
from medfm.methods.vlm.model import build_vlm

SPEC = VLMSpec(
    vision=VisionSpec(image_size=16, patch_size=8, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2),
    lm=LMSpec(source="tiny", tiny_hidden=32, tiny_layers=1),
    system_prompt="",
    max_length=64,
)


def test_dpo_trainer_runs_one_step_with_explicit_reference(tmp_path):
    trl = pytest.importorskip("trl")
    import torch
    from datasets import Dataset

    model, proc = build_vlm(SPEC, seed=0)
    ref, _ = build_vlm(SPEC, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)) for _ in range(4)]
    user = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Write the impression."}]}]
    ds = Dataset.from_dict({
        "images": [[im] for im in images],
        "prompt": [user] * 4,
        "chosen": [[{"role": "assistant", "content": [{"type": "text", "text": "Left pleural effusion."}]}]] * 4,
        "rejected": [[{"role": "assistant", "content": [{"type": "text", "text": "No acute findings."}]}]] * 4,
    })  # fmt: skip
    args = trl.DPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=1, report_to=[], logging_steps=1,
        use_cpu=True, save_strategy="no", beta=0.1, max_length=64, learning_rate=1e-3,
    )  # fmt: skip
    trainer = trl.DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=ds, processing_class=proc)
    trainer.train()
    logged = trainer.state.log_history[0]
    assert logged["loss"] == pytest.approx(np.log(2), abs=1e-3)  # policy == reference at step 0: -log sigma(0)
    assert logged["logps/chosen"] < 0 and logged["logps/rejected"] < 0
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert any("multi_modal_projector" in n for n in changed) and any("language_model" in n for n in changed)
