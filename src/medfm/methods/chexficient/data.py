"""Image–report pairs for CheXficient: CSV/JSONL manifests (lazy image loading) or CXR phantoms in memory.

Both give a :class:`PairData`: ``ids`` (unique strings), ``reports``, ``splits`` (train/val/test/None),
``labels`` ``(N, F)`` float (1 present, 0 absent, -1 uncertain, NaN not mentioned) over ``findings``, and
:meth:`PairData.images` returning ``(n, 1, S, S)`` uint8 tensors for any index list.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medfm.core.errors import DataError

log = logging.getLogger(__name__)

#: Findings derived from others in CheXpert's hierarchy (left out of the default zero-shot evaluation).
DERIVED = ("No Finding", "Lung Opacity", "Lung Lesion")


@dataclass
class PairData:
    """Image–report pairs.

    Attributes:
        ids: unique pair ids.
        reports: report texts.
        splits: split per pair (``train``/``val``/``test``/None).
        findings: label names (columns of ``labels``).
        labels: ``(N, F)`` float32, NaN = not mentioned.
        pixels: ``(N, 1, S, S)`` uint8 in-memory images (phantoms) or None (manifests: read lazily).
        paths: image path per pair (manifests) or None.
        image_size: S, the side images are resized to.
        source: where the pairs came from (manifest path or phantom description).
        dropped: counts of rows dropped while loading, by reason.
        meta: per-pair extra facts (e.g. phantom ``duplicate_of``).
    """

    ids: list[str]
    reports: list[str]
    splits: list[str | None]
    findings: list[str]
    labels: np.ndarray
    pixels: torch.Tensor | None = None
    paths: list[Path] | None = None
    image_size: int = 64
    source: str = ""
    dropped: dict[str, int] = field(default_factory=dict)
    meta: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def images(self, index: Any) -> torch.Tensor:
        """``(n, 1, S, S)`` uint8 images of the given indices."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        if self.pixels is not None:
            return self.pixels[torch.from_numpy(idx)]
        from medfm.data.io import read_radiograph

        assert self.paths is not None
        out = torch.empty(len(idx), 1, self.image_size, self.image_size, dtype=torch.uint8)
        for j, i in enumerate(idx):
            out[j] = images_to_uint8(read_radiograph(self.paths[int(i)]).array[None], self.image_size)[0]
        return out

    def subset(self, index: Any) -> PairData:
        """A new PairData with the given rows (in memory for phantoms, paths for manifests)."""
        idx = [int(i) for i in np.asarray(index, dtype=np.int64).reshape(-1)]
        return PairData(
            ids=[self.ids[i] for i in idx], reports=[self.reports[i] for i in idx],
            splits=[self.splits[i] for i in idx], findings=list(self.findings), labels=self.labels[idx],
            pixels=None if self.pixels is None else self.pixels[torch.tensor(idx, dtype=torch.long)],
            paths=None if self.paths is None else [self.paths[i] for i in idx], image_size=self.image_size,
            source=self.source, dropped=dict(self.dropped), meta=[self.meta[i] for i in idx] if self.meta else [],
        )  # fmt: skip

    def split_index(self, split: str | None) -> np.ndarray:
        """Row indices of ``split`` (all rows when None)."""
        if split is None:
            return np.arange(len(self))
        return np.array([i for i, s in enumerate(self.splits) if s == split], dtype=np.int64)

    def positives(self) -> dict[str, int]:
        return {f: int(np.nansum(self.labels[:, k] == 1)) for k, f in enumerate(self.findings)}


def images_to_uint8(images: np.ndarray, size: int, chunk: int = 2048) -> torch.Tensor:
    """``(N, H, W)`` float [0, 1] -> ``(N, 1, size, size)`` uint8 (bilinear, antialiased), resized in chunks."""
    out = []
    for i in range(0, len(images), chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + chunk], dtype=np.float32))[:, None]
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append((x.clamp(0, 1) * 255).round().to(torch.uint8))
    return torch.cat(out) if out else torch.zeros(0, 1, size, size, dtype=torch.uint8)


def phantom_pairs(n: int, seed: int, size: int, image_size: int, duplicate_rate: float = 0.1,
                  prevalence: dict[str, float] | None = None, id_prefix: str = "") -> PairData:  # fmt: skip
    """CXR phantoms with reports (long-tailed prevalence, near-duplicate studies) as :class:`PairData`."""
    from medfm.data.manifests import normalize_split
    from medfm.data.phantoms.cxr import FINDINGS, generate_cxr

    overrides: dict[str, Any] = {"duplicate_rate": duplicate_rate}
    if prevalence:
        overrides["prevalence"] = prevalence
    b = generate_cxr(n, seed=seed, size=max(32, size), **overrides)
    recs = b.records
    return PairData(
        ids=[id_prefix + r["id"] for r in recs], reports=[r["report"] for r in recs],
        splits=[normalize_split(r["split"]) for r in recs], findings=list(FINDINGS),
        labels=b.labels.astype(np.float32), pixels=images_to_uint8(b.images, image_size), image_size=image_size,
        source=f"CXR phantoms (n={n}, seed={seed}, {size}px, duplicate_rate={duplicate_rate})",
        meta=[{"duplicate_of": r.get("duplicate_of"), "patient_id": r.get("patient_id")} for r in recs],
    )  # fmt: skip


def manifest_pairs(path: str | Path, image_size: int, id_column: str = "id", image_column: str = "image",
                   report_column: str = "report", skip_missing_images: bool = False,
                   drop_empty_reports: bool = True) -> PairData:  # fmt: skip
    """Read an image–report manifest; images are read lazily. Bad rows raise DataError naming them.

    Raises:
        DataError: duplicate ids; a missing image file (unless ``skip_missing_images``); an empty report (unless
            ``drop_empty_reports``); no usable rows; rows without an image.
    """
    from medfm.data.manifests import ManifestColumns, read_report_manifest

    path = Path(path)
    cols = ManifestColumns(id=id_column, image=image_column, report=report_column)
    records = read_report_manifest(path, cols)
    seen: dict[str, int] = {}
    for i, r in enumerate(records):
        if r.id in seen:
            raise DataError(f"{path}: duplicate id {r.id!r} (rows {seen[r.id] + 1} and {i + 1}); ids must be unique")
        seen[r.id] = i
    dropped = {"missing_image": 0, "empty_report": 0}
    keep = []
    for r in records:
        if r.image is None:
            raise DataError(f"{path}: row {r.id!r} has no image in column {image_column!r}; every pair needs one")
        if not r.image.is_file():
            if not skip_missing_images:
                raise DataError(f"{path}: image {r.image} of row {r.id!r} does not exist "
                                "(fix the path or pass --data.skip_missing_images true)")  # fmt: skip
            dropped["missing_image"] += 1
            continue
        if not r.report.strip():
            if not drop_empty_reports:
                raise DataError(f"{path}: row {r.id!r} has an empty report (pass --data.drop_empty_reports true)")
            dropped["empty_report"] += 1
            continue
        keep.append(r)
    for reason, count in dropped.items():
        if count:
            log.warning("%s: dropped %d row(s): %s", path, count, reason.replace("_", " "))
    if not keep:
        raise DataError(f"{path}: no usable image–report pairs left (dropped: {dropped})")
    findings = list(dict.fromkeys(k for r in keep for k in r.labels))
    labels = np.full((len(keep), len(findings)), np.nan, dtype=np.float32)
    for i, r in enumerate(keep):
        for k, f in enumerate(findings):
            v = r.labels.get(f)
            if v is not None:
                labels[i, k] = v
    return PairData(
        ids=[r.id for r in keep], reports=[r.report for r in keep], splits=[r.split for r in keep],
        findings=findings, labels=labels, paths=[r.image for r in keep], image_size=image_size,
        source=str(path), dropped=dropped, meta=[{"patient_id": r.patient_id} for r in keep],
    )  # fmt: skip


def load_pairs(data: Any, image_size: int, limit: int | None = None) -> PairData:
    """Pairs from a :class:`~medfm.methods.chexficient.config.DataOptions` (manifest, else phantoms).

    With ``data.test_n > 0`` (phantoms), an extra held-out test set with uniform prevalence
    ``data.test_prevalence`` is generated with another seed and replaces the pool's test split.
    """
    if data.manifest:
        pairs = manifest_pairs(data.manifest, image_size, data.id_column, data.image_column, data.report_column,
                               data.skip_missing_images, data.drop_empty_reports)  # fmt: skip
    else:
        n = data.phantom_n if limit is None else min(data.phantom_n, limit)
        pairs = phantom_pairs(n, data.phantom_seed, data.phantom_size, image_size, data.phantom_duplicate_rate)
        if data.test_n > 0:
            from medfm.data.phantoms.cxr import SAMPLED

            keep = [i for i, s in enumerate(pairs.splits) if s != "test"]
            pairs = pairs.subset(keep)
            test = phantom_pairs(data.test_n, data.phantom_seed + 100_003, data.phantom_size, image_size, 0.0,
                                 {f: data.test_prevalence for f in SAMPLED}, id_prefix="test_")  # fmt: skip
            test.splits = ["test"] * len(test)
            pairs = concat_pairs(pairs, test)
    if limit is not None and len(pairs) > limit:
        pairs = pairs.subset(np.arange(limit))
    return pairs


def concat_pairs(a: PairData, b: PairData) -> PairData:
    """Rows of ``a`` then ``b`` (same findings and image size; both in memory or both lazy)."""
    if a.findings != b.findings or a.image_size != b.image_size:
        raise DataError("cannot concatenate pair sets with different findings or image sizes")
    return PairData(
        ids=a.ids + b.ids, reports=a.reports + b.reports, splits=a.splits + b.splits, findings=list(a.findings),
        labels=np.concatenate([a.labels, b.labels]),
        pixels=None if a.pixels is None or b.pixels is None else torch.cat([a.pixels, b.pixels]),
        paths=None if a.paths is None or b.paths is None else a.paths + b.paths, image_size=a.image_size,
        source=f"{a.source} + {b.source}", dropped=a.dropped, meta=(a.meta or [{}] * len(a)) + (b.meta or [{}] * len(b)),
    )  # fmt: skip
