"""Configuration dataclasses of the phantom generators (torch- and numpy-free: the CLI imports them for --help).

``medfm phantom ct --n 20 --shape 96,96,96 --spacing 4,4,6.5 --pathology.tumour 0.5``
``medfm phantom cxr --n 10000 --size 128 --prevalence.Cardiomegaly 0.3 --spurious.label Pneumothorax
--spurious.cramers_v 0.8``
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from medfm.core.config import CommonOptions, option, section

# ----------------------------------------------------------------------------------------------------------------------
# CT


@dataclass
class CTPathologyOptions:
    """Per-patient probability of each pathology (each has its own label in the label map)."""

    tumour: float = option(0.3, help="Probability of 1-3 hypo-attenuating liver tumours (label liver_tumour).")
    cyst: float = option(0.3, help="Probability of a renal cyst, near-water HU (label kidney_cyst).")
    nodule: float = option(0.3, help="Probability of 1-2 solid lung nodules (label lung_nodule).")
    effusion: float = option(0.2, help="Probability of a dependent pleural effusion (label pleural_effusion).")


@dataclass
class CTPhantomConfig(CommonOptions):
    """``medfm phantom ct``: labelled CT-like volumes, NIfTI + Decathlon-style datalist."""

    n: int = option(20, help="Number of patients (volumes).", ge=1)
    shape: list[int] = option(default_factory=lambda: [96, 96, 96], help="Volume shape (X, Y, Z) in voxels.")
    spacing: list[float] = option(
        default_factory=lambda: [4.0, 4.0, 6.5],
        help="Voxel size (X, Y, Z) in mm. Anatomy is in mm, so shape*spacing is the field of view "
        "(the default 384x384x624 mm covers thorax, abdomen and pelvis).",
    )
    noise_hu: float = option(12.0, help="Standard deviation of the white acquisition noise, HU.")
    contrast: bool = option(True, help="Portal-venous contrast phase (bright blood pool, enhancing organs).")
    pathology: CTPathologyOptions = section(CTPathologyOptions, help="Pathology probabilities.")
    name: str = option("medfm-ct-phantom", help="Dataset name written into dataset.json.")


# ----------------------------------------------------------------------------------------------------------------------
# CXR

#: CheXpert's 14 observations plus Nodule and Mass, in manifest column order.
CXR_FINDINGS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "Nodule",
    "Mass",
)
#: Findings derived from others (CheXpert's hierarchy): No Finding, Lung Opacity (any parenchymal child),
#: Lung Lesion (Nodule or Mass). All other findings are sampled independently with their prevalence.
CXR_DERIVED: tuple[str, ...] = ("No Finding", "Lung Opacity", "Lung Lesion")


@dataclass
class CXRPrevalence:
    """Probability that a patient has each finding (long-tailed defaults; spaces in names are underscores)."""

    Enlarged_Cardiomediastinum: float = option(0.05, help="Widened upper mediastinum.")
    Cardiomegaly: float = option(0.12, help="Cardiothoracic ratio 0.56-0.66.")
    Edema: float = option(0.10, help="Bilateral perihilar haze.")
    Consolidation: float = option(0.06, help="Dense lobar-like airspace opacity in one lung zone.")
    Pneumonia: float = option(0.04, help="Patchy airspace opacity in one lung zone.")
    Atelectasis: float = option(0.15, help="Plate-like basal opacity.")
    Pneumothorax: float = option(0.08, help="Apicolateral air without lung markings, visible pleural line.")
    Pleural_Effusion: float = option(0.20, help="Basal fluid with meniscus, one or both sides.")
    Pleural_Other: float = option(0.01, help="Lateral pleural thickening.")
    Fracture: float = option(0.03, help="Rib fracture with callus.")
    Support_Devices: float = option(0.30, help="Central line and/or pacemaker.")
    Nodule: float = option(0.04, help="Round opacity 2-4 %% of the image width.")
    Mass: float = option(0.02, help="Round opacity 5-9 %% of the image width.")

    def as_dict(self) -> dict[str, float]:
        """``{"Pleural Effusion": 0.2, ...}`` in CheXpert spelling."""
        return {f.name.replace("_", " "): float(getattr(self, f.name)) for f in fields(self)}


@dataclass
class CXRSpurious:
    """A planted shortcut: a corner marker correlated with one label (for RaVL-style audits)."""

    label: str | None = option(None, help="Finding the marker correlates with (CheXpert name); none = no marker.")
    cramers_v: float = option(0.8, help="Target Cramer's V between marker presence and label presence (0-1).")
    kind: str = option("token", help="Marker shape.", choices=("token", "square"))
    corner: str = option(
        "top_right",
        help="Image corner of the marker.",
        choices=("top_left", "top_right", "bottom_left", "bottom_right"),
    )


@dataclass
class CXRPhantomConfig(CommonOptions):
    """``medfm phantom cxr``: frontal chest radiographs with findings, boxes/masks, reports and metadata."""

    n: int = option(1000, help="Number of images (studies).", ge=1)
    size: int = option(128, help="Image height and width in pixels.", ge=1)
    bit_depth: int = option(8, help="PNG bit depth.", choices=(8, 16))
    prevalence: CXRPrevalence = section(CXRPrevalence, help="Per-finding prevalence.")
    uncertain_rate: float = option(
        0.08, help="Fraction of present findings recorded uncertain (-1), rendered subtle.", ge=0, le=1
    )
    mention_negative: float = option(0.6, help="Probability an absent finding is negated in the report (else blank).")
    duplicate_rate: float = option(0.1, help="Probability a patient has a near-duplicate second study.")
    sites: int = option(4, help="Number of acquisition sites (each with its own contrast and noise).", ge=1)
    split: list[float] = option(default_factory=lambda: [0.8, 0.1, 0.1], help="train/valid/test fractions by patient.")
    spurious: CXRSpurious = section(CXRSpurious, help="Planted spurious feature.")
    batch_size: int = option(128, help="Images rendered per vectorised batch.", ge=1)
