"""Load checkpoints of the original ``medvae`` package (``MVAE(model_name, modality)``) into :class:`MedVAE`.

The original state dict (``ckpt["state_dict"]``) uses the CompVis LDM names: ``encoder.conv_in``,
``encoder.down.{i}.block.{j}.{norm1,conv1,norm2,conv2,nin_shortcut}``, ``encoder.down.{i}.downsample.conv``,
``encoder.mid.{block_1,attn_1,block_2}``, ``encoder.norm_out``, ``encoder.conv_out``, the decoder's
``up.{i}.block.{j}`` / ``up.{i}.upsample.conv`` (executed from the deepest level ``i = L-1`` down to 0),
attention ``q, k, v, proj_out`` as 1x1 convs, ``quant_conv``, ``post_quant_conv``, ``channel_ds.{0,2,4}`` and
``channel_proj``. The RGB models (``medvae_4_3_2d``, ``medvae_8_4_2d``) carry LoRA adapters (r=4) injected into
every conv/linear of their ResNet and attention blocks (``X.conv.weight`` + ``X.lora_down.weight`` +
``X.lora_up.weight``); they are merged exactly into plain weights, ``W + up @ down`` (scale 1).

:func:`original_to_medfm` walks our MONAI block lists in execution order beside the CompVis names, so the
mapping is derived from the architecture rather than typed out key by key.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medfm.core.errors import DataError
from medfm.methods.medvae.model import MedVAE

log = logging.getLogger(__name__)

#: ``model_name`` of the original package -> our preset of the same shape.
ORIGINAL_MODEL_NAMES: dict[str, str] = {
    "medvae_4_1_2d": "medvae_4_1_2d",
    "medvae_4_3_2d": "medvae_4_3_2d",
    "medvae_8_1_2d": "medvae_8_1_2d",
    "medvae_8_4_2d": "medvae_8_4_2d",
    "medvae_4_1_3d": "medvae_4_1_3d",
    "medvae_8_1_3d": "medvae_8_1_3d",
}


def merge_lora(sd: Mapping[str, torch.Tensor], scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Fold LoRA adapters into plain weights: ``X.conv.weight + scale * (lora_up o lora_down)`` -> ``X.weight``.

    ``lora_down`` is a full k x k conv (C_in -> r) and ``lora_up`` a 1x1 conv (r -> C_out), so their composition is
    the k x k conv with kernel ``einsum(up[o, r], down[r, i, ...])``; for linear layers it is ``up @ down``.
    """
    out: dict[str, torch.Tensor] = {}
    bases = {k[: -len(".lora_down.weight")] for k in sd if k.endswith(".lora_down.weight")}
    for key, value in sd.items():
        base = next((b for b in bases if key.startswith(b + ".")), None)
        if base is None:
            out[key] = value
            continue
        rest = key[len(base) + 1 :]
        if rest.startswith(("lora_down.", "lora_up.", "selector.")):
            continue
        inner = rest.split(".", 1)  # conv.weight / linear.bias
        if inner[0] not in ("conv", "linear"):
            out[key] = value
            continue
        name = f"{base}.{inner[1]}"
        if inner[1] == "weight":
            down = sd[f"{base}.lora_down.weight"].float()
            up = sd[f"{base}.lora_up.weight"].float()
            delta = torch.einsum("or,ri...->oi...", up.reshape(up.shape[0], up.shape[1]), down)
            out[name] = (value.float() + scale * delta).to(value.dtype)
        else:
            out[name] = value
    return out


def _compvis_units(model: MedVAE) -> Iterator[tuple[str, str, nn.Module]]:
    """(our prefix, original prefix, our module) for every parameterised unit, in execution order."""
    from monai.networks.blocks import SpatialAttentionBlock
    from monai.networks.nets.autoencoderkl import AEKLDownsample, AEKLResBlock

    levels = len(model.init_kwargs["channels"])
    n_enc = model.init_kwargs["num_res_blocks"]
    n_dec = n_enc + 1

    def names_encoder() -> Iterator[str]:
        yield "conv_in"
        for i in range(levels):
            for j in range(n_enc):
                yield f"down.{i}.block.{j}"
            if i != levels - 1:
                yield f"down.{i}.downsample"
        if model.init_kwargs["attention"]:
            yield from ("mid.block_1", "mid.attn_1", "mid.block_2")
        yield from ("norm_out", "conv_out")

    def names_decoder() -> Iterator[str]:
        yield "conv_in"
        if model.init_kwargs["attention"]:
            yield from ("mid.block_1", "mid.attn_1", "mid.block_2")
        for i in reversed(range(levels)):
            for j in range(n_dec):
                yield f"up.{i}.block.{j}"
            if i != 0:
                yield f"up.{i}.upsample"
        yield from ("norm_out", "conv_out")

    for part, names in (("encoder", names_encoder()), ("decoder", names_decoder())):
        blocks = [(i, b) for i, b in enumerate(getattr(model, part).blocks) if not isinstance(b, nn.SiLU)]
        names = list(names)
        if len(names) != len(blocks):
            raise RuntimeError(f"{part}: {len(blocks)} blocks but {len(names)} original units")
        for (i, block), name in zip(blocks, names):
            kinds = (AEKLResBlock, AEKLDownsample, SpatialAttentionBlock, nn.GroupNorm)
            if not isinstance(block, kinds) and not hasattr(block, "conv") and not hasattr(block, "postconv"):
                raise RuntimeError(f"{part}.blocks.{i}: unexpected module {type(block).__name__}")
            yield f"{part}.blocks.{i}", f"{part}.{name}", block


def _unit_key(ours: str, attention: bool) -> str:
    """Original sub-key for one of our sub-keys inside a unit (``conv1.conv.weight`` -> ``conv1.weight``)."""
    if attention:
        return {
            "norm.weight": "norm.weight",
            "norm.bias": "norm.bias",
            "attn.to_q.weight": "q.weight",
            "attn.to_q.bias": "q.bias",
            "attn.to_k.weight": "k.weight",
            "attn.to_k.bias": "k.bias",
            "attn.to_v.weight": "v.weight",
            "attn.to_v.bias": "v.bias",
            "attn.out_proj.weight": "proj_out.weight",
            "attn.out_proj.bias": "proj_out.bias",
        }[ours]
    if ours.startswith("postconv.conv."):  # MONAI Upsample's conv -> CompVis upsample.conv
        return "conv." + ours.rsplit(".", 1)[-1]
    return ours.replace(".conv.", ".")  # conv1.conv.weight -> conv1.weight, nin_shortcut.conv.bias -> ...


def key_mapping(model: MedVAE) -> dict[str, str]:
    """Our state-dict key -> original key, for every tensor of ``model``."""
    from monai.networks.blocks import SpatialAttentionBlock
    from monai.networks.nets.autoencoderkl import AEKLDownsample

    mapping: dict[str, str] = {}
    for ours, theirs, block in _compvis_units(model):
        is_attn = isinstance(block, SpatialAttentionBlock)
        for sub in block.state_dict():
            if isinstance(block, AEKLDownsample):
                mapping[f"{ours}.{sub}"] = f"{theirs}.conv.{sub.split('.')[-1]}"
            elif isinstance(block, nn.GroupNorm):
                mapping[f"{ours}.{sub}"] = f"{theirs}.{sub}"
            elif not is_attn and sub.startswith("conv.") and sub.count(".") == 1:
                mapping[f"{ours}.{sub}"] = f"{theirs}.{sub.split('.')[-1]}"  # plain conv_in / conv_out
            else:
                mapping[f"{ours}.{sub}"] = f"{theirs}.{_unit_key(sub, is_attn)}"
    for key in model.state_dict():
        if key.split(".")[0] in ("quant_conv", "post_quant_conv", "channel_ds", "channel_proj"):
            mapping[key] = key
    return mapping


def _unwrap(obj: Any, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(f"{source}: not a state dict (expected a mapping of tensors or {{'state_dict': ...}})")
    sd = dict(obj)
    for prefix in ("model.", "module.", "vae."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an original checkpoint (``.ckpt``/``.pt`` with ``state_dict``, or ``.safetensors``) on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint file does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise DataError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc)[:120]})") from None
    return _unwrap(obj, str(path))


def original_to_medfm(sd: Mapping[str, torch.Tensor], model: MedVAE, source: str = "checkpoint") -> dict[str, Any]:
    """Convert an original state dict to ``model``'s keys (LoRA merged, 1x1 attention convs -> linear).

    Raises:
        DataError: a tensor is missing or has the wrong shape; the message names both shapes.
    """
    sd = merge_lora(_unwrap(sd, source))
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    missing = []
    for ours, theirs in key_mapping(model).items():
        if theirs not in sd:
            if theirs.startswith(("channel_ds", "channel_proj")):
                log.warning("%s has no stage-2 projection head; keeping its initial weights", source)
                out[ours] = target[ours]
                continue
            missing.append(theirs)
            continue
        value = sd[theirs]
        want = target[ours].shape
        if value.shape != want and value.numel() == target[ours].numel() and value.ndim > len(want):
            value = value.reshape(want)  # 1x1 attention conv -> linear
        if value.shape != want:
            raise DataError(
                f"{source}: tensor {theirs} has shape {tuple(value.shape)} but the "
                f"{model.init_kwargs.get('preset') or 'model'} preset needs {tuple(want)} for {ours}; "
                "pick the preset the checkpoint was trained with"
            )
        out[ours] = value.to(target[ours].dtype)
    if missing:
        raise DataError(
            f"{source}: {len(missing)} tensors of the original layout are missing (first: {missing[0]}); "
            "is this a medvae checkpoint of this preset?"
        )
    return out


def load_original(path_or_sd: str | Path | Mapping[str, torch.Tensor], model: MedVAE,
                  source: str = "state dict") -> MedVAE:  # fmt: skip
    """Load an original medvae checkpoint (path or state dict) into ``model`` (in place) and return it."""
    if isinstance(path_or_sd, Mapping):
        sd = dict(path_or_sd)
    else:
        sd, source = read_checkpoint(path_or_sd), str(path_or_sd)
    model.load_state_dict(original_to_medfm(sd, model, source), strict=True)
    return model


def is_original_layout(sd: Mapping[str, Any]) -> bool:
    """True when a state dict uses the CompVis names (``encoder.conv_in.*``) rather than ours."""
    return any(k.startswith(("encoder.conv_in", "model.encoder.conv_in")) for k in sd) or any(
        ".down.0." in k for k in sd
    )


def load_weights_into(model: MedVAE, source: str) -> MedVAE:
    """Initialise ``model`` from a medfm model directory or an original checkpoint, inflating 2D -> 3D if needed.

    Raises:
        DataError: the checkpoint's shapes do not fit ``model``; the message names both shapes.
    """
    from medfm.core.hub import load_config, load_state_dict
    from medfm.methods.medvae.inflate import inflate_model

    path = Path(source.split(":", 1)[1] if source.startswith("local-dir:") else source)
    want = model.init_kwargs
    if path.is_file():
        sd = read_checkpoint(path)
        if not is_original_layout(sd):
            raise DataError(f"{path}: not an original medvae checkpoint (no encoder.conv_in); pass a medfm model "
                            "directory instead")  # fmt: skip
        conv_in = next(v for k, v in sd.items() if k.endswith("encoder.conv_in.weight"))
        if conv_in.ndim == 4 and want["spatial_dims"] == 3:
            twod = MedVAE(**{**want, "spatial_dims": 2})
            load_original(sd, twod, str(path))
            return inflate_model(model, twod.state_dict(), str(path))
        return load_original(sd, model, str(path))
    config = load_config(source)
    sd = load_state_dict(source)
    keys = ("in_channels", "latent_channels", "channels", "num_res_blocks")
    have = {k: config.get(k) for k in keys}
    need = {k: want[k] for k in keys}
    if have != need:
        raise DataError(f"{source}: checkpoint shape {have} (preset {config.get('preset') or '?'}) does not match the "
                        f"model shape {need} (preset {want.get('preset') or '?'})")  # fmt: skip
    if config.get("spatial_dims") == 2 and want["spatial_dims"] == 3:
        return inflate_model(model, sd, str(source))
    if config.get("spatial_dims") != want["spatial_dims"]:
        raise DataError(f"{source}: a {config.get('spatial_dims')}D checkpoint cannot initialise a "
                        f"{want['spatial_dims']}D model (only 2D -> 3D inflation exists)")  # fmt: skip
    model.load_state_dict(sd, strict=True)
    return model
