"""Uses of a pretrained MASS network (spec A6): training-free in-context segmentation (MASS-IC), fine-tuning with
learnable class prompts (MASS-FT), and scoring with Dice / HD95 (MONAI).

Volumes are (X, Y, Z) arrays; per-structure probability maps are ``(S, X, Y, Z)``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from medfm.methods.mass.data import Case
from medfm.methods.mass.model import IrisNet

log = logging.getLogger(__name__)


def centre_crop_bounds(centre: np.ndarray, shape: tuple[int, ...], crop: int) -> tuple[slice, ...]:
    """Window of side ``crop`` centred on ``centre`` and shifted to lie inside ``shape``."""
    return tuple(
        slice(s0, s0 + crop) for s0 in (int(min(max(c - crop // 2, 0), n - crop)) for c, n in zip(centre, shape))
    )


def median_foreground_voxel(mask: np.ndarray) -> np.ndarray:
    """The middle element of the list of foreground voxel indices (C order), as in the original code."""
    idx = np.flatnonzero(mask.ravel())
    return np.array(np.unravel_index(idx[len(idx) // 2], mask.shape))


def reference_crop(case: Case, label_value: int, crop: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(image (1, 1, c, c, c), mask (1, 1, c, c, c)) centred on the structure, or None if it is absent."""
    if case.label is None:
        return None
    mask = case.label == label_value
    if not mask.any():
        return None
    sl = centre_crop_bounds(median_foreground_voxel(mask), case.image.shape, crop)
    img = torch.from_numpy(np.ascontiguousarray(case.image[sl]))[None, None]
    m = torch.from_numpy(np.ascontiguousarray(mask[sl])).float()[None, None]
    return img, m


@torch.no_grad()
def class_tokens(model: IrisNet, refs: list[Case], structures: dict[str, int], crop: int) -> list[torch.Tensor]:
    """Task tokens per prior stage ``[(1, S, T, C)]`` for S structures, averaged over the references in which
    each structure is present (zeros-mask tokens if it is absent from all of them)."""
    model.eval()
    dev = next(model.parameters()).device
    per_struct: list[list[torch.Tensor]] = []
    for value in structures.values():
        toks = []
        for case in refs:
            rc = reference_crop(case, value, crop)
            if rc is not None:
                toks.append(model.encode_tasks(rc[0].to(dev), rc[1].to(dev)))
        if not toks:
            log.warning("structure %s is absent from every reference volume; its prompt carries no information", value)
            img = torch.from_numpy(np.ascontiguousarray(refs[0].image[:crop, :crop, :crop]))[None, None].to(dev)
            toks.append(model.encode_tasks(img, torch.zeros_like(img)))
        per_struct.append([torch.stack([t[i] for t in toks]).mean(0) for i in range(len(toks[0]))])
    return [torch.cat([s[i] for s in per_struct], dim=1) for i in range(len(per_struct[0]))]


def _pad_to_multiple(image: np.ndarray, crop: int) -> tuple[np.ndarray, tuple[slice, ...]]:
    pads = [(0, max(crop - s, 0)) for s in image.shape]
    return np.pad(image, pads, mode="edge"), tuple(slice(0, s) for s in image.shape)


@torch.no_grad()
def predict_volume(model: IrisNet, image: np.ndarray, tokens: list[torch.Tensor], crop: int,
                   overlap: float = 0.5, sw_batch_size: int = 2) -> np.ndarray:  # fmt: skip
    """Sliding-window sigmoid probabilities ``(S, X, Y, Z)`` (uniform averaging, MONAI) for one volume."""
    from monai.inferers import sliding_window_inference

    model.eval()
    dev = next(model.parameters()).device
    padded, valid = _pad_to_multiple(image, crop)
    x = torch.from_numpy(np.ascontiguousarray(padded))[None, None].float().to(dev)
    tokens = [t.to(dev) for t in tokens]

    def predictor(patch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(model.segment(patch, tokens))

    prob = sliding_window_inference(x, (crop,) * 3, sw_batch_size, predictor, overlap=overlap, mode="constant")
    return prob[0].cpu().numpy()[(slice(None), *valid)]


def score_volume(pred: np.ndarray, label: np.ndarray, structures: dict[str, int], spacing: Any,
                 hd95: bool = True) -> list[dict[str, Any]]:  # fmt: skip
    """Per structure present in ``label``: Dice and HD95 (mm; None when the prediction is empty)."""
    from monai.metrics import compute_hausdorff_distance

    from medfm.core.metrics import dice

    rows = []
    for s, (name, value) in enumerate(structures.items()):
        gt = label == value
        if not gt.any():
            continue  # a label missing from this volume: not scored (class mean over volumes where present)
        p = pred[s]
        row: dict[str, Any] = {"structure": name, "dice": dice(p, gt), "hd95": None}
        if hd95 and p.any():
            d = compute_hausdorff_distance(torch.from_numpy(p)[None, None], torch.from_numpy(gt)[None, None],
                                           percentile=95, spacing=list(spacing))  # fmt: skip
            v = float(d.item())
            row["hd95"] = v if math.isfinite(v) else None
        rows.append(row)
    return rows


def evaluate(model: IrisNet, tokens: list[torch.Tensor], targets: list[Case], structures: dict[str, int], crop: int,
             overlap: float = 0.5, threshold: float = 0.5, hd95: bool = True) -> list[dict[str, Any]]:  # fmt: skip
    """Segment every target volume with ``tokens`` and score it. One row per (case, structure present)."""
    rows = []
    for case in targets:
        if case.label is None:
            from medfm.core.errors import DataError

            raise DataError(f"{case.id}: evaluation needs a label map; add 'label' to the datalist entry")
        prob = predict_volume(model, case.image, tokens, crop, overlap)
        for r in score_volume(prob >= threshold, case.label, structures, case.spacing, hd95):
            rows.append({"case": case.id, **r})
    return rows


# ----------------------------------------------------------------------------------------------------------------------
# Fine-tuning with learnable class prompts (MASS-FT)


class PromptedIris(nn.Module):
    """An :class:`IrisNet` plus one learnable prompt ``(S, T, C)`` per prior stage (initialised from tokens).

    Saved as a model directory whose weights are ``model.*`` and ``prompts.<stage>``, and whose config holds the
    IrisNet constructor arguments plus ``structures`` (name -> label value, in prompt order).
    """

    def __init__(self, model: IrisNet, tokens: list[torch.Tensor], structures: dict[str, int] | None = None):
        super().__init__()
        self.model = model
        self.prompts = nn.ParameterList(nn.Parameter(t[0].detach().clone()) for t in tokens)
        self.structures = dict(structures or {})

    def tokens(self) -> list[torch.Tensor]:
        return [p.unsqueeze(0) for p in self.prompts]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.segment(x, self.tokens())

    def save_pretrained(self, directory: Any, card: Any = None) -> Any:
        from medfm.core.hub import save_pretrained

        config = {"medfm_class": f"{__name__}:PromptedIris", **self.model.init_kwargs, "structures": self.structures}
        return save_pretrained(directory, self.state_dict(), config, card=card)

    @classmethod
    def from_pretrained(cls, source: Any, device: str = "cpu") -> PromptedIris:
        from medfm.core.errors import DataError
        from medfm.core.hub import load_config, load_state_dict

        config = load_config(source)
        structures = config.pop("structures", None) or {}
        config.pop("medfm_class", None)
        model = IrisNet(**config)
        state = load_state_dict(source, device=device)
        missing = [f"prompts.{i}" for i in range(model.num_prior_stage) if f"prompts.{i}" not in state]
        if missing:
            raise DataError(f"{source}: no {', '.join(missing)} in the weights; not a fine-tuned MASS model")
        out = cls(model, [state[f"prompts.{i}"][None] for i in range(model.num_prior_stage)], structures)
        out.load_state_dict(state, strict=True)
        return out.to(device).eval()


def foreground_voxels(case: Case, structures: dict[str, int]) -> dict[int, np.ndarray]:
    """Flat (C-order) indices of each structure's voxels in ``case.label``, keyed by label value."""
    return {v: np.flatnonzero(case.label == v) for v in structures.values()}


def sample_training_crop(case: Case, structures: dict[str, int], crop: int, fg_prob: float,
                         rng: np.random.Generator, fg: dict[int, np.ndarray] | None = None,
                         ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(image (1, c, c, c), one-hot targets (S, c, c, c)); centred on a random structure voxel with prob fg_prob.

    ``fg``: :func:`foreground_voxels` of ``case``, computed once per case by callers that sample it repeatedly.
    """
    shape = case.image.shape
    fg = foreground_voxels(case, structures) if fg is None else fg
    present = [v for v in structures.values() if len(fg[v])]
    if present and rng.random() < fg_prob:
        vox = fg[present[int(rng.integers(0, len(present)))]]
        centre = np.array(np.unravel_index(vox[int(rng.integers(0, len(vox)))], shape))
        sl = centre_crop_bounds(centre, shape, crop)
    else:
        sl = tuple(slice(s0, s0 + crop) for s0 in (int(rng.integers(0, n - crop + 1)) for n in shape))
    img = torch.from_numpy(np.ascontiguousarray(case.image[sl]))[None]
    lab = case.label[sl]
    tgt = torch.from_numpy(np.stack([lab == v for v in structures.values()])).float()
    return img, tgt


def finetune(model: IrisNet, train_cases: list[Case], structures: dict[str, int], opts: Any, seed: int = 0,
             device: str = "cpu", metrics: Any = None, run_dir: Any = None) -> PromptedIris:  # fmt: skip
    """Fine-tune ``model`` and class prompts on labelled ``train_cases`` (spec A6 MASS-FT; Dice + BCE, AdamW, cosine).

    Args:
        opts: a :class:`~medfm.methods.mass.config.FinetuneConfig` (steps, batch_size, lr, weight_decay, crop,
            foreground_prob, mode).
        run_dir: where checkpoints go (``<run_dir>/checkpoints``; every ``opts.checkpoint_every`` steps and at the
            end) and are resumed from; None trains without checkpoints.

    ``batch_size`` is the global batch: every process draws the same crops from the shared RNG and trains on its
    share.
    """
    from medfm.core.training import Checkpointer, fit, make_accelerator, shard
    from medfm.methods.mass.losses import mass_loss

    for c in train_cases:
        if min(c.image.shape) < opts.crop:
            from medfm.core.errors import DataError

            raise DataError(
                f"{c.id}: volume {c.image.shape} is smaller than the crop {opts.crop}; raise --data.min_size"
            )
    tokens = class_tokens(model, train_cases, structures, opts.crop)
    prompted = PromptedIris(model, tokens, structures)
    if opts.mode == "probing":
        for p in prompted.model.parameters():
            p.requires_grad_(False)
    # the learned prompts replace the task encoders, which get no gradient here (and would stall DDP's reduction)
    prompted.model.task_encoders.requires_grad_(False)
    params = [p for p in prompted.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(opts.steps, 1))
    accelerator = make_accelerator(device, global_batch=opts.batch_size)
    prompted, opt, sched = accelerator.prepare(prompted, opt, sched)
    rng = np.random.default_rng(seed)
    ckpt = Checkpointer(run_dir, accelerator, metrics)
    resumed = ckpt.load()
    if resumed is not None:
        rng.bit_generator.state = resumed.state["rng"]
    fg = [foreground_voxels(c, structures) for c in train_cases]  # once, not per sampled crop
    prompted.train()

    def step_fn(step: int) -> dict[str, float]:
        parts = []
        for _ in range(opts.batch_size):  # case pick and crop draws interleaved on one rng
            i = int(rng.integers(0, len(train_cases)))
            parts.append(sample_training_crop(train_cases[i], structures, opts.crop, opts.foreground_prob, rng, fg[i]))
        mine = shard(parts, accelerator)
        x = torch.stack([p[0] for p in mine]).to(accelerator.device)
        y = torch.stack([p[1] for p in mine]).to(accelerator.device)
        loss = mass_loss(prompted(x), y)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        return {"loss": float(accelerator.reduce(loss.detach(), reduction="mean"))}

    fit(step_fn, steps=opts.steps, start=resumed.step if resumed else 0, checkpointer=ckpt, metrics=metrics,
        log_every=10, checkpoint_every=opts.checkpoint_every, desc="finetune", state_fn=lambda: {"rng": rng.bit_generator.state})  # fmt: skip
    out = accelerator.unwrap_model(prompted)
    out.eval()
    return out
