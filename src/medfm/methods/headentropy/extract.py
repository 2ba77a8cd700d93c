"""Generation, then one teacher-forced pass over prompt + answer that yields Head Entropy and baseline features.

Per item (layouts; L layers, H heads, D hidden size; head features are layer-major, index ``l*H + h``):

==================  ========  =============================================================================
``he_answer``       (L*H,)    2-Rényi entropy ``-log sum a^2`` (nats) averaged over the answer span rows
``he_question``     (L*H,)    same over the question/context span (pre-generation variant)
``tj_answer``       (L*H,)    ``1 - sum a^2`` (trace of the softmax Jacobian) over the answer span rows
``tj_question``     (L*H,)    same over the question span
``lookback``        (L*H,)    Lookback-Lens ratio over rows from the assistant turn to the end (repo variant)
``hidden``          (D,)      last-layer hidden state averaged over the answer span (SAPLMA-style probe)
``attn_score``      ()        LLM-Check attention score (cumulative mean log-diagonal at layer 0.8 L)
``token_prob``      ()        mean probability of the answer tokens (teacher-forced)
``token_entropy``   ()        mean predictive Shannon entropy (nats) over the answer tokens
``certainty``       ()        verbalised certainty in [0, 1] (NaN when the model gave none)
==================  ========  =============================================================================

Spans (token indices into prompt + generation, half-open): question span = ``[template_end, question_end)``,
the whole user turn; answer span = ``[question_end, answer_end)``: the assistant header plus the generated
tokens before the ``Certainty`` line (the whole generation when there is none).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfm.core.errors import DataError, UsageError
from medfm.methods.headentropy.qa import QAItem, build_messages, exact_match, extract_answer, parse_certainty

log = logging.getLogger(__name__)

HEAD_FEATURES = ("he_answer", "he_question", "tj_answer", "tj_question", "lookback")
VECTOR_FEATURES = (*HEAD_FEATURES, "hidden")
SCALAR_FEATURES = ("attn_score", "token_prob", "token_entropy", "certainty")


@dataclass
class Spans:
    """Token boundaries of one sequence (prompt + generation).

    Attributes:
        template_end: first token of the user turn.
        question_end: first token of the assistant turn (end of the question/context span).
        prompt_len: prompt tokens (incl. the assistant header of the generation prompt).
        answer_end: end of the answer span (first token of the ``Certainty`` line, else the sequence end).
        length: T, all tokens.
    """

    template_end: int
    question_end: int
    prompt_len: int
    answer_end: int
    length: int


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return "".join(f"{m['content']}\n" for m in messages)


def _char_to_token(offsets: list[tuple[int, int]], char: int) -> int:
    """Index of the first token that starts at or after ``char``."""
    for i, (start, _end) in enumerate(offsets):
        if start >= char:
            return i
    return len(offsets)


def encode_item(tokenizer: Any, messages: list[dict[str, str]], generation: str) -> tuple[list[int], Spans]:
    """Token ids of prompt + generation and the span boundaries.

    The prompt is rendered with the chat template (generation prompt on) and tokenized without extra special
    tokens, the generation tokenized on its own and appended (as the HF backend scores continuations).
    """
    full = _render(tokenizer, messages, True)
    system_only = _render(tokenizer, messages[:1], False)
    question = _render(tokenizer, messages, False)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    if not (full.startswith(question) and question.startswith(system_only)):
        raise UsageError("the chat template does not render the system and user turns as a prefix of the prompt; "
                         "Head Entropy cannot locate the question span for this model")  # fmt: skip
    template_end = _char_to_token(offsets, len(system_only))
    question_end = _char_to_token(offsets, len(question))
    gen = tokenizer(generation, add_special_tokens=False, return_offsets_mapping=True) if generation else None
    gen_ids = list(gen["input_ids"]) if gen else []
    gen_offsets = [tuple(o) for o in gen["offset_mapping"]] if gen else []
    answer_chars = len(generation)
    label = list(re.finditer(r"answer\s*:", generation, re.I))
    cert = re.search(r"cert", generation[label[-1].end() if label else 0 :], re.I)
    if cert:
        answer_chars = (label[-1].end() if label else 0) + cert.start()
    answer_end = len(ids) + _char_to_token(gen_offsets, answer_chars)
    spans = Spans(template_end, question_end, len(ids), answer_end, len(ids) + len(gen_ids))
    return ids + gen_ids, spans


def teacher_forced_features(model: Any, ids: list[int], spans: Spans, query_block: int = 128) -> dict[str, Any]:
    """Features of one sequence (see :func:`teacher_forced_batch`)."""
    return teacher_forced_batch(model, [(ids, spans)], query_block)[0]


def teacher_forced_batch(
    model: Any, batch: list[tuple[list[int], Spans]], query_block: int = 128
) -> list[dict[str, Any]]:
    """One forward pass over several sequences with the row-statistics attention; one feature dict (NumPy) each.

    Sequences are right-padded: with causal attention a real token never attends to the padding after it, so
    every real row is exactly what a pass over that sequence alone computes (no attention mask needed). Logits
    are computed only for the answer rows (``lm_head`` on the final hidden states), never ``(T, vocab)``.

    Args:
        model: a transformers causal LM built on ``AttentionInterface``.
        batch: ``(ids, spans)`` pairs from :func:`encode_item`.
        query_block: query rows per attention block (transient memory ``B * H * block * T`` floats per layer).
    """
    import numpy as np
    import torch

    from medfm.methods.headentropy.attention import (
        RowStatsCollector,
        llm_check_attention_score,
        lookback_ratio,
        renyi2_rows,
        span_mean,
        trace_jacobian_rows,
        use_rowstats,
    )

    device = next(model.parameters()).device
    width = max(len(ids) for ids, _ in batch)
    x = torch.zeros((len(batch), width), dtype=torch.long, device=device)
    for b, (ids, _) in enumerate(batch):
        x[b, : len(ids)] = torch.tensor(ids, device=device)
    collector = RowStatsCollector(model.config.num_hidden_layers, context_end=[sp.question_end for _, sp in batch],
                                  query_block=query_block)  # fmt: skip
    with torch.inference_mode(), use_rowstats(model, collector):
        hidden = model.base_model(input_ids=x, use_cache=False).last_hidden_state  # (B, T, D), final norm applied
        results = []
        for b, (_ids, spans) in enumerate(batch):
            sumsq = collector.sumsq[:, b].float()
            ctx, diag = collector.ctx_mass[:, b].float(), collector.diag[:, b].float()
            he, tj = renyi2_rows(sumsq), trace_jacobian_rows(sumsq)
            a0, a1 = spans.question_end, max(spans.answer_end, spans.question_end + 1)
            q0, q1 = spans.template_end, spans.question_end
            t = spans.length
            feats: dict[str, Any] = {
                "he_answer": span_mean(he, a0, a1),
                "he_question": span_mean(he, q0, q1),
                "tj_answer": span_mean(tj, a0, a1),
                "tj_question": span_mean(tj, q0, q1),
                "lookback": lookback_ratio(ctx[:, :, :t], a0, max(t, a0 + 1), spans.question_end, t),
                "hidden": hidden[b, a0:a1].float().mean(0),
                "attn_score": llm_check_attention_score(diag, a0, a1),
            }
            # hidden row p-1 predicts generated answer token p
            if spans.answer_end > spans.prompt_len:
                rows = hidden[b, spans.prompt_len - 1 : spans.answer_end - 1]
                logp = model.get_output_embeddings()(rows).float().log_softmax(-1)
                targets = x[b, spans.prompt_len : spans.answer_end]
                feats["token_prob"] = float(logp.gather(-1, targets[:, None]).exp().mean())
                feats["token_entropy"] = float(-(logp.exp() * logp).sum(-1).mean())
            else:
                feats["token_prob"] = feats["token_entropy"] = math.nan
            results.append({k: (v.cpu().numpy().astype(np.float32) if hasattr(v, "cpu") else v)
                            for k, v in feats.items()})  # fmt: skip
    return results


# ----------------------------------------------------------------------------------------------------------------------
# Orchestration: chunks of items, cached and resumable


def _check_backend(backend: Any) -> None:
    from medfm.backends import require_capabilities

    require_capabilities(backend, {"attentions"}, purpose="Head Entropy")
    if getattr(backend, "model", None) is None or getattr(backend, "tokenizer", None) is None:
        raise UsageError(f"backend {backend!r} exposes no local model; Head Entropy needs hf:... (e.g. hf:default)")


def context_limit(model: Any) -> int:
    """Most tokens the model takes (``max_position_embeddings``; 2048 when the config does not say)."""
    return int(getattr(model.config, "max_position_embeddings", 0) or 2048)


def extract_items(backend: Any, items: list[QAItem], max_new_tokens: int = 32, query_block: int = 128,
                  medmcqa_last_sentence: bool = True, prefill: str = "Answer:",
                  token_budget: int = 2048) -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
    """Generate greedily, label and extract features for a list of items.

    Args:
        backend: an HF backend (``attentions`` capability, exposes ``model`` and ``tokenizer``).
        items: QA items.
        max_new_tokens: generation budget.
        query_block: query rows per attention block.
        medmcqa_last_sentence: see :func:`medfm.methods.headentropy.qa.build_messages`.
        prefill: text the assistant turn starts with (``Answer:`` keeps small models in the answer format);
            it counts as generated text (answer span); ``""`` reproduces the original unprefilled prompts.
        token_budget: most padded tokens per teacher-forced batch.

    Returns:
        ``(arrays, rows)``: arrays keyed by feature name stacked over the kept items, ``(N, ...)``; rows: one dict
        per item (id, domain, generation, prediction, label, ...; ``skipped`` with a reason for items that
        were not extracted, e.g. a prompt longer than the model's context).
    """
    import numpy as np

    from medfm.backends import GenerationRequest

    _check_backend(backend)
    tok, model = backend.tokenizer, backend.model
    limit = context_limit(model)
    rows: list[dict[str, Any]] = []
    todo = []
    for it in items:
        m = build_messages(it, medmcqa_last_sentence)
        n_prompt = len(tok(_render(tok, m, True) + prefill, add_special_tokens=False)["input_ids"])
        if n_prompt + max_new_tokens > limit:
            log.warning("item %s: prompt of %d tokens + %d new exceeds the model context %d; skipped",
                        it.id, n_prompt, max_new_tokens, limit)  # fmt: skip
            rows.append({"id": it.id, "domain": it.domain, "skipped": f"prompt {n_prompt} tokens > context {limit}"})
        else:
            todo.append((it, m))
    reqs = [GenerationRequest.of(m + ([{"role": "assistant", "content": prefill}] if prefill else []),
                                 max_tokens=max_new_tokens, temperature=0.0) for _, m in todo]  # fmt: skip
    responses = backend.generate(reqs) if reqs else []
    encoded = []
    for (it, m), resp in zip(todo, responses):
        if not resp.ok:
            rows.append({"id": it.id, "domain": it.domain, "skipped": f"generation failed: {resp.error}"})
            continue
        gen = prefill + (resp.text or "")
        ids, spans = encode_item(tok, m, gen)
        encoded.append((it, gen, resp, ids, spans))
    # teacher-forced passes in length-sorted batches under a padded-token budget
    order = sorted(range(len(encoded)), key=lambda i: encoded[i][4].length)
    feats_by_item: dict[int, dict[str, Any]] = {}
    j = 0
    while j < len(order):
        k = j + 1
        while k < len(order) and (k - j + 1) * encoded[order[k]][4].length <= token_budget:
            k += 1
        group = order[j:k]
        for i, f in zip(group, teacher_forced_batch(model, [(encoded[i][3], encoded[i][4]) for i in group],
                                                    query_block)):  # fmt: skip
            feats_by_item[i] = f
        j = k
    feats: dict[str, list[Any]] = {}
    for i, (it, gen, resp, _ids, spans) in enumerate(encoded):
        f = feats_by_item[i]
        cert = parse_certainty(gen)
        f["certainty"] = cert if cert is not None else math.nan
        pred = extract_answer(gen)
        for k2, v in f.items():
            feats.setdefault(k2, []).append(v)
        rows.append({
            "id": it.id, "domain": it.domain, "question": it.question, "answers": it.answers, "generation": gen,
            "prediction": pred, "label": int(exact_match(pred, it.answers)) if pred else 0,
            "empty_generation": not (resp.text or "").strip(), "truncated": resp.finish_reason == "length",
            "n_tokens": spans.length, "question_tokens": spans.question_end - spans.template_end,
            "answer_tokens": spans.answer_end - spans.question_end,
        })  # fmt: skip
    arrays = {k: np.stack([np.asarray(v, dtype=np.float32) for v in vs]) for k, vs in feats.items()}
    return arrays, rows


class FeatureStore:
    """Cached, resumable feature files of one dataset: ``<dir>/meta.json`` and ``chunk-NNNNN.{npz,jsonl}``.

    Each chunk is written atomically after it is complete, so an interrupted extraction resumes at the first
    missing chunk; ``meta.json`` pins the model and settings so a different configuration is not mixed in.
    """

    def __init__(self, folder: str | Path):
        self.dir = Path(folder)

    def meta(self) -> dict[str, Any] | None:
        p = self.dir / "meta.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def init(self, meta: dict[str, Any]) -> None:
        from medfm.core.files import atomic_write_json

        old = self.meta()
        if old is not None and old != meta:
            diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
            raise UsageError(f"{self.dir} holds features made with different settings ({', '.join(diff)}); "
                             "use a new --output_dir")  # fmt: skip
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.dir / "meta.json", meta)

    def chunk_done(self, k: int) -> bool:
        return (self.dir / f"chunk-{k:05d}.npz").is_file() and (self.dir / f"chunk-{k:05d}.jsonl").is_file()

    def write_chunk(self, k: int, arrays: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        import numpy as np

        from medfm.core.files import atomic_path, atomic_write_text

        atomic_write_text(self.dir / f"chunk-{k:05d}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        with atomic_path(self.dir / f"chunk-{k:05d}.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    def load(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """All chunks: ``(arrays (N, ...), rows)`` over the extracted (not skipped) items, in order."""
        import numpy as np

        chunks = sorted(self.dir.glob("chunk-*.npz"))
        if not chunks:
            raise DataError(f"{self.dir}: no feature chunks; run `medfm headentropy extract` first")
        arrays: dict[str, list[Any]] = {}
        rows: list[dict[str, Any]] = []
        for c in chunks:
            jl = c.with_suffix(".jsonl")
            if not jl.is_file():
                raise DataError(f"{jl}: missing item file for {c.name}; rerun extract into the same --output_dir")
            kept = [json.loads(line) for line in jl.read_text().splitlines() if line.strip()]
            kept = [r for r in kept if "skipped" not in r]
            with np.load(c) as z:
                for k in z.files:
                    arrays.setdefault(k, []).append(z[k])
            rows += kept
        out = {k: np.concatenate(v) for k, v in arrays.items()}
        n = len(rows)
        bad = [k for k, v in out.items() if len(v) != n]
        if bad:
            raise DataError(f"{self.dir}: feature arrays {bad} do not match the {n} items; re-extract")
        return out, rows
