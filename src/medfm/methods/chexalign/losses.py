"""The direct alignment losses of CheXalign as plain formulas on sequence log-probabilities (spec part B, 2.2).

These are the reference definitions the TRL-based training is checked against (tests compare a trainer's loss on
a tiny batch with these) and the unit-tested algorithmic core. Notation: ``logp_*`` are ``(B,)`` sums of the
policy's token log-probabilities of the chosen (w) / rejected (l) response, ``ref_*`` the reference model's,
``len_*`` the numbers of response tokens; ``h = (logp_w - ref_w) - (logp_l - ref_l)``; ``sigma`` the logistic.
Every function returns the per-example loss ``(B,)``; the training loss is its mean.
"""

from __future__ import annotations

from typing import Any

ALGORITHMS = ("dpo", "ipo", "kto", "orpo", "rdpo", "simpo")


def _t(x: Any) -> Any:
    import torch

    return x if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=torch.float64)


def dpo_loss(logp_w: Any, logp_l: Any, ref_w: Any, ref_l: Any, beta: float) -> Any:
    """DPO (TRL ``loss_type="sigmoid"``): ``-log sigma(beta * h)``."""
    import torch.nn.functional as F

    h = (_t(logp_w) - _t(ref_w)) - (_t(logp_l) - _t(ref_l))
    return -F.logsigmoid(beta * h)


def rdpo_loss(
    logp_w: Any, logp_l: Any, ref_w: Any, ref_l: Any, len_w: Any, len_l: Any, beta: float, alpha: float
) -> Any:
    """R-DPO as in CheXalign's ``rdpo_trainer.py``: ``-log sigma(beta * h + alpha * (|y_w| - |y_l|))``."""
    import torch.nn.functional as F

    h = (_t(logp_w) - _t(ref_w)) - (_t(logp_l) - _t(ref_l))
    return -F.logsigmoid(beta * h + alpha * (_t(len_w) - _t(len_l)))


def ipo_loss(logp_w: Any, logp_l: Any, ref_w: Any, ref_l: Any, len_w: Any, len_l: Any, beta: float) -> Any:
    """IPO (TRL ``loss_type="ipo"``): ``(h_avg - 1/(2 beta))^2`` with length-averaged log-ratios
    ``h_avg = (logp_w - ref_w)/|y_w| - (logp_l - ref_l)/|y_l|``."""
    h = (_t(logp_w) - _t(ref_w)) / _t(len_w).clamp(min=1) - (_t(logp_l) - _t(ref_l)) / _t(len_l).clamp(min=1)
    return (h - 1.0 / (2.0 * beta)) ** 2


def kto_loss(
    logp: Any, ref: Any, desirable: Any, kl: float, beta: float, lambda_d: float = 1.0, lambda_u: float = 1.0
) -> Any:
    """KTO (TRL ``KTOTrainer``): desirable ``lambda_D (1 - sigma(beta (r - z0)))``, undesirable
    ``lambda_U (1 - sigma(beta (z0 - r)))`` with ``r = logp - ref`` and ``z0 = kl`` (clamped at 0, no gradient).

    Args:
        logp, ref: ``(B,)`` policy / reference log-probs of each row's completion.
        desirable: ``(B,)`` bool, the row's label.
        kl: the batch KL estimate ``z0`` (mean of policy minus reference log-probs on mismatched pairs).
    """
    import torch

    r = _t(logp) - _t(ref)
    z0 = max(float(kl), 0.0)
    d = torch.as_tensor(desirable, dtype=torch.bool)
    return torch.where(
        d, lambda_d * (1 - torch.sigmoid(beta * (r - z0))), lambda_u * (1 - torch.sigmoid(beta * (z0 - r)))
    )


def orpo_loss(logp_w: Any, logp_l: Any, len_w: Any, len_l: Any, lam: float) -> Any:
    """ORPO (reference-free): ``NLL(y_w) - lam * log sigma(log odds(y_w) - log odds(y_l))`` with
    ``p = exp(mean token log-prob)``, ``odds = p / (1 - p)`` and ``NLL(y_w) = -logp_w / |y_w|`` (mean over tokens)."""
    import torch
    import torch.nn.functional as F

    mw = _t(logp_w) / _t(len_w).clamp(min=1)
    ml = _t(logp_l) / _t(len_l).clamp(min=1)
    log_odds = (mw - ml) - (torch.log1p(-torch.exp(mw)) - torch.log1p(-torch.exp(ml)))
    return -mw - lam * F.logsigmoid(log_odds)


def simpo_loss(logp_w: Any, logp_l: Any, len_w: Any, len_l: Any, beta: float, gamma: float) -> Any:
    """SimPO (reference-free): ``-log sigma(beta/|y_w| logp_w - beta/|y_l| logp_l - gamma)``."""
    import torch.nn.functional as F

    return -F.logsigmoid(
        beta * _t(logp_w) / _t(len_w).clamp(min=1) - beta * _t(logp_l) / _t(len_l).clamp(min=1) - gamma
    )
