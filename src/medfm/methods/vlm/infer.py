"""Generation with the VLM (batched, KV cache on by default) and the evaluation of reports and VQA answers."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from medfm.methods.vlm.config import GenerationOptions, VLMSpec
from medfm.methods.vlm.data import Example, VLMCollator

log = logging.getLogger(__name__)


@dataclass
class Generations:
    """Generated texts with throughput.

    Attributes:
        texts: one generated answer per example (special tokens removed, stripped).
        new_tokens: generated tokens per example (up to and excluding the end token).
        seconds: wall-clock time of all ``generate`` calls.
    """

    texts: list[str] = field(default_factory=list)
    new_tokens: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return float(sum(self.new_tokens) / self.seconds) if self.seconds > 0 else float("nan")


def generate(
    model: Any,
    processor: Any,
    examples: Sequence[Example],
    spec: VLMSpec | None = None,
    opts: GenerationOptions | None = None,
    blind: bool = False,
) -> Generations:
    """Answer each example's prompt about its image(s).

    Args:
        model: an image-text-to-text model (the medfm VLM or any Llava-like HF model).
        processor: its processor (chat template must accept ``{"type": "image"}`` parts).
        examples: examples (``answer`` is ignored).
        spec: system prompt, max_length, max_images (default: the model's own spec).
        opts: decoding options (max_new_tokens, batch_size, use_cache, temperature).
        blind: replace images with a constant grey image (the text-only baseline).
    """
    import torch

    from medfm.methods.vlm.model import spec_of

    spec = spec or spec_of(model)
    opts = opts or GenerationOptions()
    collate = VLMCollator(processor, "", spec.max_length, spec.max_images, train=False, blind=blind)
    tok = processor.tokenizer
    eos = model.generation_config.eos_token_id  # an int or a list, depending on the model
    end_ids = {eos} if isinstance(eos, int) else set(eos or [])
    end_ids.add(tok.convert_tokens_to_ids("<|im_end|>"))
    image_id = getattr(model.config, "image_token_index", None) or getattr(model.config, "image_token_id", None)
    out = Generations()
    device = next(model.parameters()).device
    for j in range(0, len(examples), max(1, opts.batch_size)):
        chunk = list(examples[j : j + opts.batch_size])
        batch = {k: v.to(device) for k, v in collate(chunk).items()}
        kwargs: dict[str, Any] = {"max_new_tokens": opts.max_new_tokens, "use_cache": opts.use_cache,
                                  "pad_token_id": tok.pad_token_id, "eos_token_id": sorted(end_ids)}  # fmt: skip
        if opts.temperature > 0:
            kwargs.update(do_sample=True, temperature=opts.temperature, top_k=0)
        else:
            kwargs.update(do_sample=False)
        if image_id is not None:  # never generate an image placeholder
            kwargs["suppress_tokens"] = [int(image_id)]
        t0 = time.perf_counter()
        with torch.inference_mode():
            seqs = model.generate(**batch, **kwargs)
        out.seconds += time.perf_counter() - t0
        new = seqs[:, batch["input_ids"].shape[1] :].cpu().tolist()
        for ids in new:
            n = next((t for t, tid in enumerate(ids) if tid in end_ids), len(ids))
            out.new_tokens.append(n)
            out.texts.append(tok.decode(ids[:n], skip_special_tokens=True).strip())
    return out


def score_reports(
    texts: Sequence[str], examples: Sequence[Example], n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Finding-level micro F1 of generated reports against the examples' labels (with bootstrap CI over reports),
    per-finding F1, and the extractor's ceiling (F1 of the reference reports' extracted findings).

    Returns:
        ``{"f1": Metric, "per_finding": {finding: f1}, "ceiling_f1": float, "counts": (N, 3) array,
        "pred": (N, F) bool, "truth": (N, F) bool}``.
    """
    from medfm.core.metrics import with_ci
    from medfm.methods.vlm.findings import (
        EVAL_FINDINGS,
        extract_findings,
        f1_from_counts,
        micro_f1,
        per_report_counts,
        truth_matrix,
    )

    truth = truth_matrix([ex.labels for ex in examples])
    pred = extract_findings(list(texts))
    counts = per_report_counts(truth, pred)
    metric = with_ci(f1_from_counts, counts, n_resamples=n_boot, seed=seed,
                     note="micro F1 over (report, finding); CI resamples reports")  # fmt: skip
    refs = [ex.answer for ex in examples if ex.answer]
    ceiling = micro_f1(truth, extract_findings([ex.answer for ex in examples])) if len(refs) == len(examples) else None
    per = {f: micro_f1(truth[:, j : j + 1], pred[:, j : j + 1]) for j, f in enumerate(EVAL_FINDINGS)}
    return {"f1": metric, "per_finding": per, "ceiling_f1": ceiling, "counts": counts, "pred": pred, "truth": truth}


def score_vqa(texts: Sequence[str], examples: Sequence[Example], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Exact-match accuracy (yes/no normalised) with a bootstrap CI over questions."""
    from medfm.core.metrics import mean_ci
    from medfm.methods.vlm.findings import exact_match

    em = exact_match(list(texts), [ex.answer for ex in examples])
    return {"accuracy": mean_ci(em, n_resamples=n_boot, seed=seed), "correct": em}


def srr_report_f1(texts: Sequence[str], references: Sequence[str]) -> float | None:
    """F1-SRR-BERT (impression, leaves, samples average) with SRRG's lexicon labeller; None if unavailable."""
    try:
        from medfm.methods.srrg.lexicon import LexiconLabeller
        from medfm.methods.srrg.metric import f1_srr_bert

        return float(f1_srr_bert(list(texts), list(references), LexiconLabeller()).f1)
    except Exception as exc:  # the SRRG metric is optional here; the finding F1 stays the primary metric
        log.warning("F1-SRR-BERT unavailable: %s", exc)
        return None


def answer_logprobs(
    model: Any,
    processor: Any,
    examples: Sequence[Example],
    choices: Sequence[str],
    spec: VLMSpec | None = None,
    batch_size: int = 16,
    blind: bool = False,
) -> np.ndarray:
    """Teacher-forced log-probability (natural log, summed over tokens) of each candidate answer.

    Useful for multiple-choice evaluation (yes/no VQA, SMMILE options) without parsing generated text.

    Returns:
        ``(N, C)`` float array: ``log p(choice_c | image, prompt)`` per example (the end-of-turn token excluded).
    """
    import torch
    import torch.nn.functional as F

    from medfm.methods.vlm.model import spec_of

    spec = spec or spec_of(model)
    collate = VLMCollator(processor, "", spec.max_length, spec.max_images, train=True, blind=blind)
    collate.end = ""  # score the answer tokens only
    device = next(model.parameters()).device
    out = np.zeros((len(examples), len(choices)))
    for c, choice in enumerate(choices):
        exs = [replace(ex, answer=choice) for ex in examples]
        for j in range(0, len(exs), batch_size):
            batch = {k: v.to(device) for k, v in collate(exs[j : j + batch_size]).items()}
            labels = batch.pop("labels")
            with torch.inference_mode():
                logits = model(**batch).logits.float()
            logp = F.log_softmax(logits[:, :-1], -1)
            tgt = labels[:, 1:]
            mask = tgt != -100
            picked = logp.gather(-1, tgt.clamp(min=0)[..., None])[..., 0] * mask
            out[j : j + len(exs[j : j + batch_size]), c] = picked.sum(1).cpu().numpy()
    return out
