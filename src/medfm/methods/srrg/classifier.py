"""SRR-BERT: a BERT-style encoder fine-tuned multi-label on sentence-level finding labels (spec part 3.4).

One model predicts the 163 ``leaves_with_statuses`` labels (sigmoid > a per-label threshold tuned on
validation, 0.5 where validation has too few positives); the other three label spaces are derived from its
per-leaf statuses with the rules of :mod:`medfm.methods.srrg.labels` (the original trains one model per
space; one model is cheaper and keeps the spaces consistent — a recorded decision). When several statuses of
one leaf pass their thresholds the most probable wins.

A model directory (``save_pretrained``) is a plain transformers sequence-classification folder (weights,
tokenizer, ``config.json`` with the label names in ``id2label``), so
``AutoModelForSequenceClassification.from_pretrained(folder)`` loads it, plus ``srrg.json`` (``medfm_class``,
labels, thresholds, max_length) and the model card (README.md + card.json). :func:`load_classifier` also
loads a folder or Hugging Face model id without ``srrg.json`` (the released ``StanfordAIMI/SRR-BERT-Leaves``
and ``-Leaves-with-Statuses`` checkpoints: 55 or 163 outputs in StructEval's label order), the TF-IDF
baseline (:mod:`medfm.methods.srrg.tfidf`) and ``"lexicon"``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfm.core.errors import DataError
from medfm.methods.srrg.labels import LEAVES, LEAVES_WITH_STATUSES, NO_FINDING, Findings, findings_matrix, parse_label

log = logging.getLogger(__name__)
META = "srrg.json"


def load_encoder(base: str, num_labels: int) -> tuple[Any, Any]:
    """``(model, tokenizer)``: ``base`` is ``minilm`` (the offline all-MiniLM-L6-v2), a local folder or
    ``hf-hub:org/name`` (e.g. ``hf-hub:microsoft/BiomedVLP-CXR-BERT-general`` when a user has the hub)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from medfm.core.hub import resolve_source

    if base in ("minilm", "all-minilm-l6-v2"):
        from medfm.data.assets import minilm_path

        path: Any = minilm_path()
    else:
        path = resolve_source(base)
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(path), num_labels=num_labels, problem_type="multi_label_classification"
    )
    return model, tok


def predict_proba(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int,
                  device: Any) -> np.ndarray:  # fmt: skip
    """Sigmoid probabilities ``(N, L)`` float32 of a sequence classifier (in eval mode) over ``texts``."""
    import torch

    out = np.zeros((len(texts), int(model.config.num_labels)), dtype=np.float32)
    order = np.argsort([len(t) for t in texts])  # length-sorted batches pad less
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            idx = order[s : s + batch_size]
            enc = tokenizer([texts[i] or "" for i in idx], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt").to(device)  # fmt: skip
            out[idx] = torch.sigmoid(model(**enc).logits.float()).cpu().numpy()
    return out


class LabelDecoder:
    """Probabilities over leaf-with-status labels -> findings; the part every trained labeller shares.

    Subclasses set :attr:`labels` and :attr:`thresholds` and implement :meth:`predict_proba`."""

    labels: list[str]
    thresholds: np.ndarray

    def _init_labels(self, labels: Sequence[str], threshold: float | Sequence[float]) -> None:
        self.labels = list(labels)
        t = np.asarray(threshold, dtype=np.float32)
        self.thresholds = np.full(len(self.labels), float(t), np.float32) if t.ndim == 0 else t.copy()
        if self.thresholds.shape != (len(self.labels),):
            raise DataError(f"{len(self.thresholds)} thresholds for {len(self.labels)} labels")
        self._parsed = [parse_label(x) for x in self.labels]

    @property
    def threshold(self) -> float:
        """The median per-label threshold (one number for logs and cards)."""
        return float(np.median(self.thresholds))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def decode(self, proba: np.ndarray) -> list[Findings]:
        """Per row: each leaf's most probable status among those above their thresholds; No Finding only alone."""
        result = []
        for row in proba:
            best: dict[str, tuple[float, str]] = {}
            for j in np.flatnonzero(row > self.thresholds):
                leaf, status = self._parsed[j]
                if leaf not in best or row[j] > best[leaf][0]:
                    best[leaf] = (float(row[j]), status)
            f = {leaf: st for leaf, (_p, st) in best.items() if leaf != NO_FINDING}
            result.append(f if f else ({NO_FINDING: "Present"} if NO_FINDING in best else {}))
        return result

    def predict(self, texts: Sequence[str]) -> list[Findings]:
        """Findings of each sentence (see :meth:`decode`)."""
        if isinstance(texts, str):
            raise DataError("predict() takes a list of sentences, not one string")
        if not len(texts):
            return []
        return self.decode(self.predict_proba(list(texts)))

    def predict_space(self, texts: Sequence[str], space_name: str) -> np.ndarray:
        """Multi-hot ``(N, K)`` int8 in a label space (``leaves``, ``upper``, ``*_with_statuses``)."""
        return findings_matrix(self.predict(texts), space_name)


class FindingClassifier(LabelDecoder):
    """Sentence-level finding classifier: ``predict(texts) -> list[{leaf: status}]``.

    Args:
        model: a transformers sequence-classification model with ``len(labels)`` outputs.
        tokenizer: its tokenizer.
        labels: output label names (default the 163 leaves-with-statuses labels).
        threshold: sigmoid threshold, one for all labels or one per label.
        max_length: tokens per sentence.
        batch_size: sentences per forward pass.
        device: torch device string.
    """

    def __init__(self, model: Any, tokenizer: Any, labels: Sequence[str] = LEAVES_WITH_STATUSES,
                 threshold: float | Sequence[float] = 0.5, max_length: int = 128, batch_size: int = 128, device: str = "cpu"):  # fmt: skip
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self._init_labels(labels, threshold)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.device = device

    # -- inference ---------------------------------------------------------------------------------------------------
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Sigmoid probabilities ``(N, L)`` float32 over :attr:`labels`."""
        return predict_proba(self.model, self.tokenizer, texts, self.max_length, self.batch_size, self.device)

    # -- persistence -------------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, card: Any = None) -> Path:
        """Write the model directory atomically (weights, tokenizer, srrg.json, card)."""
        from medfm.core.files import atomic_dir

        cfg = self.model.config  # label names in config.json: a plain transformers classifier, usable without medfm
        cfg.id2label = dict(enumerate(self.labels))
        cfg.label2id = {x: i for i, x in enumerate(self.labels)}
        cfg.problem_type = "multi_label_classification"
        with atomic_dir(directory) as tmp:
            self.model.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
            meta = {
                "medfm_class": f"{type(self).__module__}:{type(self).__qualname__}",
                "labels": self.labels,
                "threshold": self.threshold,
                "thresholds": [round(float(t), 4) for t in self.thresholds],
                "max_length": self.max_length,
                "label_space": "leaves_with_statuses",
            }
            (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
            if card is not None:
                from medfm.core.hub import write_card

                write_card(tmp, card)
        return Path(directory)

    @classmethod
    def from_pretrained(cls, source: str | Path, device: str = "cpu", batch_size: int = 128) -> Any:
        """Load a model directory (a path, ``local-dir:``/path, ``hf-hub:org/name`` or a bare ``org/name`` hub id).

        With ``srrg.json`` (a medfm-trained model) its labels and thresholds are used. Without it (a released
        SRR-BERT checkpoint) the label names come from ``config.json`` when they are SRR-BERT labels, else from
        StructEval's order for 163 (leaves with statuses) or 55 (leaves, all Present) outputs, threshold 0.5."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from medfm.core.hub import resolve_source

        path = resolve_source(_hub_spec(source))
        meta_path = path / META
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
        try:
            model = AutoModelForSequenceClassification.from_pretrained(str(path))
            tok = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as exc:
            what = "model files are missing or corrupt" if meta else "is not a transformers classifier folder"
            raise DataError(f"{path}: {what} ({str(exc)[:200]}); train one with 'medfm srrg train', or pass a "
                            "folder with config.json, weights and tokenizer files") from None  # fmt: skip
        if meta is not None:
            labels, thresholds = meta["labels"], meta.get("thresholds", meta.get("threshold", 0.5))
        else:
            labels, thresholds = released_labels(model.config), 0.5
        max_length = meta.get("max_length", 128) if meta else 128
        return cls(model, tok, labels, thresholds, max_length, batch_size=batch_size, device=device)


def released_labels(config: Any) -> list[str]:
    """Output label names of a released SRR-BERT checkpoint (no ``srrg.json``), as leaf-with-status labels."""
    n = int(config.num_labels)
    named = [str(config.id2label[i]) for i in range(n)] if getattr(config, "id2label", None) else []
    try:
        if named and not all(re.fullmatch(r"LABEL_\d+", x) for x in named):
            return [f"{leaf} ({status})" if leaf != NO_FINDING else NO_FINDING
                    for leaf, status in map(parse_label, named)]  # fmt: skip
    except DataError:
        pass
    if n == len(LEAVES_WITH_STATUSES):
        return list(LEAVES_WITH_STATUSES)
    if n == len(LEAVES):  # the leaves model predicts mentions without a status: read them as Present
        return list(LEAVES)
    raise DataError(f"a classifier with {n} outputs is not an SRR-BERT leaves (55) or leaves-with-statuses (163) "
                    "model; the upper-label models (25/73) cannot be read as leaves")  # fmt: skip


def _hub_spec(source: str | Path) -> str:
    """A bare ``org/name`` that is not a local folder is a Hugging Face model id."""
    text = str(source)
    if ":" not in text and not Path(text).exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", text):
        return f"hf-hub:{text}"
    return text


def load_classifier(source: str, device: str = "cpu") -> Any:
    """``"lexicon"``, a TF-IDF model folder, an SRR-BERT folder or hub id -> an object with
    ``predict(texts) -> list[Findings]``."""
    if str(source) == "lexicon":
        from medfm.methods.srrg.lexicon import LexiconLabeller

        return LexiconLabeller()
    meta = Path(str(source).removeprefix("local-dir:")) / META
    if meta.is_file() and "tfidf" in json.loads(meta.read_text()).get("medfm_class", ""):
        from medfm.methods.srrg.tfidf import TfidfClassifier

        return TfidfClassifier.from_pretrained(meta.parent)
    return FindingClassifier.from_pretrained(source, device=device)
