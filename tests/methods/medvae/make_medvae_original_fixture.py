"""Regenerate ``fixtures/medvae_original_*.safetensors`` from the original ``medvae`` package (PyPI 0.1.7).

Not a test. Usage (offline, with the wheel unpacked so the package's heavy ``__init__`` is not run)::

    pip download --no-deps medvae==0.1.7 -d /tmp/w && unzip -q /tmp/w/medvae-0.1.7-py3-none-any.whl -d /tmp/w/x
    python tests/methods/medvae/make_medvae_original_fixture.py /tmp/w/x

For small configurations (weights rounded to float16 to keep the files small) of the original 2D / 3D / 2D+LoRA architectures it stores random weights (seeded, in
the original key layout), a fixed input and the original code's outputs (posterior mean, log-variance,
reconstruction of the mean, projected latent). It also stores the key layout (names and shapes) of the six
published models, built on the meta device. The converter test compares our outputs with these numbers.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent / "fixtures"


def import_original(root: Path):
    pkg = types.ModuleType("medvae")
    pkg.__path__ = [str(root / "medvae")]
    sys.modules["medvae"] = pkg
    from medvae.models import AutoencoderKL_2D, AutoencoderKL_3D
    from medvae.utils.lora import inject_trainable_lora_extended

    return AutoencoderKL_2D, AutoencoderKL_3D, inject_trainable_lora_extended


def ddconfig(ch_mult, z, in_ch, ch=32):
    return {
        "double_z": True,
        "z_channels": z,
        "resolution": 64,
        "in_channels": in_ch,
        "out_ch": in_ch,
        "ch": ch,
        "ch_mult": list(ch_mult),
        "num_res_blocks": 2,
        "attn_resolutions": [],
        "dropout": 0.0,
    }


def randomize(model: torch.nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / max(1, p[0].numel()) ** 0.5))
            p.copy_(p.half().float())  # stored as float16: exactly representable, so outputs stay exact


def outputs(model, x):
    model.eval()
    with torch.no_grad():
        post = model.encode(x)
        rec = model.decode(post.mean)
        proj = model.channel_proj(model.channel_ds(post.mean) + post.mean)
    return {"input": x, "mean": post.mean, "logvar": post.logvar, "reconstruction": rec, "projected": proj}


def main(root: str) -> None:
    ae2d, ae3d, inject = import_original(Path(root))
    gen = torch.Generator().manual_seed(0)
    HERE.mkdir(exist_ok=True)
    cases = {
        "2d": (ae2d, ddconfig((1, 2), 1, 1), torch.rand(2, 1, 16, 16, generator=gen) * 2 - 1, False),
        "2d_lora": (ae2d, ddconfig((1, 1), 3, 3), torch.rand(1, 3, 16, 16, generator=gen) * 2 - 1, True),
        "3d": (ae3d, ddconfig((1, 1), 1, 1), torch.rand(1, 1, 8, 8, 8, generator=gen) * 2 - 1, False),
    }
    for name, (cls, cfg, x, lora) in cases.items():
        model = cls(ddconfig=cfg, embed_dim=cfg["z_channels"])
        if lora:
            inject(model, {"ResnetBlock", "AttnBlock"}, r=4)
        randomize(model, gen)
        tensors = {f"state_dict.{k}": v.half().contiguous() for k, v in model.state_dict().items()}
        tensors.update({f"out.{k}": v.contiguous() for k, v in outputs(model, x).items()})
        meta = {"ddconfig": json.dumps(cfg), "lora": str(lora)}
        save_file(tensors, str(HERE / f"medvae_original_{name}.safetensors"), metadata=meta)
        print(name, sum(v.numel() for k, v in tensors.items() if k.startswith("state_dict")))
    layouts = {}
    published = {
        "medvae_4_1_2d": (ae2d, (1, 2, 4), 1, 1),
        "medvae_4_3_2d": (ae2d, (1, 2, 4), 3, 3),
        "medvae_8_1_2d": (ae2d, (1, 2, 4, 4), 1, 1),
        "medvae_8_4_2d": (ae2d, (1, 2, 4, 4), 4, 3),
        "medvae_4_1_3d": (ae3d, (1, 2, 4), 1, 1),
        "medvae_8_1_3d": (ae3d, (1, 2, 4, 4), 1, 1),
    }
    for name, (cls, mult, z, in_ch) in published.items():
        with torch.device("meta"):
            model = cls(ddconfig=ddconfig(mult, z, in_ch, ch=128), embed_dim=z)
        layouts[name] = {k: list(v.shape) for k, v in model.state_dict().items()}
    (HERE / "medvae_original_layouts.json").write_text(json.dumps(layouts, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
