"""Shared fixture: a tiny CLIP fine-tuned on chest X-ray phantoms whose corner marker tracks pleural effusion."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def audited(tmp_path_factory):
    """A tiny CheXficient CLIP trained (standard CLIP loss) on 64 px CXR phantoms with the marker planted at V=0.95.

    Returns a dict: model (eval mode), model_dir (save_pretrained folder), train (AuditSet), eval (AuditSet, marker
    independent of the label).
    """
    import torch

    from medfm.methods.ravl.data import cxr_audit_set
    from medfm.methods.ravl.mitigate import finetune, tiny_clip

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one thread avoids oversubscription
    try:
        train = cxr_audit_set(560, seed=0, size=64, cramers_v=0.95)
        ev = cxr_audit_set(420, seed=1, size=64, cramers_v=0.0)
        model = finetune(tiny_clip(64, seed=0), train, "standard", steps=110, batch_size=48, lr=1e-3, seed=0)
        out = tmp_path_factory.mktemp("ravl") / "audited"
        model.save_pretrained(out)
    finally:
        torch.set_num_threads(threads)
    return {"model": model, "model_dir": out, "train": train, "eval": ev}
