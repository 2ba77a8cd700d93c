"""Conversations for the VLM: manifests -> examples -> chat messages -> model inputs.

An :class:`Example` is one image with a user instruction and (for training) the assistant's answer: a report
(image–report manifests) or a short answer (image–question–answer manifests). :func:`vqa_from_labels` turns
finding labels into balanced yes/no questions. :class:`VLMCollator` renders examples with the processor's chat
template and returns ``input_ids`` / ``attention_mask`` ``(B, T)``, ``pixel_values`` ``(n_images, 3, H, W)`` and,
for training, ``labels`` ``(B, T)`` with -100 everywhere except the assistant answer (and its ``<|im_end|>``).

Bad input is caught before the model sees it (one actionable line each): an example without an image, more
images than the model supports, a prompt + answer longer than ``max_length`` tokens.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfm.core.errors import DataError

log = logging.getLogger(__name__)

#: Yes/no question per finding (CheXpert names, as in the CXR phantoms' label columns).
QUESTIONS: dict[str, str] = {
    "Cardiomegaly": "Is the heart enlarged?",
    "Pleural Effusion": "Is there a pleural effusion?",
    "Pneumothorax": "Is there a pneumothorax?",
    "Edema": "Is there pulmonary edema?",
    "Atelectasis": "Is there atelectasis?",
    "Consolidation": "Is there a consolidation?",
    "Pneumonia": "Is there pneumonia?",
    "Nodule": "Is there a pulmonary nodule?",
    "Mass": "Is there a lung mass?",
    "Fracture": "Is there a fracture?",
    "Support Devices": "Are support devices present?",
    "Enlarged Cardiomediastinum": "Is the mediastinum widened?",
    "Pleural Other": "Is there pleural thickening?",
}


@dataclass
class Example:
    """One conversation turn pair.

    Attributes:
        id: row id.
        images: the images shown with the user turn (paths, PIL images or (H, W) float arrays in [0, 1]).
        prompt: the user's instruction or question.
        answer: the assistant's target text ("" when only generating).
        kind: ``report`` or ``vqa``.
        labels: finding -> 1 present, 0 absent, -1 uncertain, None not mentioned (reports with labels).
        finding: the finding a VQA question asks about.
        split: the manifest split.
    """

    id: str
    images: list[Any]
    prompt: str
    answer: str = ""
    kind: str = "report"
    labels: dict[str, int | None] = field(default_factory=dict)
    finding: str | None = None
    split: str | None = None


def present(value: Any) -> bool:
    """Whether a label value means the finding is in the image (1 present or -1 uncertain/subtle)."""
    return value in (1, -1, 1.0, -1.0)


def _split_ok(split: str | None, wanted: str) -> bool:
    return wanted == "all" or split == wanted or (wanted in ("val", "valid") and split in ("val", "valid"))


def report_section(text: str, section: str = "full") -> str:
    """The whole report (``full``) or the text after ``IMPRESSION:`` (``impression``; the whole report if absent)."""
    if section == "impression":
        m = re.search(r"impression\s*:\s*", text, flags=re.IGNORECASE)
        if m:
            return text[m.end() :].strip()
    return text.strip()


def load_report_examples(path: str | Path, split: str = "train", prompt: str = "", section: str = "full"
                         ) -> list[Example]:  # fmt: skip
    """Examples from an image–report manifest (:func:`medfm.data.manifests.read_report_manifest`)."""
    from medfm.data.manifests import read_report_manifest
    from medfm.methods.vlm.config import DEFAULT_REPORT_PROMPT

    records = read_report_manifest(path)
    out = [
        Example(
            r.id,
            list(r.images),
            prompt or DEFAULT_REPORT_PROMPT,
            report_section(r.report, section),
            "report",
            dict(r.labels),
            None,
            r.split,
        )
        for r in records
        if _split_ok(r.split, split)
    ]
    if not out:
        splits = sorted({str(r.split) for r in records})
        raise DataError(f"{path}: no rows with split {split!r} (splits found: {', '.join(splits)}); use --data.split")
    return out


def load_vqa_examples(path: str | Path, split: str = "train") -> list[Example]:
    """Examples from a VQA manifest with columns ``image``, ``question``, ``answer`` (+ optional id, split, finding)."""
    from medfm.data.manifests import normalize_split, read_table

    path = Path(path)
    header, rows = read_table(path)
    missing = [c for c in ("image", "question", "answer") if c not in header]
    if missing:
        raise DataError(f"{path}: missing VQA column(s) {', '.join(missing)}; columns found: {', '.join(header)}")
    base = path.parent.resolve()
    out = []
    for i, row in enumerate(rows):
        sp = normalize_split(row.get("split")) if row.get("split") not in (None, "") else None
        if split != "all" and sp is not None and not _split_ok(sp, split):
            continue
        img = str(row.get("image") or "").strip()
        images = [base / p.strip() if not Path(p.strip()).is_absolute() else Path(p.strip())
                  for p in img.split(";") if p.strip()]  # fmt: skip
        out.append(Example(str(row.get("id") or i), images, str(row["question"]), str(row["answer"]).strip(), "vqa",
                           {}, row.get("finding") or None, sp))  # fmt: skip
    if not out:
        raise DataError(f"{path}: no VQA rows with split {split!r}; use --data.split")
    return out


def vqa_from_labels(
    rows: Sequence[Mapping[str, Any]],
    findings: Sequence[str] | None = None,
    per_image: int = 2,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Balanced yes/no questions from finding labels.

    Args:
        rows: dicts with ``id``, ``image``, ``split`` and ``labels`` (finding -> 1/0/-1/None).
        findings: findings to ask about (default: those in :data:`QUESTIONS` that appear in the labels).
        per_image: questions per image; when the image has any of the findings, one question asks about a present
            one (answer ``yes``), the rest about absent ones (``no``), so answers are near balanced.
        seed: question sampling seed.

    Returns:
        rows with ``id``, ``image``, ``question``, ``answer`` (``yes``/``no``), ``finding``, ``split``.
    """
    rng = random.Random(seed)
    out = []
    for row in rows:
        labels = row["labels"]
        names = [f for f in (findings or QUESTIONS) if f in labels and f in QUESTIONS]
        pos = [f for f in names if present(labels[f])]
        neg = [f for f in names if not present(labels[f])]
        chosen: list[str] = []
        if pos:
            chosen.append(rng.choice(pos))
        rng.shuffle(neg)
        chosen += neg[: max(0, per_image - len(chosen))]
        for k, f in enumerate(chosen):
            out.append({"id": f"{row['id']}-q{k}", "image": row["image"], "question": QUESTIONS[f],
                        "answer": "yes" if present(labels[f]) else "no", "finding": f, "split": row.get("split")})  # fmt: skip
    return out


def load_image(image: Any) -> Any:
    """A PIL greyscale image from a path (PNG/JPEG/DICOM via :func:`medfm.data.io.read_radiograph`), an (H, W)
    float array in [0, 1] or a PIL image."""
    import numpy as np
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if not isinstance(image, np.ndarray):
        from medfm.data.io import read_radiograph

        image = read_radiograph(Path(image)).array
    return Image.fromarray(np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8))


def messages_for(example: Example, system_prompt: str = "", with_answer: bool = False) -> list[dict[str, Any]]:
    """Chat messages (content-part form) for one example: ``[system], user [images..., text], [assistant]``."""
    msgs: list[dict[str, Any]] = []
    if system_prompt:
        msgs.append({"role": "system", "content": system_prompt})
    parts: list[dict[str, Any]] = [{"type": "image"} for _ in example.images]
    parts.append({"type": "text", "text": example.prompt})
    msgs.append({"role": "user", "content": parts})
    if with_answer:
        msgs.append({"role": "assistant", "content": [{"type": "text", "text": example.answer}]})
    return msgs


class VLMCollator:
    """Turns examples into model inputs with the processor (see module docstring for layouts).

    Args:
        processor: the VLM's ``LlavaProcessor`` (or any image-text-to-text processor with a chat template).
        system_prompt: system message ('' for none).
        max_length: longest prompt (+ answer when training) in tokens.
        max_images: most images per example.
        train: add the answer and ``labels``; right padding. Otherwise prompts only, left padding (generation).
        blind: replace every image by a constant grey image (text-only baseline).
    """

    def __init__(self, processor: Any, system_prompt: str = "", max_length: int = 512, max_images: int = 1,
                 train: bool = True, blind: bool = False):  # fmt: skip
        self.processor = processor
        self.tok = processor.tokenizer
        self.system_prompt = system_prompt
        self.max_length = int(max_length)
        self.max_images = int(max_images)
        self.train = train
        self.blind = blind
        self.end = "<|im_end|>\n"

    def check(self, example: Example) -> None:
        """Raise DataError for an example the model cannot take."""
        if not example.images:
            raise DataError(f"example {example.id}: no image given; the VLM needs an image with every user turn")
        if len(example.images) > self.max_images:
            raise DataError(f"example {example.id}: {len(example.images)} images but the model supports at most "
                            f"{self.max_images} per conversation")  # fmt: skip

    def _images(self, example: Example) -> list[Any]:
        from PIL import Image

        imgs = [load_image(im) for im in example.images]
        if self.blind:
            imgs = [Image.new("L", im.size, 128) for im in imgs]
        return imgs

    def prompt_text(self, example: Example) -> str:
        return self.processor.apply_chat_template(
            messages_for(example, self.system_prompt), tokenize=False, add_generation_prompt=True
        )

    def __call__(self, examples: Sequence[Example]) -> dict[str, Any]:
        import torch

        for ex in examples:
            self.check(ex)
        prompts = [self.prompt_text(ex) for ex in examples]
        texts = [p + ex.answer + self.end for p, ex in zip(prompts, examples)] if self.train else prompts
        images = [im for ex in examples for im in self._images(ex)]
        self.tok.padding_side = "right" if self.train else "left"
        enc = self.processor(text=texts, images=images, return_tensors="pt", padding=True)
        lengths = enc["attention_mask"].sum(1)
        for ex, n in zip(examples, lengths.tolist()):
            if n > self.max_length:
                raise DataError(f"example {ex.id}: {n} tokens (image tokens included) exceed max_length "
                                f"{self.max_length}; shorten the text or raise --model.max_length")  # fmt: skip
        if self.train:
            n_prompt = self.processor(text=prompts, images=images, return_tensors="pt", padding=True)[
                "attention_mask"
            ].sum(1)
            labels = enc["input_ids"].clone()
            pos = torch.arange(labels.shape[1])[None, :]
            labels[(pos < n_prompt[:, None]) | (enc["attention_mask"] == 0)] = -100
            enc["labels"] = labels
        return dict(enc)
