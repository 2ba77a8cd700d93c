"""SRR-BERT: a BERT-style encoder fine-tuned multi-label on sentence-level finding labels (spec part 3.4).

One model predicts the 163 ``leaves_with_statuses`` labels (sigmoid > threshold); the other three label
spaces are derived from its per-leaf statuses with the rules of :mod:`medfm.methods.srrg.labels` (the
original trains one model per space; one model is cheaper and keeps the spaces consistent — a recorded
decision). When several statuses of one leaf pass the threshold the most probable wins.

A model directory (``save_pretrained``) holds the transformers model and tokenizer, ``srrg.json``
(``medfm_class``, labels, threshold, max_length) and the model card (README.md + card.json).
``FindingClassifier.from_pretrained("lexicon")`` returns the lexicon labeller instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfm.core.errors import DataError
from medfm.methods.srrg.labels import LEAVES_WITH_STATUSES, NO_FINDING, Findings, findings_matrix, parse_label

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


class FindingClassifier:
    """Sentence-level finding classifier: ``predict(texts) -> list[{leaf: status}]``.

    Args:
        model: a transformers sequence-classification model with ``len(labels)`` outputs.
        tokenizer: its tokenizer.
        labels: output label names (default the 163 leaves-with-statuses labels).
        threshold: sigmoid threshold per label.
        max_length: tokens per sentence.
        batch_size: sentences per forward pass.
        device: torch device string.
    """

    def __init__(self, model: Any, tokenizer: Any, labels: Sequence[str] = LEAVES_WITH_STATUSES,
                 threshold: float = 0.5, max_length: int = 128, batch_size: int = 128, device: str = "cpu"):  # fmt: skip
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.threshold = float(threshold)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.device = device
        self._parsed = [parse_label(x) for x in self.labels]

    # -- inference ---------------------------------------------------------------------------------------------------
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Sigmoid probabilities ``(N, L)`` float32 over :attr:`labels`."""
        import torch

        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        order = np.argsort([len(t) for t in texts])  # length-sorted batches pad less
        with torch.inference_mode():
            for s in range(0, len(texts), self.batch_size):
                idx = order[s : s + self.batch_size]
                enc = self.tokenizer([texts[i] or "" for i in idx], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(self.device)  # fmt: skip
                out[idx] = torch.sigmoid(self.model(**enc).logits.float()).cpu().numpy()
        return out

    def decode(self, proba: np.ndarray) -> list[Findings]:
        """Per row: each leaf's most probable status among those above threshold; No Finding only alone."""
        result = []
        for row in proba:
            best: dict[str, tuple[float, str]] = {}
            for j in np.flatnonzero(row > self.threshold):
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

    # -- persistence -------------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, card: Any = None) -> Path:
        """Write the model directory atomically (weights, tokenizer, srrg.json, card)."""
        from medfm.core.files import atomic_dir

        with atomic_dir(directory) as tmp:
            self.model.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
            meta = {
                "medfm_class": f"{type(self).__module__}:{type(self).__qualname__}",
                "labels": self.labels,
                "threshold": self.threshold,
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
        """Load a model directory (``local-dir:``/path or ``hf-hub:``), or ``"lexicon"`` for the lexicon labeller."""
        if str(source) == "lexicon":
            from medfm.methods.srrg.lexicon import LexiconLabeller

            return LexiconLabeller()
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from medfm.core.hub import resolve_source

        path = resolve_source(source)
        meta_path = path / META
        if not meta_path.is_file():
            raise DataError(f"{path} is not an SRR-BERT model directory ({META} missing); train one with "
                            "'medfm srrg train' or pass 'lexicon'")  # fmt: skip
        meta = json.loads(meta_path.read_text())
        try:
            model = AutoModelForSequenceClassification.from_pretrained(str(path))
            tok = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: model files are missing or corrupt ({exc}); re-run 'medfm srrg train'") from None
        return cls(model, tok, meta["labels"], meta.get("threshold", 0.5), meta.get("max_length", 128),
                   batch_size=batch_size, device=device)  # fmt: skip


def load_classifier(source: str, device: str = "cpu") -> Any:
    """``"lexicon"`` or a model directory -> an object with ``predict(texts) -> list[Findings]``."""
    return FindingClassifier.from_pretrained(source, device=device)
