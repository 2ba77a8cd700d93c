"""Pretrained image towers for the VLM from medfm's own encoders.

:func:`chexficient_tower` turns the image side of a saved CheXficient dual encoder (an open_clip
``VisionTransformer``) into a transformers ``CLIPVisionModel`` with the same weights, so that the VLM stays a plain
``LlavaForConditionalGeneration`` (save/load/generate/TRL unchanged) while its tower is the contrastively pretrained
one. This is the LLaVA recipe on our data: a CLIP-style tower pretrained on image–report pairs, then a projector
and the LM trained on instructions.

The mapping is exact (open_clip's ViT is the OpenAI CLIP ViT that ``CLIPVisionModel`` was written for):
``conv1`` -> patch embedding (no bias), ``class_embedding``/``positional_embedding`` -> embeddings, ``ln_pre`` ->
``pre_layrnorm``, each residual block's fused ``in_proj`` -> ``q/k/v_proj``, ``c_fc``/``c_proj`` -> ``fc1``/``fc2``,
``ln_post`` -> ``post_layernorm``. open_clip's ``proj`` (into the joint space) is not part of ``CLIPVisionModel``;
:func:`open_clip_projection` returns it for checks. Only the plain ViT (``image_tower.kind: vit`` with CLS pooling,
no layer scale, no attentional pooler) converts; other towers are a clear error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medfm.core.errors import UsageError


def _check_convertible(visual: Any) -> None:
    from open_clip.transformer import VisionTransformer

    if not isinstance(visual, VisionTransformer):
        raise UsageError(
            f"the CheXficient image tower is a {type(visual).__name__}; only the ViT tower (image_tower.kind vit) "
            "converts to a VLM tower"
        )
    block = visual.transformer.resblocks[0]
    problems = []
    if getattr(visual, "attn_pool", None) is not None:
        problems.append("attentional pooling")
    if getattr(visual, "pool_type", "tok") != "tok" or getattr(visual, "final_ln_after_pool", False):
        problems.append(f"pool_type {getattr(visual, 'pool_type', '?')}")
    if type(getattr(block, "ls_1", None)).__name__ != "Identity":
        problems.append("layer scale")
    if type(getattr(visual, "ln_pre", None)).__name__ == "Identity":
        problems.append("no ln_pre")
    act = getattr(block.mlp, "gelu", None)
    if type(act).__name__ not in ("GELU", "QuickGELU"):
        problems.append(f"activation {type(act).__name__}")
    if problems:
        raise UsageError(f"the CheXficient ViT uses {', '.join(problems)}, which CLIPVisionModel lacks")


def open_clip_vit_to_clip_vision(visual: Any, image_size: int) -> tuple[Any, dict[str, Any]]:
    """``(CLIPVisionConfig, CLIPVisionModel state dict)`` with the weights of an open_clip ``VisionTransformer``."""
    import torch
    from transformers import CLIPVisionConfig

    _check_convertible(visual)
    width = int(visual.conv1.out_channels)
    patch = int(visual.conv1.kernel_size[0])
    blocks = visual.transformer.resblocks
    heads = int(blocks[0].attn.num_heads)
    act = "quick_gelu" if type(blocks[0].mlp.gelu).__name__ == "QuickGELU" else "gelu"
    cfg = CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=int(blocks[0].mlp.c_fc.out_features),
        num_hidden_layers=len(blocks),
        num_attention_heads=heads,
        image_size=int(image_size),
        patch_size=patch,
        num_channels=int(visual.conv1.in_channels),
        hidden_act=act,
        layer_norm_eps=float(visual.ln_pre.eps),
        projection_dim=int(visual.proj.shape[1]) if visual.proj is not None else width,
    )
    src = {k: v.detach().clone() for k, v in visual.state_dict().items()}
    out: dict[str, Any] = {
        "embeddings.patch_embedding.weight": src["conv1.weight"],
        "embeddings.class_embedding": src["class_embedding"],
        "embeddings.position_embedding.weight": src["positional_embedding"],
        "pre_layrnorm.weight": src["ln_pre.weight"],
        "pre_layrnorm.bias": src["ln_pre.bias"],
        "post_layernorm.weight": src["ln_post.weight"],
        "post_layernorm.bias": src["ln_post.bias"],
    }
    for i in range(len(blocks)):
        a, b = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        qkv_w = src[a + "attn.in_proj_weight"].chunk(3, dim=0)
        qkv_b = src[a + "attn.in_proj_bias"].chunk(3, dim=0)
        for name, w, bias in zip(("q_proj", "k_proj", "v_proj"), qkv_w, qkv_b):
            out[b + f"self_attn.{name}.weight"] = w.clone()
            out[b + f"self_attn.{name}.bias"] = bias.clone()
        pairs = {
            "attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
            "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
        }  # fmt: skip
        for s, d in pairs.items():
            out[b + d + ".weight"] = src[a + s + ".weight"]
            out[b + d + ".bias"] = src[a + s + ".bias"]
    # transformers < 5 nests the modules under ``vision_model.``; name the keys as this version's class does
    from transformers import CLIPVisionModel

    with torch.device("meta"):
        names = set(CLIPVisionModel(cfg).state_dict())
    if not set(out) <= names:
        out = {f"vision_model.{k}": v for k, v in out.items()}
    missing = names - set(out)
    if missing:
        raise UsageError(f"CLIPVisionModel expects weights the open_clip ViT lacks: {sorted(missing)[:4]}")
    return cfg, out


def chexficient_tower(source: str | Path) -> tuple[Any, dict[str, Any], Any]:
    """``(CLIPVisionConfig, state dict, CLIPImageProcessor)`` from a saved CheXficient model folder.

    The image processor repeats CheXficient's preprocessing: resize to the tower's square input, greyscale
    replicated to RGB, CLIP mean/std.
    """
    from transformers import CLIPImageProcessor

    from medfm.methods.chexficient.model import CLIP_MEAN, CLIP_STD, CheXficientModel

    model = CheXficientModel.from_pretrained(source)
    cfg, state = open_clip_vit_to_clip_vision(model.visual, model.image_size)
    proc = CLIPImageProcessor(
        do_resize=True,
        size={"height": model.image_size, "width": model.image_size},
        do_center_crop=False,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_convert_rgb=True,
    )
    return cfg, state, proc


def open_clip_projection(source: str | Path) -> Any:
    """The ``(width, D)`` projection of a saved CheXficient ViT into its joint space (for parity checks)."""
    from medfm.methods.chexficient.model import CheXficientModel

    return CheXficientModel.from_pretrained(source).visual.proj.detach().clone()
