"""Deterministic synthetic CT-like patients with a label map of 40 structures and pathologies.

Geometry: volumes are ``(X, Y, Z)`` arrays in NIfTI voxel order with a diagonal affine (RAS+ world: +X towards
the patient's right, +Y anterior, +Z superior; the volume centre is world (0, 0, 0)). Anatomy is defined in
millimetres in a canonical body (thorax, abdomen and pelvis from z = -300 mm to +300 mm), so
``shape * spacing`` is the field of view: a finer spacing shows a smaller central part of the same patient.

Per patient (a NumPy generator seeded by ``(seed, patient index)``, so one patient never depends on ``n``):
body size (anisotropic scale), position, fat thickness, organ positions/sizes, a smooth sinusoidal
deformation field, HU offsets per tissue, pathologies with probabilities from
:class:`~medfm.data.phantoms.config.CTPathologyOptions`.

Image formation: a HU value per label (:data:`STRUCTURES`, contrast or plain phase) plus correlated
texture (Gaussian-filtered noise scaled per tissue), a Gaussian blur of 0.6 voxel (partial volume at
edges), then white noise; stored as int16 HU clipped to [-1024, 3071]. Labels are uint8.

On disk (``write_ct_dataset``)::

    <out>/imagesTr/<id>.nii.gz   int16 HU, (X, Y, Z), spacing in the header (mm)
    <out>/labelsTr/<id>.nii.gz   uint8 label map, same grid
    <out>/labels.json            {"labels": {"0": "background", ...}, "hu_range": {"liver": [lo, hi], ...}}
    <out>/dataset.json           Decathlon-style datalist: name, modality, labels, numTraining, training[...]
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medfm.data.phantoms.config import CTPhantomConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Structure:
    """One label: HU mean with contrast / without, texture standard deviation, allowed mean range half-width."""

    name: str
    hu_contrast: float
    hu_plain: float
    texture: float
    half_range: float


#: Label table; the label value is the index (0 = background). HU ranges are ``hu +- half_range``.
STRUCTURES: tuple[Structure, ...] = (
    Structure("background", -1000, -1000, 0, 30),
    Structure("body", 40, 40, 10, 50),
    Structure("subcutaneous_fat", -100, -100, 15, 45),
    Structure("muscle", 55, 50, 10, 40),
    Structure("internal_fat", -90, -90, 15, 45),
    Structure("lung_right", -850, -850, 35, 70),
    Structure("lung_left", -850, -850, 35, 70),
    Structure("trachea", -990, -990, 5, 120),
    Structure("esophagus", 40, 40, 10, 60),
    Structure("liver", 110, 60, 10, 40),
    Structure("gallbladder", 12, 12, 5, 30),
    Structure("spleen", 120, 50, 10, 40),
    Structure("stomach", 20, 20, 10, 40),
    Structure("pancreas", 100, 45, 12, 45),
    Structure("kidney_right", 170, 35, 15, 50),
    Structure("kidney_left", 170, 35, 15, 50),
    Structure("small_bowel", 45, 35, 15, 45),
    Structure("colon", -350, -350, 200, 250),
    Structure("urinary_bladder", 10, 10, 5, 30),
    Structure("heart_myocardium", 110, 50, 10, 45),
    Structure("heart_left_ventricle", 170, 45, 8, 50),
    Structure("heart_right_ventricle", 165, 45, 8, 50),
    Structure("heart_left_atrium", 165, 45, 8, 50),
    Structure("heart_right_atrium", 160, 45, 8, 50),
    Structure("aorta", 180, 45, 8, 60),
    Structure("inferior_vena_cava", 150, 45, 8, 60),
    Structure("pulmonary_artery", 170, 45, 8, 60),
    Structure("ribs", 500, 500, 80, 200),
    Structure("sternum", 350, 350, 60, 150),
    Structure("vertebrae", 300, 300, 60, 120),
    Structure("intervertebral_disc", 80, 80, 10, 60),
    Structure("spinal_cord", 35, 35, 8, 50),
    Structure("sacrum", 300, 300, 60, 120),
    Structure("pelvis", 400, 400, 80, 160),
    Structure("femur_right", 450, 450, 80, 160),
    Structure("femur_left", 450, 450, 80, 160),
    Structure("liver_tumour", 50, 35, 10, 35),
    Structure("kidney_cyst", 8, 8, 4, 25),
    Structure("lung_nodule", 30, 30, 10, 80),
    Structure("pleural_effusion", 15, 15, 6, 30),
)
LABELS: dict[int, str] = {i: s.name for i, s in enumerate(STRUCTURES)}
LABEL_IDS: dict[str, int] = {s.name: i for i, s in enumerate(STRUCTURES)}
#: Pathology type -> (label name, organ labels it grows in).
PATHOLOGIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "tumour": ("liver_tumour", ("liver",)),
    "cyst": ("kidney_cyst", ("kidney_right", "kidney_left")),
    "nodule": ("lung_nodule", ("lung_right", "lung_left")),
    "effusion": ("pleural_effusion", ("lung_right", "lung_left")),
}


def hu_range(name: str, contrast: bool = True) -> tuple[float, float]:
    """Allowed range (HU) of the mean intensity inside structure ``name``."""
    s = STRUCTURES[LABEL_IDS[name]]
    mean = s.hu_contrast if contrast else s.hu_plain
    return (mean - s.half_range, mean + s.half_range)


@dataclass
class CTPatient:
    """One generated patient.

    Attributes:
        id: case id (``ct_0003``).
        image: (X, Y, Z) int16 HU.
        label: (X, Y, Z) uint8 label map (values index :data:`LABELS`).
        spacing: voxel size (mm).
        metadata: sex, age, body scale, tissue HU offsets and the pathologies present (each with its label,
            organ, centre voxel, radius in mm and painted voxel count).
    """

    id: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    metadata: dict[str, Any]


def patient_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """Generator for patient ``index`` (independent of how many patients are generated)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) % 2**63, int(index), int(stream), 3]))


# ----------------------------------------------------------------------------------------------------------------------
# Primitives on canonical coordinates (arrays of mm, broadcastable)


class _Canvas:
    """Canonical coordinates of every voxel plus the label map painted in order (later paint wins)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, rng: np.random.Generator, jitter: float):
        self.x, self.y, self.z = x, y, z
        self.rng = rng
        self.jitter = jitter
        self.label = np.zeros(x.shape, dtype=np.uint8)

    def j(self, c: tuple[float, float, float], sd: float | None = None) -> np.ndarray:
        """Jitter a canonical point by N(0, sd) mm."""
        return np.asarray(c, dtype=np.float32) + self.rng.normal(0, self.jitter if sd is None else sd, 3)

    def s(self, a: tuple[float, ...], sd: float = 0.07) -> np.ndarray:
        return np.asarray(a, dtype=np.float32) * np.clip(self.rng.normal(1, sd, len(a)), 0.8, 1.2)

    def ellipsoid(self, c: Any, a: Any, jitter: bool = True) -> np.ndarray:
        c = self.j(c) if jitter else np.asarray(c, np.float32)
        a = self.s(a) if jitter else np.asarray(a, np.float32)
        return ((self.x - c[0]) / a[0]) ** 2 + ((self.y - c[1]) / a[1]) ** 2 + ((self.z - c[2]) / a[2]) ** 2 <= 1

    def capsule(self, points: list[tuple[float, float, float]], r: float, jitter: bool = True) -> np.ndarray:
        """Union of segments through ``points`` with radius ``r`` mm (vessels, tubes, long bones)."""
        pts = [self.j(p, self.jitter * 0.5) if jitter else np.asarray(p, np.float32) for p in points]
        r = r * float(np.clip(self.rng.normal(1, 0.06), 0.85, 1.15)) if jitter else r
        out = np.zeros(self.label.shape, bool)
        for p0, p1 in itertools.pairwise(pts):
            d = p1 - p0
            t = ((self.x - p0[0]) * d[0] + (self.y - p0[1]) * d[1] + (self.z - p0[2]) * d[2]) / float(d @ d)
            t = np.clip(t, 0, 1)
            dist2 = (
                (self.x - p0[0] - t * d[0]) ** 2 + (self.y - p0[1] - t * d[1]) ** 2 + (self.z - p0[2] - t * d[2]) ** 2
            )
            out |= dist2 <= r * r
        return out

    def paint(self, name: str, mask: np.ndarray, within: np.ndarray | None = None) -> None:
        if within is not None:
            mask = mask & within
        self.label[np.broadcast_to(mask, self.label.shape)] = LABEL_IDS[name]


def _deformation(
    shape: tuple[int, int, int], coords: list[np.ndarray], rng: np.random.Generator, amplitude: float
) -> list[np.ndarray]:
    """Smooth displacement (mm): a sum of 3 random low-frequency sinusoids per axis, added to ``coords``."""
    out = []
    for axis in range(3):
        disp = np.zeros(shape, np.float32)
        for _ in range(3):
            k = rng.normal(0, 1, 3)
            k = k / np.linalg.norm(k) * rng.uniform(2 * np.pi / 400, 2 * np.pi / 150)  # wavelength 150-400 mm
            phase = rng.uniform(0, 2 * np.pi)
            disp += np.sin(k[0] * coords[0] + k[1] * coords[1] + k[2] * coords[2] + phase).astype(np.float32)
        out.append(coords[axis] + (amplitude / np.sqrt(3)) * disp)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Anatomy


def _anatomy(cv: _Canvas, rng: np.random.Generator, fat: float) -> dict[str, Any]:
    """Paint the normal anatomy on ``cv`` (canonical mm; +x right, +y anterior, +z superior)."""
    x, y, z = cv.x, cv.y, cv.z
    # trunk cross-section: semi-axes vary smoothly with z (wider chest and pelvis)
    a = 160 + 10 * np.cos(z / 300 * np.pi) * float(rng.uniform(0.5, 1.0))
    b = np.float32(112)
    in_z = (z > -330) & (z < 330)
    rho_body = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    muscle_t = 12.0
    rho_wall = np.sqrt((x / (a - fat)) ** 2 + (y / (b - fat)) ** 2)
    ac, bc = a - fat - muscle_t, b - fat - muscle_t
    rho_cav = np.sqrt((x / ac) ** 2 + (y / bc) ** 2)
    body = (rho_body <= 1) & in_z
    cavity = (rho_cav <= 1) & in_z
    cv.paint("body", body)
    cv.paint("subcutaneous_fat", (rho_body <= 1 - 4 / 112) & in_z)  # 4 mm skin
    cv.paint("muscle", (rho_wall <= 1) & in_z)
    cv.paint("internal_fat", cavity)
    # paraspinal muscles and psoas
    for side in (1, -1):
        cv.paint("muscle", cv.ellipsoid((side * 30, -bc - 5, 0), (24, 20, 400)), body)
        cv.paint("muscle", cv.capsule([(side * 28, -45, -60), (side * 55, -15, -235)], 15), cavity)

    # diaphragm domes (z of the lung base as a function of x, y), right higher than left
    dome_r = 22 + 40 * np.clip(1 - ((x - 80) / 75) ** 2 - (y / 95) ** 2, 0, None) + rng.normal(0, 6)
    dome_l = 12 + 40 * np.clip(1 - ((x + 80) / 75) ** 2 - (y / 95) ** 2, 0, None) + rng.normal(0, 6)
    lung_box = rho_cav <= 0.93
    cv.paint("lung_right", cv.ellipsoid((78, 0, 150), (68, 88, 165)) & (z > dome_r), lung_box)
    cv.paint("lung_left", cv.ellipsoid((-80, 0, 150), (64, 86, 162)) & (z > dome_l), lung_box)

    below_r, below_l = z < dome_r - 4, z < dome_l - 4
    cv.paint("liver", cv.ellipsoid((62, 12, 0), (88, 92, 72)) & below_r, cavity)
    cv.paint("liver", cv.ellipsoid((-12, 45, 10), (48, 36, 36)) & below_l & below_r, cavity)
    cv.paint("spleen", cv.ellipsoid((-95, -38, 0), (30, 45, 45)) & below_l, cavity)
    cv.paint("stomach", cv.ellipsoid((-58, 22, -8), (40, 35, 45)) & below_l, cavity)
    cv.paint("kidney_right", cv.ellipsoid((66, -42, -85), (25, 22, 55)), cavity)
    cv.paint("kidney_left", cv.ellipsoid((-66, -42, -68), (25, 22, 55)), cavity)
    cv.paint("pancreas", cv.capsule([(28, 5, -48), (-20, -5, -38), (-72, -22, -28)], 11), cavity)
    # small bowel: convoluted loops = a band of a product of sinusoids inside the mid-abdomen
    ph = rng.uniform(0, 2 * np.pi, 3)
    wave = np.sin(x / 11 + ph[0]) * np.sin(y / 11 + ph[1]) * np.sin(z / 11 + ph[2])
    region = cv.ellipsoid((0, 25, -125), (72, 55, 70))
    cv.paint("small_bowel", region & (np.abs(wave) > 0.25), cavity)
    cv.paint(
        "colon",
        cv.capsule(
            [
                (88, 5, -200),
                (88, 10, -45),
                (0, 60, -55),
                (-88, 10, -45),
                (-88, 0, -190),
                (-25, -30, -228),
                (0, -45, -262),
            ],
            17,
        ),
        cavity,
    )
    cv.paint("urinary_bladder", cv.ellipsoid((0, 38, -248), (40, 32, 30)), cavity)
    cv.paint("gallbladder", cv.ellipsoid((52, 48, -45), (14, 20, 24)), cavity)

    # mediastinum: heart with chambers, great vessels, esophagus, trachea
    heart = cv.ellipsoid((-15, 35, 70), (62, 50, 55))
    cv.paint("heart_myocardium", heart, cavity)
    for name, c, ax in (
        ("heart_left_ventricle", (-38, 22, 55), (26, 24, 34)),
        ("heart_right_ventricle", (8, 55, 55), (28, 14, 32)),
        ("heart_left_atrium", (-15, -2, 96), (28, 16, 18)),
        ("heart_right_atrium", (30, 25, 82), (18, 20, 26)),
    ):
        cv.paint(name, cv.ellipsoid(c, ax), heart)
    cv.paint(
        "aorta",
        cv.capsule([(10, 28, 105), (5, 20, 165), (-22, -20, 168), (-20, -22, 60), (-12, -28, -150)], 12),
        cavity,
    )
    cv.paint("inferior_vena_cava", cv.capsule([(24, -20, -150), (26, -12, 40), (30, 20, 70)], 10), cavity)
    cv.paint("pulmonary_artery", cv.capsule([(2, 55, 100), (-5, 25, 140)], 12), cavity)
    cv.paint("esophagus", cv.capsule([(-3, -20, 320), (-3, -20, 30), (-40, 5, 5)], 7), cavity)
    cv.paint("trachea", cv.capsule([(0, 0, 320), (0, 2, 175), (35, 0, 140)], 9), cavity)
    cv.paint("trachea", cv.capsule([(0, 2, 175), (-38, 0, 135)], 7), cavity)

    # bones: ribs (12 pairs, descending anteriorly, no rib over the anterior midline), sternum, spine, pelvis
    rib_z0, pitch = 262.0 + rng.normal(0, 5), 24.0
    z_rel = z + 38 * np.clip((y / bc + 1) / 2, 0, 1)
    m = (rib_z0 - z_rel) / pitch
    k = np.round(m)
    ribs = (np.abs(rho_cav - 1.02) < 0.055) & (np.abs(m - k) * pitch < 5.5) & (k >= 0) & (k <= 11)
    ribs &= ~((y > 0.6 * bc) & (np.abs(x) < 0.35 * ac))
    cv.paint("ribs", ribs, body)
    cv.paint("sternum", cv.ellipsoid((0, bc - 2, 160), (17, 8, 85)), body)
    vert_y = -bc + 45
    body_cyl = ((x / 19) ** 2 + ((y - vert_y) / 17) ** 2 <= 1) & (z > -175) & (z < 330)
    spinous = cv.capsule([(0, vert_y - 25, -175), (0, vert_y - 25, 330)], 9, jitter=False)
    zpitch, z0 = 28.0, float(rng.uniform(0, 28))
    disc = np.mod(z - z0, zpitch) < 5
    cv.paint("vertebrae", body_cyl | spinous, body)
    cv.paint("intervertebral_disc", body_cyl & disc, body)
    canal = ((x / 7) ** 2 + ((y - vert_y + 26) / 7) ** 2 <= 1) & (z > -230) & (z < 330)
    cv.paint("sacrum", cv.ellipsoid((0, vert_y - 8, -210), (40, 18, 50)), body)
    cv.paint("spinal_cord", canal, body)
    for side in (1, -1):
        shell = cv.ellipsoid((side * 75, -20, -185), (58, 28, 58), jitter=False)
        inner = cv.ellipsoid((side * 75, -20, -185), (48, 19, 48), jitter=False)
        cv.paint("pelvis", shell & ~inner & (z > -235) & (side * x > 35), body)
        cv.paint("pelvis", cv.capsule([(side * 85, 8, -250), (side * 20, 42, -268)], 9), body)
        cv.paint(
            "femur_right" if side > 0 else "femur_left",
            cv.capsule([(side * 92, 10, -262), (side * 110, 5, -360)], 19),
            body,
        )
    return {"dome_right": dome_r, "dome_left": dome_l}


def _pathologies(
    cv: _Canvas,
    rng: np.random.Generator,
    cfg: CTPhantomConfig,
    spacing: np.ndarray,
    world: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> list[dict[str, Any]]:
    """Paint pathologies on their organs; returns one record per lesion actually painted."""
    probs = cfg.pathology
    # fixed draw order and count, so the normal anatomy draws never depend on pathology probabilities
    draws = {t: rng.random(16) for t in ("tumour", "cyst", "nodule", "effusion")}
    out: list[dict[str, Any]] = []
    min_r = 1.6 * float(spacing.max())
    xw, yw, zw = world

    def sphere(kind: str, name: str, organs: tuple[str, ...], u: np.ndarray, r_lo: float, r_hi: float) -> None:
        ids = [LABEL_IDS[o] for o in organs]
        organ = ids[int(u[1] * len(ids))]
        flat = np.flatnonzero(cv.label == organ)
        if flat.size == 0:
            return
        centre = np.unravel_index(flat[int(u[2] * flat.size)], cv.label.shape)
        radius = max(min_r, r_lo + (r_hi - r_lo) * u[3])
        cw = (xw[centre[0], 0, 0], yw[0, centre[1], 0], zw[0, 0, centre[2]])
        # slightly lobulated sphere in world mm (lesions are not deformed with the anatomy)
        lob = 1 + 0.15 * np.sin(3 * np.arctan2(yw - cw[1], xw - cw[0]) + 6.28 * u[4])
        mask = ((xw - cw[0]) ** 2 + (yw - cw[1]) ** 2 + (zw - cw[2]) ** 2) <= (radius * lob) ** 2
        mask &= cv.label == organ
        count = int(mask.sum())
        if count:
            cv.label[mask] = LABEL_IDS[name]
            out.append(
                {
                    "type": kind,
                    "label": name,
                    "organ": LABELS[organ],
                    "center_voxel": [int(c) for c in centre],
                    "radius_mm": round(float(radius), 2),
                    "voxels": count,
                }
            )

    for kind in ("tumour", "cyst", "nodule"):
        name, organs = PATHOLOGIES[kind]
        u = draws[kind]
        if u[0] < getattr(probs, kind):
            n_lesions = 1 + int(u[5] * (3 if kind == "tumour" else 2 if kind == "nodule" else 1))
            for i in range(n_lesions):
                sub = np.roll(u, -6 * i) if i else u
                lo, hi = {"tumour": (8, 25), "cyst": (6, 16), "nodule": (4, 10)}[kind]
                sphere(kind, name, organs, sub, lo, hi)
    u = draws["effusion"]
    if u[0] < probs.effusion:
        sides = [("lung_right", "lung_left")[int(u[1] * 2)]] if u[2] < 0.6 else ["lung_right", "lung_left"]
        for organ in sides:
            lid = LABEL_IDS[organ]
            # dependent (posterior) fluid in the lower lung, level with a meniscus
            level = -60 + 50 * u[3] + 0.15 * (cv.z - 40)
            mask = (cv.label == lid) & (cv.y < level) & (cv.z < 130 + 40 * u[4])
            count = int(mask.sum())
            if count:
                cv.label[mask] = LABEL_IDS["pleural_effusion"]
                out.append({"type": "effusion", "label": "pleural_effusion", "organ": organ, "voxels": count})
    return out


def generate_ct_patient(cfg: CTPhantomConfig, index: int) -> CTPatient:
    """Generate patient ``index`` of the dataset described by ``cfg`` (deterministic in (cfg, index)).

    Returns:
        A :class:`CTPatient` with ``image`` (X, Y, Z) int16 HU and ``label`` (X, Y, Z) uint8.
    """
    shape = tuple(int(s) for s in cfg.shape)
    spacing = np.asarray(cfg.spacing, dtype=np.float64)
    if len(shape) != 3 or len(spacing) != 3 or min(shape) < 8 or spacing.min() <= 0:
        from medfm.core.errors import UsageError

        raise UsageError(
            f"--shape needs 3 sizes >= 8 and --spacing 3 positive mm values, got {cfg.shape} and {cfg.spacing}"
        )
    rng = patient_rng(cfg.seed, index, 0)
    sex = "F" if rng.random() < 0.5 else "M"
    age = int(rng.integers(25, 86))
    scale = np.clip(rng.normal([1.0, 1.0, 1.0], [0.06, 0.07, 0.04]), 0.85, 1.15) * (0.94 if sex == "F" else 1.0)
    shift = rng.normal(0, [8, 6, 15])
    fat = float(np.clip(rng.normal(20 if sex == "F" else 16, 6), 6, 38))
    # world coordinates (mm) of voxel centres; volume centre at 0
    axes = [((np.arange(n, dtype=np.float32) - (n - 1) / 2) * s) for n, s in zip(shape, spacing)]
    xw = axes[0][:, None, None]
    yw = axes[1][None, :, None]
    zw = axes[2][None, None, :]
    full = [np.broadcast_to(c, shape) for c in (xw, yw, zw)]
    canon = [(c - sh) / sc for c, sh, sc in zip(full, shift, scale)]
    canon = _deformation(shape, canon, rng, amplitude=float(rng.uniform(4, 10)))
    cv = _Canvas(canon[0], canon[1], canon[2], rng, jitter=4.0)
    _anatomy(cv, rng, fat)
    lesions = _pathologies(cv, patient_rng(cfg.seed, index, 1), cfg, spacing, (xw, yw, zw))

    # image formation: per-tissue HU (+ per-patient offset), correlated texture, partial volume, noise
    irng = patient_rng(cfg.seed, index, 2)
    means = np.array([s.hu_contrast if cfg.contrast else s.hu_plain for s in STRUCTURES], np.float32)
    means[1:] += np.clip(irng.normal(0, 8, len(means) - 1), -15, 15).astype(np.float32)
    textures = np.array([s.texture for s in STRUCTURES], np.float32)
    tex = ndimage.gaussian_filter(irng.standard_normal(shape, dtype=np.float32), 1.0)
    tex /= max(float(tex.std()), 1e-6)
    hu = means[cv.label] + textures[cv.label] * tex
    hu = ndimage.gaussian_filter(hu, 0.6)
    hu += irng.normal(0, cfg.noise_hu, shape).astype(np.float32)
    image = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    counts = np.bincount(cv.label.ravel(), minlength=len(STRUCTURES))
    present = {kind: any(les["type"] == kind for les in lesions) for kind in PATHOLOGIES}
    meta = {
        "sex": sex,
        "age": age,
        "body_scale": [round(float(s), 4) for s in scale],
        "fat_thickness_mm": round(fat, 2),
        "contrast": bool(cfg.contrast),
        "tissue_hu": {LABELS[i]: round(float(means[i]), 1) for i in range(1, len(STRUCTURES)) if counts[i]},
        "pathologies": lesions,
        "present": present,
    }
    return CTPatient(f"ct_{index:04d}", image, cv.label, tuple(float(s) for s in spacing), meta)


def iter_ct_patients(cfg: CTPhantomConfig):
    """Yield the ``cfg.n`` (capped by ``cfg.limit``) patients in order."""
    n = cfg.n if cfg.limit is None else min(cfg.n, cfg.limit)
    for i in range(n):
        yield generate_ct_patient(cfg, i)


def write_ct_dataset(
    cfg: CTPhantomConfig, out_dir: str | Path, patients: Iterable[CTPatient] | None = None
) -> dict[str, Any]:
    """Generate and write the dataset (layout in the module docstring). Returns the datalist dict.

    ``patients`` are written instead of generating them again when the caller already has
    ``iter_ct_patients(cfg)``.
    """
    from medfm.core.files import atomic_write_json
    from medfm.data.io import save_nifti
    from medfm.data.manifests import VolumeRecord, write_datalist

    out = Path(out_dir).resolve()
    records = []
    t0 = time.perf_counter()
    for p in iter_ct_patients(cfg) if patients is None else patients:
        image, label = out / "imagesTr" / f"{p.id}.nii.gz", out / "labelsTr" / f"{p.id}.nii.gz"
        save_nifti(image, p.image, p.spacing)
        save_nifti(label, p.label, p.spacing)
        records.append(VolumeRecord(image, label, id=p.id, patient_id=p.id, metadata=p.metadata))
        log.info("ct phantom %s: %s", p.id, ", ".join(k for k, v in p.metadata["present"].items() if v) or "normal")
    atomic_write_json(
        out / "labels.json",
        {
            "labels": {str(i): name for i, name in LABELS.items()},
            "hu_range": {s.name: list(hu_range(s.name, cfg.contrast)) for s in STRUCTURES[1:]},
            "pathologies": {k: v[0] for k, v in PATHOLOGIES.items()},
        },
    )
    path = write_datalist(
        out / "dataset.json",
        records,
        name=cfg.name,
        modality={"0": "CT"},
        labels=LABELS,
        description="medfm synthetic CT-like phantoms (not real patients)",
        extra={"tensorImageSize": "3D", "numTraining": len(records), "numTest": 0},
    )
    log.info("wrote %d CT phantoms to %s in %.1f s", len(records), out, time.perf_counter() - t0)
    return json.loads(path.read_text())
