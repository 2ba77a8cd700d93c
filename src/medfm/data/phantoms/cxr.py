"""Synthetic frontal chest radiographs with findings, masks, reports, metadata and an optional planted shortcut.

Images are ``(N, H, W)`` float32 in [0, 1] (bright = dense), in radiological display convention: the
patient's right is on the image left, row 0 is superior. Anatomy (soft tissue, lungs with vascular
markings, heart, mediastinum with aortic knob, spine, 10 posterior rib pairs, clavicles, diaphragm, breast
shadows for women) is drawn as an attenuation map ``D`` and displayed as ``1 - exp(-1.5 D)``, then a
site-specific gamma, blur and noise are applied. Rendering is vectorised over batches of images.

Findings (:data:`FINDINGS`, CheXpert's 14 plus Nodule and Mass) are rendered where they belong (effusion at
the base with a meniscus, pneumothorax apicolaterally without markings and with a pleural line, ...). Each
is recorded as 1 (present), 0 (absent, negated in the report), -1 (uncertain: present but subtle, hedged in
the report) or blank/NaN (absent and not mentioned). ``No Finding``, ``Lung Opacity`` and ``Lung Lesion`` are
derived with CheXpert's hierarchy; the others are sampled per patient with the configured prevalence.

Determinism: patient ``p`` uses generators seeded by ``(seed, p, stream)``; images are assigned to
(patient, study) in order, so image ``i`` is the same whatever ``n`` is. A patient has a near-duplicate
second study with probability ``duplicate_rate`` (same anatomy and findings, small shift, gain and new noise).

Planted spurious feature: with ``spurious.label = L`` and ``spurious.cramers_v = V``, an image carries a
corner marker with probability ``a = pi + V (1 - pi)`` if ``L == 1`` and ``b = pi (1 - V)`` otherwise, where
``pi`` is the expected rate of ``L == 1``; then P(marker) = pi and the expected Cramér's V (= |phi| for 2x2)
between marker and label is V.

On disk (:func:`write_cxr_dataset`)::

    <out>/images/<id>.png        8- or 16-bit grayscale PNG, size x size
    <out>/manifest.csv           id, image (relative path), report, split, patient_id, age, sex, view, site,
                                 one column per finding (1, 0, -1 or blank), spurious (0/1)
    <out>/annotations.jsonl      one JSON object per image: id, patient_id, study, duplicate_of, ctr,
                                 findings: [{finding, value, side, box [x0, y0, x1, y1] (pixels, end exclusive),
                                 mask_rle}], spurious, spurious_box
    <out>/findings.json          finding names, configured prevalence, the RLE convention

``mask_rle`` is a run-length encoding of the (H, W) boolean mask in row-major order: alternating run lengths
starting with a run of zeros (:func:`rle_encode` / :func:`rle_decode`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medfm.data.phantoms.config import CXR_DERIVED, CXR_FINDINGS, CXRPhantomConfig

log = logging.getLogger(__name__)

FINDINGS: tuple[str, ...] = CXR_FINDINGS
SAMPLED: tuple[str, ...] = tuple(f for f in FINDINGS if f not in CXR_DERIVED)
LUNG_OPACITY_CHILDREN = ("Edema", "Consolidation", "Pneumonia", "Atelectasis", "Lung Lesion")
LUNG_LESION_CHILDREN = ("Nodule", "Mass")
_LATERALISED = {
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Nodule",
    "Mass",
}
_NDRAW = 10  # uniform draws per finding per patient (fixed, so presence never shifts other draws)


# ----------------------------------------------------------------------------------------------------------------------
# Small pure helpers


def rle_encode(mask: np.ndarray) -> list[int]:
    """Row-major run lengths of a boolean mask, starting with a (possibly empty) run of zeros."""
    flat = np.asarray(mask, bool).ravel()
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0, *runs]) if flat.size and flat[0] else runs


def rle_decode(runs: list[int], shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`rle_encode`."""
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape(shape)


def mask_box(mask: np.ndarray) -> list[int] | None:
    """``[x0, y0, x1, y1]`` (pixels, end exclusive) of a (H, W) mask, or None when empty."""
    rows = np.flatnonzero(mask.any(1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def cramers_v(a: np.ndarray, b: np.ndarray) -> float:
    """Cramér's V of two binary vectors (equals |phi| for a 2x2 table); 0 when a margin is constant."""
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    n11, n10 = float(np.sum(a & b)), float(np.sum(a & ~b))
    n01, n00 = float(np.sum(~a & b)), float(np.sum(~a & ~b))
    den = (n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00)
    return 0.0 if den == 0 else abs(n11 * n00 - n10 * n01) / float(np.sqrt(den))


def spurious_rates(pi: float, v: float) -> tuple[float, float]:
    """P(marker | label=1), P(marker | label=0) giving P(marker) = pi and Cramér's V = v (0 <= v <= 1)."""
    v = float(np.clip(v, 0.0, 1.0))
    return pi + v * (1 - pi), pi * (1 - v)


def expected_positive_rate(cfg: CXRPhantomConfig, label: str) -> float:
    """Expected fraction of images with ``label == 1`` under ``cfg`` (derived labels via the hierarchy)."""
    prev = cfg.prevalence.as_dict()
    certain = 1.0 - cfg.uncertain_rate

    def pos(name: str) -> float:
        if name == "Support Devices":
            return prev[name]
        return prev[name] * certain

    if label in prev:
        return pos(label)
    if label == "No Finding":
        return float(np.prod([1 - prev[f] for f in SAMPLED if f != "Support Devices"]))
    if label == "Lung Lesion":
        return 1 - float(np.prod([1 - pos(f) for f in LUNG_LESION_CHILDREN]))
    if label == "Lung Opacity":
        kids = [f for f in LUNG_OPACITY_CHILDREN if f != "Lung Lesion"] + list(LUNG_LESION_CHILDREN)
        return 1 - float(np.prod([1 - pos(f) for f in kids]))
    from medfm.core.errors import UsageError

    raise UsageError(f"--spurious.label {label!r} is not a finding; use one of: {', '.join(FINDINGS)}")


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) % 2**63, *map(int, key), 7]))


# ----------------------------------------------------------------------------------------------------------------------
# Per-patient / per-study sampling


@dataclass
class _Study:
    index: int
    patient: int
    study: int
    params: dict[str, float]
    strength: dict[str, float]  # finding -> 0 (absent), 0.5 (uncertain), 1 (present)
    side: dict[str, str]
    labels: dict[str, float]  # 1, 0, -1 or nan
    meta: dict[str, Any]
    report: str = ""
    spurious: bool = False


def _patient(cfg: CXRPhantomConfig, p: int) -> dict[str, Any]:
    """Patient-level draws: metadata, anatomy, findings (strength, side, parameters)."""
    rng = _rng(cfg.seed, p, 0)
    sex = "F" if rng.random() < 0.5 else "M"
    age = int(rng.integers(18, 91))
    site = int(rng.integers(0, max(1, cfg.sites)))
    split_u = rng.random()
    n_studies = 1 + int(rng.random() < cfg.duplicate_rate)
    an = rng.random(12)
    prev = cfg.prevalence.as_dict()
    frng = _rng(cfg.seed, p, 1)
    u = frng.random((len(SAMPLED), _NDRAW))
    strength, side, fparams = {}, {}, {}
    for i, name in enumerate(SAMPLED):
        present = u[i, 0] < prev[name]
        uncertain = present and name != "Support Devices" and u[i, 1] < cfg.uncertain_rate
        strength[name] = 0.0 if not present else 0.5 if uncertain else 1.0
        if name == "Pleural Effusion" and u[i, 2] < 0.3:
            side[name] = "bilateral"
        elif name in _LATERALISED:
            side[name] = "right" if u[i, 3] < 0.5 else "left"
        fparams[name] = u[i, 4:]
    view_ap = rng.random() < (0.7 if strength["Support Devices"] else 0.25)
    fr = np.cumsum(np.asarray(cfg.split, float) / max(sum(cfg.split), 1e-9))
    split = ("train", "valid", "test")[int(np.searchsorted(fr, split_u, side="right").clip(0, 2))]
    return {
        "sex": sex,
        "age": age,
        "site": site,
        "split": split,
        "n_studies": n_studies,
        "anatomy": an,
        "strength": strength,
        "side": side,
        "fparams": fparams,
        "view": "AP" if view_ap else "PA",
    }


def _plan(cfg: CXRPhantomConfig, n: int) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(patient, study, patient draws) for images 0..n-1, in order."""
    count, p = 0, 0
    while count < n:
        pat = _patient(cfg, p)
        for s in range(pat["n_studies"]):
            if count >= n:
                return
            yield p, s, pat
            count += 1
        p += 1


def _labels(strength: dict[str, float], mentioned_neg: np.ndarray) -> dict[str, float]:
    """Recorded labels: 1 / -1 for present / uncertain, 0 if negated in the report, nan if not mentioned."""
    out: dict[str, float] = {}
    for i, name in enumerate(SAMPLED):
        s = strength[name]
        out[name] = 1.0 if s == 1.0 else -1.0 if s > 0 else 0.0 if mentioned_neg[i] else float("nan")

    def combine(children: tuple[str, ...]) -> float:
        vals = [out[c] for c in children]
        if 1.0 in vals:
            return 1.0
        if -1.0 in vals:
            return -1.0
        return 0.0 if 0.0 in vals else float("nan")

    out["Lung Lesion"] = combine(LUNG_LESION_CHILDREN)
    out["Lung Opacity"] = combine(LUNG_OPACITY_CHILDREN)
    out["No Finding"] = 0.0 if any(strength[f] > 0 for f in SAMPLED if f != "Support Devices") else 1.0
    return {f: out[f] for f in FINDINGS}


# ----------------------------------------------------------------------------------------------------------------------
# Reports

_ZONE = {True: "upper", False: "lower"}
_POS: dict[str, list[str]] = {
    "Cardiomegaly": [
        "The heart is enlarged.",
        "Cardiomegaly.",
        "Enlarged cardiac silhouette.",
        "The cardiac silhouette is enlarged.",
    ],
    "Enlarged Cardiomediastinum": [
        "The cardiomediastinal silhouette is widened.",
        "Widened mediastinum.",
        "The superior mediastinum appears widened.",
    ],
    "Edema": [
        "There is pulmonary edema.",
        "Perihilar haziness consistent with pulmonary edema.",
        "Findings of interstitial pulmonary edema.",
        "Vascular congestion with mild edema.",
    ],
    "Consolidation": [
        "{Side} {zone} lobe consolidation.",
        "There is consolidation in the {side} {zone} lobe.",
        "Dense airspace consolidation in the {side} {zone} lung.",
    ],
    "Pneumonia": [
        "Findings consistent with {side} {zone} lobe pneumonia.",
        "{Side} {zone} lobe pneumonia.",
        "Patchy airspace disease in the {side} {zone} lung compatible with pneumonia.",
    ],
    "Atelectasis": [
        "{Side} basilar atelectasis.",
        "Plate-like atelectasis at the {side} base.",
        "There is subsegmental atelectasis in the {side} lower lung.",
    ],
    "Pneumothorax": [
        "{Side} apical pneumothorax.",
        "There is a {size} {side} pneumothorax.",
        "A {size} {side} pneumothorax is present.",
    ],
    "Pleural Effusion": [
        "{Side} pleural effusion.",
        "There is a {size} {side} pleural effusion.",
        "Blunting of the {side} costophrenic angle consistent with a pleural effusion.",
    ],
    "Pleural Other": ["{Side} pleural thickening.", "Pleural thickening along the {side} lateral chest wall."],
    "Fracture": [
        "Fracture of the {side} {rib} rib.",
        "There is a {side} {rib} rib fracture.",
        "Healing fracture of the {side} lateral {rib} rib.",
    ],
    "Support Devices": ["{device}"],
    "Nodule": ["{Side} {zone} lung nodule.", "A {mm} mm nodule in the {side} {zone} lung."],
    "Mass": ["{Side} {zone} lung mass.", "A {mm} mm mass in the {side} {zone} lung."],
}
_TERM = {  # noun phrase used in negations and hedges (must contain the finding's keyword)
    "Cardiomegaly": "cardiomegaly",
    "Enlarged Cardiomediastinum": "mediastinal widening",
    "Edema": "pulmonary edema",
    "Consolidation": "focal consolidation",
    "Pneumonia": "pneumonia",
    "Atelectasis": "atelectasis",
    "Pneumothorax": "pneumothorax",
    "Pleural Effusion": "pleural effusion",
    "Pleural Other": "pleural thickening",
    "Fracture": "displaced rib fracture",
    "Support Devices": "support devices",
    "Nodule": "pulmonary nodule",
    "Mass": "lung mass",
}
_HEDGE_TERM = {
    "Consolidation": "{side} {zone} consolidation",
    "Pneumonia": "early {side} pneumonia",
    "Pneumothorax": "small {side} pneumothorax",
    "Pleural Effusion": "small {side} pleural effusion",
    "Fracture": "{side} {rib} rib fracture",
    "Nodule": "{side} lung nodule",
    "Mass": "{side} lung mass",
    "Atelectasis": "{side} basilar atelectasis",
    "Pleural Other": "{side} pleural thickening",
}
_NEG_SPECIAL = {
    "Cardiomegaly": [
        "Heart size is normal.",
        "The heart is not enlarged.",
        "No cardiomegaly.",
        "Cardiac silhouette is within normal limits.",
    ],
    "Enlarged Cardiomediastinum": [
        "The mediastinum is not widened.",
        "Normal mediastinal contours.",
        "Mediastinal contours are within normal limits.",
    ],
}
_NEG = ["No {t}.", "There is no {t}.", "No evidence of {t}.", "Negative for {t}."]
_HEDGE = ["Possible {t}.", "{T} cannot be excluded.", "Questionable {t}.", "Findings may represent {t}."]
_NORMAL_IMPRESSION = [
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "No acute intrathoracic process.",
]
_RIBS = ["fourth", "fifth", "sixth", "seventh", "eighth", "ninth"]


def _fill(text: str, name: str, st: _Study) -> str:
    side = st.side.get(name, "right")
    fp = st.meta["fparams"][name]
    ctx = {
        "side": side,
        "Side": side.capitalize(),
        "zone": _ZONE[bool(fp[1] < 0.5)],
        "size": "small" if st.strength[name] < 1 or fp[0] < 0.5 else "moderate",
        "rib": _RIBS[int(fp[2] * len(_RIBS)) % len(_RIBS)],
        "mm": str(int(10 + 15 * fp[0])) if name == "Nodule" else str(int(40 + 30 * fp[0])),
        "device": (
            "A right subclavian central venous catheter terminates in the SVC."
            if fp[3] < 0.5
            else "Left chest wall pacemaker with a lead in the right ventricle and a right central venous catheter."
        ),
    }
    if side == "bilateral":
        text = text.replace("a {size} {side} pleural effusion", "{size} bilateral pleural effusions")
        text = text.replace("{Side} pleural effusion", "Bilateral pleural effusions")
    return text.format(**ctx)


def compose_report(st: _Study, rng: np.random.Generator, mention_neg: np.ndarray) -> str:
    """FINDINGS + IMPRESSION text that agrees with ``st.labels`` (one sentence per mentioned finding,
    negatives optionally grouped, hedges for uncertain findings)."""
    pos, neg_single, neg_group = [], [], []
    impression = []
    for i, name in enumerate(SAMPLED):
        s = st.strength[name]
        if s == 1.0:
            sent = _fill(_POS[name][int(rng.integers(len(_POS[name])))], name, st)
            pos.append(sent)
            if name != "Support Devices" or rng.random() < 0.3:
                impression.append(sent)
        elif s > 0:
            term = _fill(_HEDGE_TERM.get(name, _TERM[name]), name, st)
            tpl = _HEDGE[int(rng.integers(len(_HEDGE)))]
            sent = tpl.format(t=term, T=term[0].upper() + term[1:])
            pos.append(sent)
            impression.append(sent)
        elif mention_neg[i]:
            if name in _NEG_SPECIAL:
                neg_single.append(_NEG_SPECIAL[name][int(rng.integers(len(_NEG_SPECIAL[name])))])
            elif name != "Support Devices":
                neg_group.append(_TERM[name])
    rng.shuffle(pos)
    rng.shuffle(neg_group)
    sentences = list(neg_single[:1]) + pos + neg_single[1:]
    while neg_group:
        k = int(rng.integers(1, 4))
        chunk, neg_group = neg_group[:k], neg_group[k:]
        if len(chunk) == 1:
            sentences.append(_NEG[int(rng.integers(len(_NEG)))].format(t=chunk[0]))
        else:
            joined = ", ".join(chunk[:-1]) + " or " + chunk[-1]
            sentences.append(_NEG[int(rng.integers(2))].format(t=joined))
    view = "Portable AP view of the chest." if st.meta["view"] == "AP" else "PA view of the chest."
    if impression:
        imp = " ".join(f"{j + 1}. {s}" for j, s in enumerate(impression)) if len(impression) > 1 else impression[0]
    else:
        imp = _NORMAL_IMPRESSION[int(rng.integers(len(_NORMAL_IMPRESSION)))]
    return f"FINDINGS: {view} {' '.join(sentences)}\nIMPRESSION: {imp}"


# ----------------------------------------------------------------------------------------------------------------------
# Rendering


@dataclass
class CXRBatch:
    """Generated images with their ground truth.

    Attributes:
        images: (N, H, W) float32 in [0, 1], bright = dense.
        labels: (N, F) float32 over :data:`FINDINGS`: 1 present, 0 negated, -1 uncertain, NaN not mentioned.
        present: (N, F) bool, whether the finding is rendered in the image (label 1 or -1).
        masks: per image, finding name -> (H, W) bool mask of where it is rendered (present findings only).
        spurious: (N,) bool, whether the image carries the planted marker.
        records: per image dict: id, patient_id, study, duplicate_of, age, sex, view, site, split, report,
            labels (finding -> 1/0/-1/None), sides, boxes (finding -> [x0, y0, x1, y1]), ctr, spurious_box.
    """

    images: np.ndarray
    labels: np.ndarray
    present: np.ndarray
    masks: list[dict[str, np.ndarray]]
    spurious: np.ndarray
    records: list[dict[str, Any]] = field(default_factory=list)


def _site_table(cfg: CXRPhantomConfig) -> np.ndarray:
    """(sites, 3): gamma, blur sigma (fraction of size), noise sd per site."""
    rng = _rng(cfg.seed, 10**9, 3)
    k = max(1, cfg.sites)
    table = np.stack([rng.uniform(0.8, 1.25, k), rng.uniform(0.002, 0.007, k), rng.uniform(0.008, 0.03, k)], 1)
    table[0] = (1.0, 0.004, 0.015)
    return table


def _texture_bank(cfg: CXRPhantomConfig, size: int, k: int = 16) -> np.ndarray:
    """(k, H, W) smooth zero-mean unit-variance textures (lung markings), seeded by ``cfg.seed`` only."""
    rng = _rng(cfg.seed, 10**9, 4)
    bank = ndimage.gaussian_filter(rng.standard_normal((k, size, size), dtype=np.float32), (0, size / 110, size / 110))
    bank -= bank.mean(axis=(1, 2), keepdims=True)
    bank /= bank.std(axis=(1, 2), keepdims=True)
    return bank


def _soft(v: np.ndarray, width: float) -> np.ndarray:
    """Soft step: 0 for v <= -width/2 ... 1 for v >= width/2 (anti-aliased edges)."""
    return np.clip(v / width + 0.5, 0, 1)


def _ell(X: np.ndarray, Y: np.ndarray, cx: Any, cy: Any, ax: Any, ay: Any) -> np.ndarray:
    return ((X - cx) / ax) ** 2 + ((Y - cy) / ay) ** 2


def _seg_dist(X: np.ndarray, Y: np.ndarray, p0: tuple[Any, Any], p1: tuple[Any, Any]) -> np.ndarray:
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((X - p0[0]) * dx + (Y - p0[1]) * dy) / (dx * dx + dy * dy + 1e-12), 0, 1)
    return np.sqrt((X - p0[0] - t * dx) ** 2 + (Y - p0[1] - t * dy) ** 2)


_GLYPH = np.array(
    [
        [1, 1, 1, 1, 1],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 0, 0],
    ],
    bool,
)  # a "T" token, 7 x 5


def _marker(cfg: CXRPhantomConfig, size: int) -> tuple[np.ndarray, list[int]]:
    """(H, W) bool marker pattern and its box [x0, y0, x1, y1]."""
    scale = max(1, round(size / 64))
    if cfg.spurious.kind == "square":
        glyph = np.ones((5 * scale, 5 * scale), bool)
    else:
        glyph = np.kron(_GLYPH, np.ones((scale, scale), bool))
    h, w = glyph.shape
    m = max(2, size // 32)
    y0 = m if cfg.spurious.corner.startswith("top") else size - m - h
    x0 = m if cfg.spurious.corner.endswith("left") else size - m - w
    out = np.zeros((size, size), bool)
    out[y0 : y0 + h, x0 : x0 + w] = glyph
    return out, [x0, y0, x0 + w, y0 + h]


def _render(
    studies: list[_Study], size: int, bank: np.ndarray, sites: np.ndarray
) -> tuple[np.ndarray, list[dict[str, np.ndarray]], np.ndarray]:
    """Render a batch. Returns images (B, H, W) in [0, 1] (before marker), masks, cardiothoracic ratios."""
    B = len(studies)
    g = (np.arange(size, dtype=np.float32) + 0.5) / size
    X = g[None, None, :]
    Y = g[None, :, None]

    def col(key: str) -> np.ndarray:
        return np.array([st.params[key] for st in studies], np.float32)[:, None, None]

    cx, cy0, s, tw = col("cx"), col("cy0"), col("s"), col("tw")
    lcx = {"right": cx - 0.175 * s, "left": cx + 0.175 * s}
    lat = {"right": -1.0, "left": 1.0}  # image-x direction of each lung's lateral wall
    lax, lay, lcy = 0.135 * s, 0.30 * s, 0.44 + cy0
    dome = {"right": col("dome"), "left": col("dome") + 0.025}
    lung = {}
    r2 = {}
    for side in ("right", "left"):
        r2[side] = _ell(X, Y, lcx[side], lcy, lax * (0.97 if side == "left" else 1.0), lay)
        yd = dome[side] + 0.07 * ((X - lcx[side]) / lax) ** 2
        lung[side] = np.clip((1 - r2[side]) / 0.12, 0, 1) * _soft(yd - Y, 0.012)
    hw, hh = col("ctr") * tw, 0.12 * s
    hcx, hcy = cx + 0.3 * hw, 0.615 + cy0
    heart = np.clip((1 - _ell(X, Y, hcx, hcy, hw, hh)) / 0.1, 0, 1)
    mw = col("mw")
    med = _soft(mw - np.abs(X - cx - 0.01), 0.012) * _soft(0.58 + cy0 - Y, 0.02) * _soft(Y - 0.04, 0.02)
    knob = np.clip((1 - _ell(X, Y, cx + mw, 0.29 + cy0, 0.03, 0.025)) / 0.2, 0, 1)
    med = np.maximum(med, knob)
    spine = _soft(0.03 - np.abs(X - cx), 0.01)
    width = np.where(0.09 + cy0 > Y, 0.09, tw + 0.07)
    body = _soft(width - np.abs(X - cx), 0.02)
    dome_all = np.where(cx > X, dome["right"], dome["left"])
    abd = _soft(Y - dome_all - 0.01, 0.03) * body
    t = (Y - cy0 - 0.12 - 0.16 * ((X - cx) / tw) ** 2) / (0.055 * s)
    frac = t - np.floor(t)
    ribs = np.clip(1 - np.abs(frac - 0.5) * 4.5, 0, 1) * ((t >= 0) & (t < 10)) * _soft(np.abs(X - cx) - 0.035, 0.01)
    ribs *= _soft(tw - np.abs(X - cx), 0.02) * _soft(dome_all + 0.04 - Y, 0.02)
    top = int(np.ceil(0.3 * size))  # clavicles live in the top 30 % of rows
    Yt = Y[:, :top]
    clav = np.zeros((B, top, size), np.float32)
    for sgn in (-1, 1):
        d = _seg_dist(X, Yt, (cx + sgn * 0.04, 0.17 + cy0), (cx + sgn * 0.27 * s, 0.12 + cy0))
        clav = np.maximum(clav, _soft(0.014 - d, 0.006))
    lo = int(0.55 * size)  # breast shadows: lower rows, women only
    Yb = Y[:, lo:]
    breast = np.zeros((B, size - lo, size), np.float32)
    fem = np.flatnonzero(col("female")[:, 0, 0] > 0.5)
    for sgn in (-1, 1):
        breast[fem] += np.clip((1 - _ell(X, Yb, cx[fem] + sgn * 0.2 * s[fem], 0.74 + cy0[fem], 0.13, 0.08)) / 0.5, 0, 1)
    idx_tex = np.array([int(st.params["tex"]) for st in studies])
    tex = bank[idx_tex]
    flip = np.array([st.params["flip"] > 0.5 for st in studies])
    tex[flip] = tex[flip, :, ::-1]
    hilar = 0.3 + 0.7 * np.exp(-(((np.abs(X - cx) - 0.1) / 0.12) ** 2 + ((Y - 0.45 - cy0) / 0.15) ** 2))
    lung_any = np.maximum(lung["right"], lung["left"]) * (1 - 0.8 * heart)
    markings = np.clip(tex, 0, None) * hilar

    D = 0.55 * body + 0.22 * abd + 0.3 * med + 0.38 * heart + 0.18 * spine + 0.22 * ribs * body
    D[:, :top] += 0.3 * clav
    D[:, lo:] += 0.12 * breast
    D += lung_any * (0.09 * markings - 0.42)

    masks: list[dict[str, np.ndarray]] = [{} for _ in range(B)]

    def strength(name: str) -> np.ndarray:
        return np.array([st.strength[name] for st in studies], np.float32)

    def fp(name: str, k: int) -> np.ndarray:
        return np.array([st.meta["fparams"][name][k] for st in studies], np.float32)[:, None, None]

    def sides(name: str) -> list[str]:
        return [st.side.get(name, "right") for st in studies]

    def add(name: str, i: np.ndarray, delta: np.ndarray, mask: np.ndarray) -> None:
        D[i] += delta
        for j, m, dj in zip(i, mask, np.broadcast_to(delta, mask.shape)):
            if not m.any():  # sub-pixel finding at small sizes: the pixels it changes most
                mag = np.abs(dj)
                m = mag >= 0.5 * mag.max() if mag.max() > 0 else m
            if m.any():
                masks[j][name] = m

    def lung_of(name: str, i: np.ndarray) -> np.ndarray:
        sd = sides(name)
        return np.stack([lung["left" if sd[j] == "left" else "right"][j] for j in i])

    def sub(a: np.ndarray, i: np.ndarray) -> np.ndarray:
        return a[i] if a.shape[0] == B else a

    def lcx_of(name: str, i: np.ndarray) -> np.ndarray:
        sd = sides(name)
        return np.stack([lcx["left" if sd[j] == "left" else "right"][j] for j in i])

    def lat_of(name: str, i: np.ndarray) -> np.ndarray:
        sd = sides(name)
        return np.array([lat["left" if sd[j] == "left" else "right"] for j in i], np.float32)[:, None, None]

    # anatomy-modifying findings: masks describe the enlarged structure
    for name, region in (("Cardiomegaly", heart), ("Enlarged Cardiomediastinum", med)):
        i = np.flatnonzero(strength(name))
        for j in i:
            m = region[j] > 0.5
            if m.any():
                masks[j][name] = m

    # pleural effusion: basal fluid with a meniscus rising laterally
    name = "Pleural Effusion"
    i = np.flatnonzero(strength(name))
    if i.size:
        st_ = strength(name)[i][:, None, None]
        level = sub(col("dome"), i) - (0.03 + 0.1 * fp(name, 0)[i]) * st_
        total = np.zeros((i.size, size, size), np.float32)
        for side in ("right", "left"):
            use = np.array([studies[j].side[name] in (side, "bilateral") for j in i], np.float32)[:, None, None]
            lateral = np.clip((X - sub(lcx[side], i)) * lat[side] / sub(lax, i), 0, 1)
            yl = level + (0.025 if side == "left" else 0) - 0.08 * lateral**2
            fluid = lung[side][i] * _soft(Y - yl, 0.01) * use
            total = np.maximum(total, fluid)
        add(name, i, 0.45 * total, total > 0.5)

    # pneumothorax: apicolateral region without markings, darker, with a thin pleural line
    name = "Pneumothorax"
    i = np.flatnonzero(strength(name))
    if i.size:
        st_ = strength(name)[i][:, None, None]
        f = 0.55 + 0.2 * fp(name, 0)[i] + 0.2 * (1 - st_)
        rr = np.stack([r2["left" if studies[j].side[name] == "left" else "right"][j] for j in i])
        ln = lung_of(name, i)
        lateral = (X - lcx_of(name, i)) * lat_of(name, i) / sub(lax, i)
        region = ln * _soft(rr - f, 0.03) * _soft(lateral + 0.3, 0.1) * _soft(sub(lcy, i) + 0.12 - Y, 0.04)
        line = np.exp(-(((np.sqrt(rr) - np.sqrt(f)) / 0.012) ** 2)) * ln * _soft(lateral + 0.3, 0.1)
        line *= _soft(sub(lcy, i) + 0.12 - Y, 0.04)
        add(name, i, -0.09 * markings[i] * region - 0.05 * region + 0.1 * line, region > 0.5)

    # parenchymal opacities in one lung zone
    for name, amp, patchy in (("Consolidation", 0.38, False), ("Pneumonia", 0.3, True)):
        i = np.flatnonzero(strength(name))
        if not i.size:
            continue
        st_ = strength(name)[i][:, None, None]
        zone_y = np.where(fp(name, 1)[i] < 0.5, sub(lcy, i) - 0.1, sub(lcy, i) + 0.1)
        bx = lcx_of(name, i) + lat_of(name, i) * 0.25 * sub(lax, i) * (fp(name, 2)[i] - 0.3)
        rad = (0.06 + 0.03 * fp(name, 3)[i]) * (0.7 + 0.3 * st_)
        blob = np.clip((1 - _ell(X, Y, bx, zone_y, rad * 1.2, rad)) / 0.3, 0, 1)
        if patchy:
            blob = blob * _soft(tex[i] + 0.4, 0.6)
        region = blob * lung_of(name, i)
        add(name, i, amp * st_ * region * (0.8 + 0.2 * np.clip(tex[i], -1, 1)), region > 0.4)

    # atelectasis: plate-like band above the hemidiaphragm
    name = "Atelectasis"
    i = np.flatnonzero(strength(name))
    if i.size:
        st_ = strength(name)[i][:, None, None]
        dome_side = np.array(
            [float(dome["left" if studies[j].side[name] == "left" else "right"][j, 0, 0]) for j in i], np.float32
        )[:, None, None]
        by = dome_side - 0.05 - 0.04 * fp(name, 0)[i]
        bx = lcx_of(name, i) + 0.03 * (fp(name, 1)[i] - 0.5)
        tilt = 0.15 * (fp(name, 2)[i] - 0.5)
        band = np.clip((1 - _ell(X, Y - tilt * (X - bx), bx, by, 0.08, 0.014)) / 0.3, 0, 1) * lung_of(name, i)
        add(name, i, 0.32 * st_ * band, band > 0.4)

    # edema: bilateral perihilar haze
    name = "Edema"
    i = np.flatnonzero(strength(name))
    if i.size:
        st_ = strength(name)[i][:, None, None]
        w = np.exp(-(((X - sub(cx, i)) / 0.2) ** 2 + ((Y - 0.47 - sub(cy0, i)) / 0.16) ** 2))
        haze = w * lung_any[i] * (0.8 + 0.2 * np.clip(tex[i], -1, 1))
        haze *= _soft(haze - 0.15, 0.1)  # fade out the far tails so the haze stays inside its mask
        add(name, i, 0.3 * st_ * haze, haze > 0.05)

    # nodule / mass: round opacities within one lung, above the diaphragm
    for name, r_lo, r_hi in (("Nodule", 0.018, 0.03), ("Mass", 0.05, 0.08)):
        i = np.flatnonzero(strength(name))
        if not i.size:
            continue
        st_ = strength(name)[i][:, None, None]
        rad = np.maximum(r_lo + (r_hi - r_lo) * fp(name, 0)[i], 1.5 / size)
        cx_n = lcx_of(name, i) + (fp(name, 2)[i] - 0.5) * 0.9 * sub(lax, i) - lat_of(name, i) * 0.1 * rad
        cy_n = sub(lcy, i) - 0.15 + 0.22 * fp(name, 1)[i]
        disk = np.clip((1 - _ell(X, Y, cx_n, cy_n, rad, rad)) / 0.25, 0, 1) * lung_of(name, i)
        add(name, i, 0.4 * st_ * disk, disk > 0.4)

    # pleural thickening along the lateral wall
    name = "Pleural Other"
    i = np.flatnonzero(strength(name))
    if i.size:
        st_ = strength(name)[i][:, None, None]
        rr = np.stack([r2["left" if studies[j].side[name] == "left" else "right"][j] for j in i])
        lateral = (X - lcx_of(name, i)) * lat_of(name, i) / sub(lax, i)
        yc = sub(lcy, i) + 0.2 * (fp(name, 0)[i] - 0.5)
        band = lung_of(name, i) * _soft(rr - 0.72, 0.06) * _soft(lateral - 0.2, 0.1) * _soft(0.1 - np.abs(Y - yc), 0.03)
        add(name, i, 0.3 * st_ * band, band > 0.4)

    # rib fracture: callus and a gap across one lateral rib
    name = "Fracture"
    i = np.flatnonzero(strength(name))
    if i.size:
        st_ = strength(name)[i][:, None, None]
        k = 2 + np.floor(fp(name, 2)[i] * 6)
        xf = sub(cx, i) + lat_of(name, i) * (0.6 + 0.25 * fp(name, 0)[i]) * sub(tw, i)
        yf = sub(cy0, i) + 0.12 + 0.16 * ((xf - sub(cx, i)) / sub(tw, i)) ** 2 + 0.055 * sub(s, i) * (k + 0.5)
        callus = np.clip((1 - _ell(X, Y, xf, yf, 0.02, 0.016)) / 0.3, 0, 1)
        gap = _soft(0.006 - np.abs(X - xf), 0.004) * _soft(0.02 - np.abs(Y - yf), 0.01)
        add(name, i, st_ * (0.3 * callus - 0.25 * gap * ribs[i]), (callus + gap) > 0.3)

    # support devices: central line (always) and a pacemaker with a lead (half)
    name = "Support Devices"
    i = np.flatnonzero(strength(name))
    if i.size:
        c = sub(cx, i)
        y0 = sub(cy0, i)
        r = max(0.006, 0.7 / size)
        d = np.minimum(
            _seg_dist(X, Y, (c - 0.25, 0.14 + y0), (c - 0.06, 0.2 + y0)),
            _seg_dist(X, Y, (c - 0.06, 0.2 + y0), (c - 0.02, 0.44 + y0)),
        )
        dev = _soft(r - d, 0.004)
        pm = (fp(name, 3)[i] >= 0.5).astype(np.float32)
        box = _soft(0.035 - np.abs(X - c - 0.24), 0.006) * _soft(0.025 - np.abs(Y - 0.16 - y0), 0.006)
        lead = _soft(r - _seg_dist(X, Y, (c + 0.22, 0.17 + y0), (c + 0.05, 0.62 + y0)), 0.004)
        dev = np.maximum(dev, pm * np.maximum(box, lead))
        add(name, i, 0.6 * dev, dev > 0.3)

    img = 1 - np.exp(-1.5 * np.clip(D, 0, None))
    gain = col("gain")
    img = np.clip(img * gain, 0, 1)
    site = np.array([st.meta["site"] for st in studies])
    for k in np.unique(site):
        sel = np.flatnonzero(site == k)
        gamma, blur, _ = sites[k]
        part = img[sel] if gamma == 1.0 else img[sel] ** gamma
        img[sel] = ndimage.gaussian_filter(part, (0, blur * size, blur * size))
    ctr = (2 * hw / (2 * tw))[:, 0, 0]
    return img, masks, ctr


def _sample_study(cfg: CXRPhantomConfig, index: int, p: int, s: int, pat: dict[str, Any], n_tex: int) -> _Study:
    srng = _rng(cfg.seed, p, 2 + s)
    a = pat["anatomy"]
    female = pat["sex"] == "F"
    sc = (0.97 if female else 1.03) * (0.96 + 0.08 * a[0])
    st_cm = pat["strength"]["Cardiomegaly"]
    ctr = 0.40 + 0.08 * a[1] if st_cm == 0 else (0.52 + 0.03 * a[1] if st_cm < 1 else 0.56 + 0.1 * a[1])
    if pat["view"] == "AP":
        ctr = min(ctr * 1.05, 0.5) if st_cm == 0 else ctr * 1.03
    st_em = pat["strength"]["Enlarged Cardiomediastinum"]
    mw = 0.05 + 0.012 * a[2] + (0.035 + 0.015 * a[3]) * st_em
    shift = srng.normal(0, 0.008, 2) if s else np.zeros(2)
    params = {
        "cx": 0.5 + 0.024 * (a[4] - 0.5) + shift[0],
        "cy0": 0.024 * (a[5] - 0.5) + shift[1],
        "s": sc,
        "tw": 0.37 * sc,
        "dome": 0.69 + 0.03 * a[6],
        "ctr": ctr,
        "mw": mw,
        "female": float(female),
        "tex": int(a[7] * n_tex) % n_tex,
        "flip": a[8],
        "gain": (1.0 + srng.normal(0, 0.03)) if s else 1.0,
    }
    meta = {
        "sex": pat["sex"],
        "age": pat["age"],
        "view": pat["view"],
        "site": pat["site"],
        "split": pat["split"],
        "fparams": pat["fparams"],
    }
    mrng = _rng(cfg.seed, p, 1000)
    mention_neg = mrng.random(len(SAMPLED)) < cfg.mention_negative
    mention_neg[SAMPLED.index("Support Devices")] = False  # devices are reported when present only
    labels = _labels(pat["strength"], mention_neg)
    st = _Study(index, p, s, params, pat["strength"], pat["side"], labels, meta)
    st.report = compose_report(st, _rng(cfg.seed, p, 2000 + s), mention_neg)
    st.meta["mention_neg"] = mention_neg
    return st


def iter_cxr_batches(cfg: CXRPhantomConfig, n: int | None = None) -> Iterator[CXRBatch]:
    """Yield :class:`CXRBatch` objects of up to ``cfg.batch_size`` images, in order (memory stays bounded)."""
    n = cfg.n if n is None else n
    if cfg.limit is not None:
        n = min(n, cfg.limit)
    size = int(cfg.size)
    if size < 32:
        from medfm.core.errors import UsageError

        raise UsageError(f"--size must be at least 32 pixels, got {size}")
    bank = _texture_bank(cfg, size)
    sites = _site_table(cfg)
    target = cfg.spurious.label
    a_rate = b_rate = 0.0
    if target is not None:  # expected_positive_rate rejects a label that is not a finding
        a_rate, b_rate = spurious_rates(expected_positive_rate(cfg, target), cfg.spurious.cramers_v)
    marker, marker_box = _marker(cfg, size)
    fidx = {f: k for k, f in enumerate(FINDINGS)}
    batch: list[_Study] = []
    first_id: dict[int, str] = {}

    def flush(studies: list[_Study]) -> CXRBatch:
        imgs, masks, ctr = _render(studies, size, bank, sites)
        labels = np.array([[st.labels[f] for f in FINDINGS] for st in studies], np.float32)
        present = np.zeros(labels.shape, bool)
        spur = np.zeros(len(studies), bool)
        records = []
        for j, st in enumerate(studies):
            for f in SAMPLED:
                present[j, fidx[f]] = st.strength[f] > 0
            nrng = _rng(cfg.seed, st.patient, 3000 + st.study)
            noise_sd = sites[st.meta["site"]][2]
            imgs[j] = np.clip(imgs[j] + nrng.normal(0, noise_sd, (size, size)).astype(np.float32), 0, 1)
            if target is not None:
                y = st.labels[target] == 1.0
                spur[j] = nrng.random() < (a_rate if y else b_rate)
                if spur[j]:
                    imgs[j][marker] = 1.0
            # derived findings: masks are unions of their children's masks
            for parent, kids in (("Lung Lesion", LUNG_LESION_CHILDREN), ("Lung Opacity", LUNG_OPACITY_CHILDREN)):
                ms = [masks[j][k] for k in kids if k in masks[j]]
                if ms:
                    masks[j][parent] = np.logical_or.reduce(ms)
                    present[j, fidx[parent]] = True
            pid = f"p{st.patient:06d}"
            iid = f"cxr_{st.index:06d}"
            if st.study == 0:
                first_id[st.patient] = iid
            records.append(
                {
                    "id": iid,
                    "patient_id": pid,
                    "study": st.study,
                    "duplicate_of": None
                    if st.study == 0
                    else first_id.get(st.patient, f"cxr_{st.index - st.study:06d}"),
                    "age": st.meta["age"],
                    "sex": st.meta["sex"],
                    "view": st.meta["view"],
                    "site": f"site{st.meta['site']}",
                    "split": st.meta["split"],
                    "report": st.report,
                    "labels": {f: (None if np.isnan(v) else int(v)) for f, v in st.labels.items()},
                    "sides": {f: st.side[f] for f in SAMPLED if st.strength[f] > 0 and f in st.side},
                    "boxes": {f: mask_box(m) for f, m in masks[j].items()},
                    "ctr": round(float(ctr[j]), 4),
                    "spurious": int(spur[j]),
                    "spurious_box": marker_box if spur[j] else None,
                }
            )
        return CXRBatch(imgs.astype(np.float32), labels, present, masks, spur, records)

    for index, (p, s, pat) in enumerate(_plan(cfg, n)):
        batch.append(_sample_study(cfg, index, p, s, pat, bank.shape[0]))
        if len(batch) >= cfg.batch_size:
            yield flush(batch)
            batch = []
    if batch:
        yield flush(batch)


def generate_cxr(
    n: int, seed: int = 0, size: int = 128, cfg: CXRPhantomConfig | None = None, **overrides: Any
) -> CXRBatch:
    """In-memory generator: ``n`` images with labels, masks, metadata and reports (no disk access).

    Args:
        n: number of images.
        seed: dataset seed.
        size: image size in pixels (square).
        cfg: full configuration (``n``, ``seed``, ``size`` arguments override it).
        **overrides: nested config values, e.g. ``prevalence={"Cardiomegaly": 0.5}``,
            ``spurious={"label": "Pneumothorax", "cramers_v": 0.8}`` (finding names with spaces or underscores).

    Returns:
        A :class:`CXRBatch` with ``images`` (N, H, W) float32 in [0, 1].
    """
    from medfm.core import config as cfgmod

    base = cfg or CXRPhantomConfig()
    data: dict[str, Any] = {"n": n, "seed": seed, "size": size}
    for key, value in overrides.items():
        if key == "prevalence" and isinstance(value, dict):
            value = {k.replace(" ", "_"): v for k, v in value.items()}
        data[key] = value
    full = cfgmod.merge(base, data)
    batches = list(iter_cxr_batches(full))
    if not batches:
        h = int(size)
        return CXRBatch(
            np.zeros((0, h, h), np.float32),
            np.zeros((0, len(FINDINGS)), np.float32),
            np.zeros((0, len(FINDINGS)), bool),
            [],
            np.zeros(0, bool),
            [],
        )
    return CXRBatch(
        np.concatenate([b.images for b in batches]),
        np.concatenate([b.labels for b in batches]),
        np.concatenate([b.present for b in batches]),
        [m for b in batches for m in b.masks],
        np.concatenate([b.spurious for b in batches]),
        [r for b in batches for r in b.records],
    )


def to_png_array(image: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """(H, W) float [0, 1] -> uint8 or uint16 pixel values."""
    top = 255 if bit_depth == 8 else 65535
    return np.rint(np.clip(image, 0, 1) * top).astype(np.uint8 if bit_depth == 8 else np.uint16)


def write_png(path: str | Path, image: np.ndarray, bit_depth: int = 8) -> Path:
    """Write a (H, W) float [0, 1] image as an 8- or 16-bit grayscale PNG, atomically (:func:`medfm.data.io.save_png`)."""
    from medfm.data.io import save_png

    return save_png(path, image, bit_depth)


def write_cxr_dataset(
    cfg: CXRPhantomConfig, out_dir: str | Path, batches: Iterable[CXRBatch] | None = None
) -> dict[str, Any]:
    """Generate and write the dataset (layout in the module docstring). Returns a summary dict.

    ``batches`` are written instead of generating them again when the caller already has the images of
    ``cfg`` (``iter_cxr_batches(cfg)`` or ``generate_cxr(..., cfg=cfg)``).
    """
    from medfm.core.files import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    columns = ["id", "image", "report", "split", "patient_id", "age", "sex", "view", "site", *FINDINGS, "spurious"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    ann_lines: list[str] = []
    n_done = 0
    counts = np.zeros(len(FINDINGS))
    spur = 0
    for batch in iter_cxr_batches(cfg) if batches is None else batches:
        for j, rec in enumerate(batch.records):
            rel = f"images/{rec['id']}.png"
            write_png(out / rel, batch.images[j], cfg.bit_depth)
            row = {k: rec[k] for k in ("id", "report", "split", "patient_id", "age", "sex", "view", "site")}
            row["image"] = rel
            for f in FINDINGS:
                v = rec["labels"][f]
                row[f] = "" if v is None else str(v)
            row["spurious"] = rec["spurious"]
            writer.writerow(row)
            findings = []
            for f, m in batch.masks[j].items():
                findings.append(
                    {
                        "finding": f,
                        "value": rec["labels"][f],
                        "side": rec["sides"].get(f),
                        "box": rec["boxes"][f],
                        "mask_rle": rle_encode(m),
                    }
                )
            ann = {k: rec[k] for k in ("id", "patient_id", "study", "duplicate_of", "ctr", "spurious", "spurious_box")}
            ann["findings"] = findings
            ann_lines.append(json.dumps(ann, separators=(",", ":")))
        counts += (batch.labels == 1).sum(0)
        spur += int(batch.spurious.sum())
        n_done += len(batch.records)
    atomic_write_text(out / "manifest.csv", buf.getvalue())
    atomic_write_text(out / "annotations.jsonl", "\n".join(ann_lines) + ("\n" if ann_lines else ""))
    summary = {
        "n": n_done,
        "size": cfg.size,
        "bit_depth": cfg.bit_depth,
        "findings": list(FINDINGS),
        "derived": list(CXR_DERIVED),
        "prevalence_config": cfg.prevalence.as_dict(),
        "positive_rate": {f: (counts[k] / n_done if n_done else 0.0) for k, f in enumerate(FINDINGS)},
        "spurious": {"label": cfg.spurious.label, "cramers_v_target": cfg.spurious.cramers_v, "n_marked": spur},
        "rle": "row-major run lengths over (H, W), alternating, starting with a run of zeros",
    }
    atomic_write_json(out / "findings.json", summary)
    log.info("wrote %d chest X-ray phantoms to %s in %.1f s", n_done, out, time.perf_counter() - t0)
    return summary
