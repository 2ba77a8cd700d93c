"""Greedy generation that yields Head Entropy and baseline features in the same pass (no second forward).

The prompt is prefilled once through the fused attention (row statistics from log-sum-exps, see
:mod:`medfm.methods.headentropy.attention`), then each generated token is decoded with the KV cache, its row
statistics recorded by a collector that grows with the cache; the last generated token is fed once more so its
own row exists (a teacher-forced pass over prompt + answer sees exactly these rows). :func:`teacher_forced_batch`
is the exact second-pass reference, kept for tests and for scoring given text.

Per item (layouts; L layers, H heads, D hidden size; head features are layer-major, index ``l*H + h``):

==================  ========  =============================================================================
``he_answer``       (L*H,)    2-Rényi entropy ``-log sum a^2`` (nats) averaged over the answer span rows
``he_question``     (L*H,)    same over the question/context span (pre-generation variant)
``tj_answer``       (L*H,)    ``1 - sum a^2`` (trace of the softmax Jacobian) over the answer span rows
``tj_question``     (L*H,)    same over the question span
``lookback``        (L*H,)    Lookback-Lens ratio over rows from the assistant turn to the end (repo variant)
``hidden``          (D,)      last-layer hidden state averaged over the answer span (SAPLMA-style probe)
``attn_score``      ()        LLM-Check attention score (cumulative mean log-diagonal at layer 0.8 L)
``token_prob``      ()        mean probability of the answer tokens
``token_entropy``   ()        mean predictive Shannon entropy (nats) over the answer tokens
``certainty``       ()        verbalised certainty in [0, 1] (NaN when the model gave none)
``answer_length``   ()        answer span length (tokens): a confound baseline
``format_ok``       ()        1 when the generation keeps the answer format (one short "Answer:" line, optional certainty)
==================  ========  =============================================================================

Spans (token indices into prompt + generation, half-open): question span = ``[template_end, question_end)``,
the whole user turn; answer span = ``[gen_start, answer_end)``: the *generated* tokens before the
``Certainty`` line (not the assistant header, not the forced prefill).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfm.core.errors import DataError, UsageError
from medfm.methods.headentropy.qa import QAItem, build_messages, extract_answer, parse_certainty

log = logging.getLogger(__name__)

HEAD_FEATURES = ("he_answer", "he_question", "tj_answer", "tj_question", "lookback")
VECTOR_FEATURES = (*HEAD_FEATURES, "hidden")
SCALAR_FEATURES = ("attn_score", "token_prob", "token_entropy", "certainty", "answer_length", "format_ok")
_CERT_LINE = re.compile(r"^certainty\s*:\s*\d{1,3}(\.\d+)?\s*%?$", re.I)


def format_ok(generation: str, max_words: int = 5) -> float:
    """1.0 when ``generation`` keeps the requested answer format: ``Answer: <at most max_words words>`` on one
    line, followed by nothing or by one ``Certainty: <number>`` line; 0.0 for a rambling or unlabelled answer.

    A format detector is a confound baseline: a correctness score that only tracks it is not about attention.
    """
    lines = [ln.strip() for ln in (generation or "").strip().splitlines() if ln.strip()]
    if not lines:
        return 0.0
    m = re.match(r"answer\s*:\s*(.*)$", lines[0], re.I)
    if m is None or not 1 <= len(m.group(1).split()) <= max_words:
        return 0.0
    rest = lines[1:]
    return float(not rest or (len(rest) == 1 and bool(_CERT_LINE.match(rest[0]))))


def certainty_start(generation: str) -> int | None:
    """Character index where the ``Certainty`` line starts after the last ``Answer:`` label, else None."""
    label = list(re.finditer(r"answer\s*:", generation, re.I))
    base = label[-1].end() if label else 0
    m = re.search(r"\bcertainty\b", generation[base:], re.I)  # a word: "uncertain" is part of an answer
    return None if m is None else base + m.start()


@dataclass
class Spans:
    """Token boundaries of one sequence (prompt + generation).

    Attributes:
        template_end: first token of the user turn.
        question_end: first token of the assistant turn (end of the question/context span).
        prompt_len: prompt tokens (incl. the assistant header of the generation prompt).
        answer_end: end of the answer span (first token of the ``Certainty`` line, else the sequence end).
        length: T, all tokens.
        gen_start: first generated token (after the header and any forced prefill): the answer span's start.
    """

    template_end: int
    question_end: int
    prompt_len: int
    answer_end: int
    length: int
    gen_start: int = -1

    def __post_init__(self) -> None:
        if self.gen_start < 0:
            self.gen_start = self.prompt_len

    @property
    def answer(self) -> tuple[int, int]:
        """The answer span; when nothing was generated, the last prompt row (the one that produced the answer)."""
        if self.answer_end > self.gen_start:
            return self.gen_start, self.answer_end
        return self.gen_start - 1, self.gen_start


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


def encode_item(tokenizer: Any, messages: list[dict[str, str]], generation: str,
                prefill: str = "") -> tuple[list[int], Spans]:  # fmt: skip
    """Token ids of prompt + generation and the span boundaries.

    The prompt is rendered with the chat template (generation prompt on) and tokenized without extra special
    tokens, the generation tokenized on its own and appended (as the HF backend scores continuations). A
    ``prefill`` the generation starts with is excluded from the answer span.
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
    cert = certainty_start(generation)
    answer_chars = len(generation) if cert is None else cert
    answer_end = len(ids) + _char_to_token(gen_offsets, answer_chars)
    gen_start = len(ids) + (_char_to_token(gen_offsets, len(prefill)) if prefill and generation.startswith(prefill)
                            else 0)  # fmt: skip
    spans = Spans(template_end, question_end, len(ids), max(answer_end, gen_start), len(ids) + len(gen_ids), gen_start)
    return ids + gen_ids, spans


def attention_features(sumsq: Any, ctx_mass: Any, diag: Any, spans: Spans) -> dict[str, Any]:
    """Head features of one sequence from its row statistics ``(L, H, >= T)`` (a collector's slice): Rényi-2 and
    trace-Jacobian span means, the lookback ratio and the LLM-Check score, all over the first ``spans.length``
    rows. Shared by the generation pass and the teacher-forced reference."""
    from medfm.methods.headentropy.attention import (
        llm_check_attention_score,
        lookback_ratio,
        renyi2_rows,
        span_mean,
        trace_jacobian_rows,
    )

    t = spans.length
    sumsq = sumsq[:, :, :t].float()
    he, tj = renyi2_rows(sumsq), trace_jacobian_rows(sumsq)
    a0, a1 = spans.answer
    q0, q1 = spans.template_end, spans.question_end
    return {
        "he_answer": span_mean(he, a0, a1),
        "he_question": span_mean(he, q0, q1),
        "tj_answer": span_mean(tj, a0, a1),
        "tj_question": span_mean(tj, q0, q1),
        "lookback": lookback_ratio(ctx_mass[:, :, :t].float(), spans.question_end, t, spans.question_end, t),
        "attn_score": llm_check_attention_score(diag[:, :, :t].float(), a0, a1),
    }


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

    from medfm.methods.headentropy.attention import RowStatsCollector, use_rowstats

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
            feats = attention_features(collector.sumsq[:, b], collector.ctx_mass[:, b], collector.diag[:, b], spans)
            a0, a1 = spans.answer
            feats["hidden"] = hidden[b, a0:a1].float().mean(0)
            feats["answer_length"] = float(max(0, spans.answer_end - spans.gen_start))
            # hidden row p-1 predicts generated answer token p
            if spans.answer_end > spans.gen_start:
                rows = hidden[b, spans.gen_start - 1 : spans.answer_end - 1]
                logp = model.get_output_embeddings()(rows).float().log_softmax(-1)
                targets = x[b, spans.gen_start : spans.answer_end]
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


def encode_prompt(tokenizer: Any, messages: list[dict[str, str]], prefill: str = "") -> tuple[list[int], int, int]:
    """``(ids, template_end, question_end)`` of the generation prompt (chat template + assistant header +
    ``prefill``), tokenized once as the model will read it."""
    ids, spans = encode_item(tokenizer, messages, "")
    pre = tokenizer(prefill, add_special_tokens=False)["input_ids"] if prefill else []
    return ids + list(pre), spans.template_end, spans.question_end


def _token_ends(tokenizer: Any, gen_ids: list[int]) -> list[int]:
    """Character length of the decoded text after each generated token (maps characters to tokens)."""
    return [len(tokenizer.decode(gen_ids[: k + 1], skip_special_tokens=True)) for k in range(len(gen_ids))]


def _cache_kwarg(module: Any) -> str:
    """Name of the KV-cache argument of ``module.forward``: ``cache`` (transformers >= 5.2x) or
    ``past_key_values`` (earlier, deprecated later)."""
    import inspect

    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def generate_with_features(model: Any, tokenizer: Any, messages: list[dict[str, str]], prefill: str = "",
                           max_new_tokens: int = 32, eos_ids: set[int] | None = None, query_block: int = 128,
                           features: bool = True) -> dict[str, Any]:  # fmt: skip
    """Greedy-decode one item with the KV cache and, when ``features``, collect its features in the same pass.

    Returns ``{"text", "gen_ids", "finish_reason" ("stop" | "length"), "spans", "features"}``; ``text`` is the
    prefill plus the generated text (special tokens dropped); ``features`` maps names to NumPy arrays (see the
    module table), None when ``features`` is False (the plain-generation baseline of the overhead claim).
    """
    import numpy as np
    import torch

    from medfm.methods.headentropy.attention import RowStatsCollector, use_rowstats

    device = next(model.parameters()).device
    eos_ids = set(eos_ids or {tokenizer.eos_token_id})
    prompt, template_end, question_end = encode_prompt(tokenizer, messages, prefill)
    p = len(prompt)
    head = model.get_output_embeddings()
    gen: list[int] = []
    probs: list[float] = []
    ents: list[float] = []
    hid: list[Any] = []
    collector = RowStatsCollector(model.config.num_hidden_layers, context_end=[question_end], query_block=query_block,
                                  capacity=p + max_new_tokens + 1)  # fmt: skip
    ctx = use_rowstats(model, collector) if features else contextlib.nullcontext()
    finish = "length"
    with torch.inference_mode(), ctx:
        from transformers import DynamicCache

        cache = DynamicCache()
        x = torch.tensor([prompt], device=device)
        kw = _cache_kwarg(model.base_model)
        h = model.base_model(input_ids=x, use_cache=True, **{kw: cache}).last_hidden_state[:, -1]
        for _ in range(max_new_tokens):
            logits = head(h)[0]
            nxt = int(logits.argmax())
            if nxt in eos_ids:
                finish = "stop"
                break
            if features:  # the plain-generation arm does only what greedy decoding needs
                logp = logits.float().log_softmax(-1)
                probs.append(float(logp[nxt].exp()))
                ents.append(float(-(logp.exp() * logp).sum()))
            gen.append(nxt)
            # feeding the token gives its own row (attention statistics, hidden state): the answer span's rows
            h = model.base_model(input_ids=torch.tensor([[nxt]], device=device), use_cache=True,
                                 **{kw: cache}).last_hidden_state[:, -1]  # fmt: skip
            if features:
                hid.append(h[0].float())
    text = tokenizer.decode(gen, skip_special_tokens=True)
    full = prefill + text
    ends = _token_ends(tokenizer, gen)
    cert = certainty_start(full)
    n_ans = len(gen) if cert is None else sum(1 for e in ends if len(prefill) + e <= cert)
    spans = Spans(template_end, question_end, p, p + n_ans, p + len(gen), p)
    out: dict[str, Any] = {"text": full, "gen_ids": gen, "finish_reason": finish, "spans": spans, "features": None}
    if not features:
        return out
    feats = attention_features(collector.sumsq[:, 0], collector.ctx_mass[:, 0], collector.diag[:, 0], spans)
    feats.update({
        "hidden": torch.stack(hid[:n_ans]).mean(0) if n_ans else h[0].float(),
        "token_prob": float(np.mean(probs[:n_ans])) if n_ans else math.nan,
        "token_entropy": float(np.mean(ents[:n_ans])) if n_ans else math.nan,
        "answer_length": float(n_ans),
        "format_ok": format_ok(full),
    })  # fmt: skip
    cert_v = parse_certainty(full)
    feats["certainty"] = cert_v if cert_v is not None else math.nan
    out["features"] = {k: (v.cpu().numpy().astype(np.float32) if hasattr(v, "cpu") else np.float32(v))
                       for k, v in feats.items()}  # fmt: skip
    return out


def extract_items(backend: Any, items: list[QAItem], max_new_tokens: int = 32, query_block: int = 128,
                  medmcqa_last_sentence: bool = True, prefill: str = "Answer:", label_mode: str = "contains",
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
    """Generate greedily, label and collect features for a list of items (one pass per item, see
    :func:`generate_with_features`).

    Args:
        backend: an HF backend (``attentions`` capability, exposes ``model`` and ``tokenizer``).
        items: QA items.
        max_new_tokens: generation budget.
        query_block: query rows per attention block of the eager fallback.
        medmcqa_last_sentence: see :func:`medfm.methods.headentropy.qa.build_messages`.
        prefill: text the assistant turn starts with (``Answer:`` keeps small models in the answer format);
            it is part of the prompt, not of the answer span; ``""`` reproduces the original unprefilled prompts.
        label_mode: the label used for ``label`` (:data:`medfm.methods.headentropy.qa.LABEL_MODES`); every mode's
            label is stored too (``label_exact``, ``label_contains``, ``label_token_f1``).

    Returns:
        ``(arrays, rows)``: arrays keyed by feature name stacked over the kept items, ``(N, ...)``; rows: one dict
        per item (id, domain, generation, prediction, labels, ...; ``skipped`` with a reason for items that
        were not extracted, e.g. a prompt longer than the model's context).
    """
    import numpy as np

    from medfm.methods.headentropy.qa import LABEL_MODES, is_correct

    _check_backend(backend)
    tok, model = backend.tokenizer, backend.model
    limit = context_limit(model)
    eos = set(getattr(backend, "_eos_ids", None) or [tok.eos_token_id])
    rows: list[dict[str, Any]] = []
    feats: dict[str, list[Any]] = {}
    for it in items:
        m = build_messages(it, medmcqa_last_sentence)
        n_prompt = len(encode_prompt(tok, m, prefill)[0])
        if n_prompt + max_new_tokens + 1 > limit:
            log.warning("item %s: prompt of %d tokens + %d new exceeds the model context %d; skipped",
                        it.id, n_prompt, max_new_tokens, limit)  # fmt: skip
            rows.append({"id": it.id, "domain": it.domain, "skipped": f"prompt {n_prompt} tokens > context {limit}"})
            continue
        g = generate_with_features(model, tok, m, prefill, max_new_tokens, eos, query_block)
        gen, spans = g["text"], g["spans"]
        for k2, v in g["features"].items():
            feats.setdefault(k2, []).append(v)
        pred = extract_answer(gen)
        labels = {f"label_{mode}": int(is_correct(pred, it.answers, mode, it.options)) for mode in LABEL_MODES}
        rows.append({
            "id": it.id, "domain": it.domain, "question": it.question, "answers": it.answers, "generation": gen,
            "prediction": pred, "label": labels[f"label_{label_mode}"], **labels,
            "empty_generation": not gen[len(prefill):].strip(), "truncated": g["finish_reason"] == "length",
            "n_tokens": spans.length, "question_tokens": spans.question_end - spans.template_end,
            "answer_tokens": spans.answer_end - spans.gen_start, "format_ok": bool(g["features"]["format_ok"]),
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
