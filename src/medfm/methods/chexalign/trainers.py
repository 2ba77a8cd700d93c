"""Direct alignment of the report generator with TRL's trainers (DPO, IPO, KTO, ORPO, R-DPO, SimPO).

What TRL 1.16 offers directly and what is added here:

==========  =================================================================================================
``dpo``     ``trl.DPOTrainer`` with ``DPOConfig(loss_type=["sigmoid"])``.
``ipo``     ``trl.DPOTrainer`` with ``loss_type=["ipo"]`` (TRL length-averages the log-ratios, as the spec says).
``kto``     ``trl.KTOTrainer`` on unpaired rows (:func:`.pairs.kto_rows`), ``loss_type="kto"``.
``rdpo``    Not in TRL (its ``ld_alpha`` is LD-DPO, a different length treatment): :class:`AlignTrainer`, a
            ``DPOTrainer`` subclass whose loss is ``-log sigma(beta h + alpha (|y_w| - |y_l|))``.
``orpo``    TRL's ``ORPOTrainer`` (trl.experimental) tokenises text only and cannot take images, so
            :class:`AlignTrainer` computes the ORPO loss on ``DPOTrainer``'s vision-language batches.
``simpo``   Same reason (TRL's SimPO lives in the text-only experimental ``CPOTrainer``): :class:`AlignTrainer`.
==========  =================================================================================================

:class:`AlignTrainer` reuses everything of ``DPOTrainer`` (dataset preparation, VLM collation, reference log-prob
precomputation, Accelerate/DeepSpeed) and replaces only ``_compute_loss`` for the three losses above, computing the
per-token log-probs with TRL's fused LM head exactly as ``DPOTrainer`` does. The formulas are those of
:mod:`.losses`. The image tower is frozen in the policy (``freeze_vision_tower``); the reference is a second copy of
the SFT model (kept but unused by the reference-free ORPO and SimPO losses).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medfm.core.errors import DataError, UsageError

log = logging.getLogger(__name__)

REFERENCE_FREE = ("orpo", "simpo")


def _dpo_base() -> type:
    from trl import DPOTrainer

    return DPOTrainer


def make_align_trainer_class() -> type:
    """The :class:`AlignTrainer` class (built lazily so importing this module does not import TRL)."""
    import torch
    import torch.nn.functional as F

    base = _dpo_base()

    class AlignTrainer(base):  # type: ignore[misc, valid-type]
        """``DPOTrainer`` with the R-DPO, ORPO and SimPO losses for vision-language batches.

        Args:
            align_loss: ``rdpo``, ``orpo`` or ``simpo``; anything else defers to ``DPOTrainer``'s own losses.
            rdpo_alpha: R-DPO length coefficient alpha.
            simpo_gamma: SimPO target margin gamma.
            orpo_lambda: ORPO weight lambda of the odds-ratio term (:func:`build_trainer` passes the sweep's beta, as
                TRL's ``ORPOConfig.beta`` and CheXalign do).
            **kwargs: ``DPOTrainer`` arguments.
        """

        def __init__(
            self,
            *args: Any,
            align_loss: str = "",
            rdpo_alpha: float = 0.05,
            simpo_gamma: float = 0.5,
            orpo_lambda: float = 0.1,
            **kwargs: Any,
        ):
            self.align_loss = align_loss
            self.rdpo_alpha = float(rdpo_alpha)
            self.simpo_gamma = float(simpo_gamma)
            self.orpo_lambda = float(orpo_lambda)
            super().__init__(*args, **kwargs)

        def _policy_logps(self, model: Any, inputs: dict[str, Any]) -> tuple[Any, Any, Any]:
            """(summed completion log-probs ``(2B,)``, completion lengths ``(2B,)``, model kwargs); the batch is
            ``[chosen..., rejected...]`` as in ``DPOTrainer``."""
            skip = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}
            kwargs = {k: v for k, v in inputs.items() if k not in skip}
            kwargs["use_cache"] = False
            completion_mask = inputs["completion_mask"]
            labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
            out = model(**kwargs, labels=labels, fused_lm_head=True)
            seq_len = completion_mask.size(1) - 1
            logps = out.log_probs[:, -seq_len:].sum(dim=1)
            lengths = completion_mask[:, 1:].sum(dim=1).to(logps.dtype)
            return logps, lengths, kwargs

        def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
            if self.align_loss not in ("rdpo", "orpo", "simpo"):
                return super()._compute_loss(model, inputs, return_outputs)
            mode = "train" if self.model.training else "eval"
            logps, lengths, _ = self._policy_logps(model, inputs)
            logp_w, logp_l = logps.chunk(2, dim=0)
            len_w, len_l = lengths.chunk(2, dim=0)
            metrics: dict[str, Any] = {}
            if self.align_loss == "rdpo":
                if self.precompute_ref_logps:
                    ref_w, ref_l = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
                else:
                    ref_w, ref_l = self.compute_ref_log_probs(self.ref_model or self.model, inputs)
                h = (logp_w - ref_w) - (logp_l - ref_l)
                loss = -F.logsigmoid(self.beta * h + self.rdpo_alpha * (len_w - len_l))
                rw, rl = self.beta * (logp_w - ref_w).detach(), self.beta * (logp_l - ref_l).detach()
            elif self.align_loss == "simpo":
                rw, rl = (self.beta * logp_w / len_w.clamp(min=1)), (self.beta * logp_l / len_l.clamp(min=1))
                loss = -F.logsigmoid(rw - rl - self.simpo_gamma)
                rw, rl = rw.detach(), rl.detach()
            else:  # orpo
                mw, ml = logp_w / len_w.clamp(min=1), logp_l / len_l.clamp(min=1)
                log_odds = (mw - ml) - (torch.log1p(-torch.exp(mw)) - torch.log1p(-torch.exp(ml)))
                ratio = F.logsigmoid(log_odds)
                loss = -mw - self.orpo_lambda * ratio
                rw, rl = (self.orpo_lambda * mw).detach(), (self.orpo_lambda * ml).detach()
                metrics["log_odds_ratio"] = ratio.mean().item()
                metrics["nll_loss"] = (-mw).mean().item()
            metrics.update(
                {
                    "rewards/chosen": rw.mean().item(),
                    "rewards/rejected": rl.mean().item(),
                    "rewards/accuracies": (rw > rl).float().mean().item(),
                    "rewards/margins": (rw - rl).mean().item(),
                    "logps/chosen": logp_w.detach().mean().item(),
                    "logps/rejected": logp_l.detach().mean().item(),
                    "length/chosen": len_w.mean().item(),
                    "length/rejected": len_l.mean().item(),
                }
            )
            for k, v in metrics.items():
                self._metrics[mode][k].append(v)
            loss = loss.mean()
            return (loss, None) if return_outputs else loss

    return AlignTrainer


# ----------------------------------------------------------------------------------------------------------------------
# Datasets


def _images(row: dict[str, Any], base: Path | None) -> list[Any]:
    from medfm.methods.vlm.data import load_image

    paths = row.get("images") or []
    out = []
    for p in paths:
        path = Path(p)
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.is_file():
            raise DataError(f"pair {row.get('id')}: image {path} does not exist; rerun `medfm chexalign sample`")
        out.append(load_image(path).convert("RGB"))
    if not out:
        raise DataError(f"pair {row.get('id')}: no image; the policy is a VLM and needs the study's image")
    return out


def _prompt(row: dict[str, Any], n_images: int) -> list[dict[str, Any]]:
    parts = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": row["prompt"]}]
    return [{"role": "user", "content": parts}]


def _answer(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def preference_dataset(pairs: Sequence[dict[str, Any]], base: Path | None = None) -> Any:
    """A ``datasets.Dataset`` in TRL's conversational vision preference format: ``images``, ``prompt``,
    ``chosen``, ``rejected`` (content parts with ``{"type": "image"}``)."""
    from datasets import Dataset

    if not pairs:
        raise DataError("no preference pairs to train on (every study tied or failed); see pairs' results.json")
    cols: dict[str, list[Any]] = {"images": [], "prompt": [], "chosen": [], "rejected": []}
    for row in pairs:
        ims = _images(row, base)
        cols["images"].append(ims)
        cols["prompt"].append(_prompt(row, len(ims)))
        cols["chosen"].append(_answer(row["chosen"]))
        cols["rejected"].append(_answer(row["rejected"]))
    return Dataset.from_dict(cols)


def kto_dataset(rows: Sequence[dict[str, Any]], base: Path | None = None) -> Any:
    """Unpaired rows for ``KTOTrainer``: ``images``, ``prompt``, ``completion``, ``label``."""
    from datasets import Dataset

    if not rows:
        raise DataError("no KTO rows to train on (every study tied or failed)")
    cols: dict[str, list[Any]] = {"images": [], "prompt": [], "completion": [], "label": []}
    for row in rows:
        ims = _images(row, base)
        cols["images"].append(ims)
        cols["prompt"].append(_prompt(row, len(ims)))
        cols["completion"].append(_answer(row["completion"]))
        cols["label"].append(bool(row["label"]))
    return Dataset.from_dict(cols)


# ----------------------------------------------------------------------------------------------------------------------
# Building a trainer


def freeze_vision_tower(model: Any) -> int:
    """Set ``requires_grad=False`` on the image tower; returns the number of frozen parameters."""
    tower = getattr(getattr(model, "model", model), "vision_tower", None)
    if tower is None:
        return 0
    n = 0
    for p in tower.parameters():
        p.requires_grad = False
        n += p.numel()
    return n


def training_args(algorithm: str, opts: Any, beta: float, output_dir: str | Path, seed: int, device: str) -> Any:
    """TRL config (``DPOConfig`` or ``KTOConfig``) for ``algorithm`` from :class:`.config.AlignOptions`."""
    import trl

    common: dict[str, Any] = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": opts.batch_size,
        "gradient_accumulation_steps": opts.grad_accum,
        "learning_rate": opts.lr,
        "lr_scheduler_type": opts.scheduler,
        "warmup_steps": float(opts.warmup_ratio),
        "weight_decay": opts.weight_decay,
        "beta": beta,
        "max_length": opts.max_length,
        "report_to": [],
        "logging_steps": 1,
        "seed": seed,
        "save_strategy": "steps",
        "save_steps": max(1, opts.checkpoint_every),
        "save_total_limit": 1,
        "use_cpu": device == "cpu",
        "bf16": opts.mixed_precision == "bf16",
        "fp16": opts.mixed_precision == "fp16",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    if opts.steps > 0:
        common["max_steps"] = opts.steps
    else:
        common["num_train_epochs"] = opts.epochs
    if opts.deepspeed:
        common["deepspeed"] = opts.deepspeed
    common["activation_checkpointing"] = bool(opts.gradient_checkpointing)  # TRL's default is on
    if algorithm == "kto":
        if opts.batch_size < 2:
            raise UsageError("KTO estimates its KL term within a batch: use --train.batch_size 2 or more")
        return trl.KTOConfig(
            **common, desirable_weight=opts.kto_desirable_weight, undesirable_weight=opts.kto_undesirable_weight
        )
    loss_type = {"dpo": ["sigmoid"], "ipo": ["ipo"]}.get(algorithm, ["sigmoid"])
    return trl.DPOConfig(**common, loss_type=loss_type)


def build_trainer(
    algorithm: str,
    model: Any,
    ref_model: Any,
    processor: Any,
    train_rows: Sequence[dict[str, Any]],
    opts: Any,
    beta: float,
    output_dir: str | Path,
    seed: int = 0,
    device: str = "cpu",
    image_base: Path | None = None,
) -> Any:
    """A ready-to-``train()`` TRL trainer.

    Args:
        algorithm: one of :data:`.losses.ALGORITHMS`.
        model: the policy (the SFT VLM); its image tower is frozen here when ``opts.freeze_vision_tower``.
        ref_model: a frozen copy of the SFT VLM (unused by the reference-free ``orpo``/``simpo`` losses; TRL does not
            precompute reference log-probs for vision datasets, so one is always passed).
        processor: the VLM's processor.
        train_rows: pairs (:func:`.pairs.build_pairs`) or, for ``kto``, unpaired rows (:func:`.pairs.kto_rows`).
        opts: :class:`.config.AlignOptions`.
        beta: the algorithm's beta (ORPO: the weight lambda of its odds-ratio term, as in TRL and CheXalign).
    """
    from medfm.methods.chexalign.losses import ALGORITHMS

    if algorithm not in ALGORITHMS:
        raise UsageError(f"unknown algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
    if opts.freeze_vision_tower:
        freeze_vision_tower(model)
    args = training_args(algorithm, opts, beta, output_dir, seed, device)
    if algorithm == "kto":
        import trl

        trainer = trl.KTOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=kto_dataset(train_rows, image_base),
            processing_class=processor,
        )
    else:
        cls = make_align_trainer_class()
        trainer = cls(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=preference_dataset(train_rows, image_base),
            processing_class=processor,
            align_loss=algorithm if algorithm in ("rdpo", "orpo", "simpo") else "",
            rdpo_alpha=opts.rdpo_alpha,
            simpo_gamma=opts.simpo_gamma,
            orpo_lambda=beta,
        )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # losses go to the run's metrics.jsonl / log instead of stdout
    return trainer


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest ``checkpoint-N`` folder a TRL/HF Trainer left in ``output_dir`` (to resume from), or None."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None
