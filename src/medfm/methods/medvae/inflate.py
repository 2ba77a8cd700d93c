"""3D inflation of 2D MedVAE weights ("kernel centering inflation", spec B1).

A 2D kernel ``(O, I, k, k)`` becomes a 3D kernel ``(O, I, k, k, k)`` holding the 2D weights in the centre slice
of the last kernel axis and zeros elsewhere; tensors of equal shape (norms, biases, attention linears) are
copied. The inflated network therefore processes each slice along the last axis (Z) like the 2D network, except
where information crosses slices on purpose: stride-2 convs subsample Z, GroupNorm and attention pool over the
volume. On a volume that is constant along Z the inflated encoder returns the 2D latent repeated along Z.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from medfm.core.errors import DataError

log = logging.getLogger(__name__)


def inflate_kernel(weight2d: torch.Tensor, depth: int) -> torch.Tensor:
    """``(O, I, kh, kw)`` -> ``(O, I, kh, kw, depth)`` with the 2D kernel at index ``depth // 2``."""
    out = torch.zeros(*weight2d.shape, depth, dtype=weight2d.dtype)
    out[..., depth // 2] = weight2d
    return out


def inflate_state_dict(sd2d: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                       source: str = "2D checkpoint") -> dict[str, torch.Tensor]:  # fmt: skip
    """Inflate a 2D MedVAE state dict to the shapes of ``target`` (a 3D MedVAE state dict, same preset family).

    Raises:
        DataError: a tensor is missing or cannot be inflated; the message names both shapes.
    """
    out: dict[str, torch.Tensor] = {}
    for key, want in target.items():
        if key not in sd2d:
            raise DataError(f"{source}: tensor {key} is missing; inflate a checkpoint of the matching 2D preset")
        have = sd2d[key]
        if have.shape == want.shape:
            out[key] = have.clone()
        elif have.ndim == 4 and want.ndim == 5 and tuple(have.shape) == tuple(want.shape[:4]):
            out[key] = inflate_kernel(have, want.shape[4])
        else:
            raise DataError(f"{source}: tensor {key} has shape {tuple(have.shape)} and cannot be inflated to "
                            f"{tuple(want.shape)}; use the 2D preset with the same widths and latent channels")  # fmt: skip
    return out


def inflate_model(model3d: torch.nn.Module, sd2d: Mapping[str, torch.Tensor], source: str = "2D checkpoint"):
    """Load inflated 2D weights into ``model3d`` in place and return it."""
    model3d.load_state_dict(inflate_state_dict(sd2d, model3d.state_dict(), source), strict=True)
    log.info("inflated %s into a 3D model (%d tensors)", source, len(sd2d))
    return model3d
