"""Evaluation of a CheXficient model (spec §1.6): per-finding zero-shot AUROC ("finding" vs "no finding"
prompts, softmax of the two cosines without temperature), image->report and report->image Recall@1/5/10 with
de-duplicated reports, and a logistic-regression linear probe on frozen image features. Every number comes
with a bootstrap CI over test images (medfm.core.metrics).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from medfm.core.metrics import auroc, mean_ci, with_ci
from medfm.core.results import Metric

log = logging.getLogger(__name__)

#: Phrase used in prompts for CheXpert-style finding names (what reports actually say).
PROMPT_TERMS: dict[str, str] = {
    "Enlarged Cardiomediastinum": "widened mediastinum",
    "Cardiomegaly": "cardiomegaly",
    "Edema": "pulmonary edema",
    "Consolidation": "consolidation",
    "Pneumonia": "pneumonia",
    "Atelectasis": "atelectasis",
    "Pneumothorax": "pneumothorax",
    "Pleural Effusion": "pleural effusion",
    "Pleural Other": "pleural thickening",
    "Fracture": "rib fracture",
    "Support Devices": "central venous catheter",
    "Nodule": "lung nodule",
    "Mass": "lung mass",
    "Lung Opacity": "lung opacity",
    "Lung Lesion": "lung lesion",
}


def binary_targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(y, valid)``: 1 for present, 0 for absent or not mentioned; uncertain (-1) rows are masked out."""
    y = (labels == 1).astype(np.int64)
    valid = labels != -1
    return y, valid


def zero_shot_scores(model: Any, z_img: torch.Tensor, findings: list[str], terms: dict[str, str],
                     positive: str = "{}", negative: str = "no {}") -> np.ndarray:  # fmt: skip
    """``(N, F)`` p(finding) from ``(N, D)`` image embeddings (paper's binary prompts, no temperature)."""
    names = [terms.get(f, PROMPT_TERMS.get(f, f.lower())) for f in findings]
    return model.zero_shot_findings(None, names, positive, negative, image_embeddings=z_img).numpy()


def per_finding_auroc(scores: np.ndarray, labels: np.ndarray, findings: list[str], n_boot: int = 300,
                      seed: int = 0) -> dict[str, Metric]:  # fmt: skip
    """AUROC with a bootstrap CI per finding (uncertain masked; findings with one class give value None)."""
    out = {}
    for k, f in enumerate(findings):
        y, valid = binary_targets(labels[:, k])
        yk, sk = y[valid], scores[valid, k]
        if len(np.unique(yk)) < 2:
            out[f] = Metric(value=None, n=int(valid.sum()), note="one class only")
            continue
        out[f] = with_ci(auroc, yk, sk, n_resamples=n_boot, seed=seed, strata=yk)
    return out


def macro_auroc(scores: np.ndarray, labels: np.ndarray, ks: list[int], n_boot: int = 300, seed: int = 0) -> Metric:
    """Mean AUROC over findings ``ks`` with a CI from resampling images (all findings resampled together)."""
    y_all, valid_all = binary_targets(labels[:, ks])

    def metric(idx: np.ndarray) -> float:
        vals = []
        for j in range(len(ks)):
            v = valid_all[idx, j]
            y = y_all[idx, j][v]
            if len(np.unique(y)) < 2:
                return float("nan")
            vals.append(auroc(y, scores[idx, ks[j]][v]))
        return float(np.mean(vals))

    return with_ci(metric, np.arange(len(scores)), n_resamples=n_boot, seed=seed,
                   note=f"mean over {len(ks)} findings")  # fmt: skip


def validation_auroc(model: Any, pairs: Any, idx: np.ndarray, eval_opts: Any, min_per_class: int = 5) -> float:
    """Mean zero-shot AUROC over the findings with at least ``min_per_class`` positives and negatives among rows
    ``idx`` (no bootstrap: the model-selection score of early stopping); NaN when no finding qualifies."""
    from medfm.methods.chexficient.data import DERIVED

    labels = pairs.labels[idx]
    ks = []
    for k, f in enumerate(pairs.findings):
        y, valid = binary_targets(labels[:, k])
        if f not in DERIVED and min(int(y[valid].sum()), int((1 - y[valid]).sum())) >= min_per_class:
            ks.append(k)
    if not ks:
        return float("nan")
    z = model.encode_images(pairs.images(idx))
    scores = zero_shot_scores(model, z, [pairs.findings[k] for k in ks], dict(eval_opts.prompt_terms),
                              eval_opts.positive_template, eval_opts.negative_template)  # fmt: skip
    vals = []
    for j, k in enumerate(ks):
        y, valid = binary_targets(labels[:, k])
        vals.append(auroc(y[valid], scores[valid, j]))
    return float(np.mean(vals))


def retrieval_ranks(z_img: torch.Tensor, z_txt_unique: torch.Tensor, report_index: np.ndarray) -> np.ndarray:
    """1-based rank of each image's own (de-duplicated) report among all unique reports."""
    sims = (z_img @ z_txt_unique.T).numpy()
    own = sims[np.arange(len(sims)), report_index]
    return 1 + (sims > own[:, None]).sum(axis=1)


def text_to_image_ranks(z_img: torch.Tensor, z_txt_unique: torch.Tensor, report_index: np.ndarray) -> np.ndarray:
    """1-based rank of the best-ranked matching image for each unique report."""
    sims = (z_txt_unique @ z_img.T).numpy()  # (U, N)
    ranks = np.empty(len(sims), dtype=np.int64)
    for u in range(len(sims)):
        match = np.flatnonzero(report_index == u)
        best = sims[u, match].max()
        ranks[u] = 1 + int((sims[u] > best).sum())
    return ranks


def evaluate_model(
    model: Any, pairs: Any, test_idx: np.ndarray, train_idx: np.ndarray | None, eval_opts: Any, seed: int = 0
) -> dict[str, Any]:
    """All metrics of §1.6 on ``pairs[test_idx]``.

    Returns:
        ``{"metrics": {name: Metric}, "per_finding": {finding: Metric}, "scores": (N, F) array,
        "findings": [...], "z_img": (N, D) tensor}``.
    """
    from medfm.methods.chexficient.data import DERIVED

    n_boot = int(eval_opts.bootstrap)
    images = pairs.images(test_idx)
    z_img = model.encode_images(images)
    labels = pairs.labels[test_idx]
    findings = list(eval_opts.findings) or [
        f for k, f in enumerate(pairs.findings)
        if f not in DERIVED and len(np.unique(binary_targets(labels[:, k])[0])) == 2
    ]  # fmt: skip
    unknown = [f for f in findings if f not in pairs.findings]
    if unknown:
        from medfm.core.errors import UsageError

        raise UsageError(
            f"--eval.findings: {', '.join(unknown)} not in the data's labels ({', '.join(pairs.findings)})"
        )
    ks = [pairs.findings.index(f) for f in findings]
    metrics: dict[str, Metric] = {}
    per_finding: dict[str, Metric] = {}
    scores = np.zeros((len(test_idx), len(findings)))
    if findings:
        scores = zero_shot_scores(model, z_img, findings, dict(eval_opts.prompt_terms),
                                  eval_opts.positive_template, eval_opts.negative_template)  # fmt: skip
        per_finding = per_finding_auroc(scores, labels[:, ks], findings, n_boot, seed)
        ok = [j for j, f in enumerate(findings) if per_finding[f].value is not None]
        if ok:
            metrics["zero_shot_macro_auroc"] = macro_auroc(scores, labels[:, ks], ok, n_boot, seed)
    # retrieval with de-duplicated reports
    reports = [pairs.reports[i] for i in test_idx]
    unique = list(dict.fromkeys(reports))
    where = {r: j for j, r in enumerate(unique)}
    report_index = np.array([where[r] for r in reports])
    z_txt = model.encode_texts(unique)
    r_i2t = retrieval_ranks(z_img, z_txt, report_index)
    r_t2i = text_to_image_ranks(z_img, z_txt, report_index)
    for k in (1, 5, 10):
        metrics[f"i2t_recall@{k}"] = mean_ci((r_i2t <= k).astype(float), n_resamples=n_boot, seed=seed)
        metrics[f"t2i_recall@{k}"] = mean_ci((r_t2i <= k).astype(float), n_resamples=n_boot, seed=seed)
    metrics["i2t_mean_rank"] = mean_ci(r_i2t.astype(float), n_resamples=n_boot, seed=seed, higher_is_better=False)
    if eval_opts.linear_probe and train_idx is not None and len(train_idx) > 0 and findings:
        metrics.update(linear_probe(model, pairs, train_idx, z_img, labels, findings, ks, eval_opts, n_boot, seed))
    return {"metrics": metrics, "per_finding": per_finding, "scores": scores, "findings": findings, "z_img": z_img}


def linear_probe(model: Any, pairs: Any, train_idx: np.ndarray, z_test: torch.Tensor, test_labels: np.ndarray,
                 findings: list[str], ks: list[int], eval_opts: Any, n_boot: int, seed: int) -> dict[str, Metric]:  # fmt: skip
    """One-vs-rest logistic regression on L2-normalised frozen image embeddings; macro AUROC with CI."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    idx = np.asarray(train_idx)
    if len(idx) > eval_opts.probe_max_train:
        idx = np.sort(rng.choice(idx, eval_opts.probe_max_train, replace=False))
    z_train = model.encode_images(pairs.images(idx)).numpy()
    y_train_all = (pairs.labels[idx] == 1).astype(int)
    probs = np.full((len(z_test), len(findings)), np.nan)
    for j, k in enumerate(ks):
        y = y_train_all[:, k]
        if len(np.unique(y)) < 2:
            continue
        clf = LogisticRegression(max_iter=500, C=1.0)
        clf.fit(z_train, y)
        probs[:, j] = clf.predict_proba(z_test.numpy())[:, 1]
    y_test, valid = binary_targets(test_labels[:, ks])
    ok = [j for j in range(len(findings))
          if not np.isnan(probs[:, j]).any() and len(np.unique(y_test[valid[:, j], j])) == 2]  # fmt: skip
    if not ok:
        return {}
    m = macro_auroc(np.nan_to_num(probs), test_labels[:, ks], ok, n_boot, seed)
    m.note = f"logistic regression on {len(idx)} train images; mean over {len(ok)} findings"
    return {"linear_probe_macro_auroc": m}
