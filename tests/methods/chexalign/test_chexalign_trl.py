"""Our use of TRL gives the spec's formulas: on a tiny vision-language batch, each trainer's loss equals the loss
of :mod:`medfm.methods.chexalign.losses` computed from independently computed sequence log-probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medfm.methods.chexalign import losses
from medfm.methods.chexalign.config import AlignOptions
from medfm.methods.chexalign.pairs import kto_rows
from medfm.methods.chexalign.trainers import build_trainer
from medfm.methods.vlm.config import LMSpec, VisionSpec, VLMSpec
from medfm.methods.vlm.model import build_vlm

pytest.importorskip("trl")

SPEC = VLMSpec(
    vision=VisionSpec(image_size=16, patch_size=8, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2),
    lm=LMSpec(source="tiny", tiny_hidden=32, tiny_layers=1),
    system_prompt="",
    max_length=96,
)
CHOSEN = ["Small right pleural effusion.", "Left apical pneumothorax.", "No acute process.", "Cardiomegaly."]
REJECTED = [
    "No acute cardiopulmonary process seen today.",
    "Right apical pneumothorax.",
    "Edema.",
    "The heart is not enlarged and the lungs are clear.",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trl")
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(4):
        p = tmp / f"{i}.png"
        Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(p)
        pairs.append(
            {
                "id": str(i),
                "images": [str(p)],
                "prompt": "Write the impression.",
                "chosen": CHOSEN[i],
                "rejected": REJECTED[i],
                "chosen_score": 1.0,
                "rejected_score": 0.0,
            }
        )
    return tmp, pairs


def _models():
    model, proc = build_vlm(SPEC, seed=0)
    ref, _ = build_vlm(SPEC, seed=1)  # a different reference, so log-ratios are not all zero
    return model, ref, proc


def _seq_logps(model, batch, prefix=""):
    """(summed completion log-probs, completion lengths) of a TRL batch, from plain logits."""
    import torch

    ids, mask, comp = batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"], batch[f"{prefix}completion_mask"]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, pixel_values=batch["pixel_values"]).logits.double()
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    m = comp[:, 1:].double()
    return (logp * m).sum(1), m.sum(1)


OPTS = AlignOptions(
    steps=1,
    batch_size=4,
    grad_accum=1,
    lr=1e-3,
    warmup_ratio=0.0,
    max_length=96,
    checkpoint_every=100,
    rdpo_alpha=0.05,
    simpo_gamma=0.5,
)


@pytest.mark.parametrize("algorithm", ["dpo", "ipo", "rdpo", "orpo", "simpo"])
def test_paired_trainer_loss_equals_formula(setup, algorithm):
    import torch

    tmp, pairs = setup
    model, ref, proc = _models()
    beta = 0.1 if algorithm != "simpo" else 2.0
    tr = build_trainer(algorithm, model, ref, proc, pairs, OPTS, beta, tmp / algorithm, seed=0, device="cpu")
    assert not any(p.requires_grad for p in tr.model.model.vision_tower.parameters())  # tower frozen
    batch = next(iter(tr.get_train_dataloader()))
    model.eval()
    with torch.no_grad():
        got = float(tr.compute_loss(tr.model, batch))
    lp, n = _seq_logps(model, batch)
    rp, _ = _seq_logps(ref, batch)
    (w, lo), (nw, nl), (rw, rl) = lp.chunk(2), n.chunk(2), rp.chunk(2)
    want = {
        "dpo": lambda: losses.dpo_loss(w, lo, rw, rl, beta),
        "ipo": lambda: losses.ipo_loss(w, lo, rw, rl, nw, nl, beta),
        "rdpo": lambda: losses.rdpo_loss(w, lo, rw, rl, nw, nl, beta, OPTS.rdpo_alpha),
        "orpo": lambda: losses.orpo_loss(w, lo, nw, nl, beta),
        "simpo": lambda: losses.simpo_loss(w, lo, nw, nl, beta, OPTS.simpo_gamma),
    }[algorithm]()
    assert got == pytest.approx(float(want.mean()), rel=1e-4, abs=1e-5)
    if algorithm == "rdpo":  # the length term matters here: it differs from plain DPO on this batch
        assert (nw != nl).any() and abs(got - float(losses.dpo_loss(w, lo, rw, rl, beta).mean())) > 1e-3


def test_kto_trainer_loss_equals_formula(setup):
    import torch

    tmp, pairs = setup
    model, ref, proc = _models()
    tr = build_trainer("kto", model, ref, proc, kto_rows(pairs), OPTS, 0.1, tmp / "kto", seed=0, device="cpu")
    batch = next(iter(tr.get_train_dataloader()))
    model.eval()
    with torch.no_grad():
        got = float(tr.compute_loss(tr.model, batch))
    lp, _ = _seq_logps(model, batch)
    rp, _ = _seq_logps(ref, batch)
    kl_p, _ = _seq_logps(model, batch, "KL_")
    kl_r, _ = _seq_logps(ref, batch, "KL_")
    z0 = float((kl_p - kl_r).mean())
    want = losses.kto_loss(lp, rp, batch["label"].bool(), z0, 0.1)
    assert got == pytest.approx(float(want.mean()), rel=1e-4, abs=1e-5)
