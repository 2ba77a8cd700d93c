"""Per-row attention statistics computed inside the forward pass (Head Entropy, arXiv 2602.13699).

For every layer l, head h and query row i of one causal forward pass this module accumulates, without ever
holding the ``(L, H, T, T)`` attention stack:

* ``sumsq[l, h, i] = sum_j a_{l,h,i,j}^2`` over all key positions j <= i (the "spread" of the row);
  2-Rényi entropy ``H2 = -log sumsq`` (paper v1) and the trace of the softmax Jacobian ``1 - sumsq`` (repo);
* ``ctx_mass[l, h, i] = sum_{j < c} a_{l,h,i,j}``: attention mass on the first ``c`` keys (the prompt), for the
  Lookback-Lens ratio baseline;
* ``diag[l, h, i] = a_{l,h,i,i}``: the diagonal (eigenvalues of the lower-triangular attention matrix), for the
  LLM-Check attention score baseline.

It works by registering an attention function ``medfm_rowstats`` with transformers' ``AttentionInterface``
(with the SDPA mask, which is None for an unpadded causal pass). Without a mask the pass is fused: the CPU/GPU
flash kernel returns each row's log-sum-exp ``LSE(s)`` of the logits ``s``, and

    sum_j a_ij^2 = exp(LSE(2 s) - 2 LSE(s)),   sum_{j<c} a_ij = exp(LSE_{j<c}(s) - LSE(s)),   a_ii = exp(s_ii - LSE(s))

so the statistics cost two more fused calls and no ``(T, T)`` tensor. With a padding mask (or a KV cache
and several new rows) it falls back to exact eager attention in blocks of query rows, transient memory
``(B, H, block, T)``. One decoded row (``q = 1``, the KV-cache case) is eager: ``(B, H, 1, T)`` is O(T) anyway.
The statistics are stored as ``3 x (L, B, H, T)``, O(L*H*T), in a collector that grows with the KV cache.
Pure reference functions over full attention maps (:func:`row_sumsq_reference` ...) are kept for tests.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

IMPL_NAME = "medfm_rowstats"
_ACTIVE: contextvars.ContextVar[RowStatsCollector | None] = contextvars.ContextVar("medfm_rowstats", default=None)
_REGISTERED = False


@dataclass
class RowStatsCollector:
    """Buffers the per-row statistics of one forward pass.

    Args:
        num_layers: L.
        context_end: per batch item, the number of leading key positions that count as "context" for
            ``ctx_mass`` (the prompt up to the assistant turn); None disables ``ctx_mass``.
        query_block: query rows per block of the chunked attention (bounds the transient memory).

    Attributes (filled by the forward pass, float32 on the model's device, layout ``(L, B, H, T)``):
        sumsq, ctx_mass, diag.
    """

    num_layers: int
    context_end: Sequence[int] | None = None
    query_block: int = 128
    capacity: int = 0
    fused: bool = True
    sumsq: Any = None
    ctx_mass: Any = None
    diag: Any = None

    def _alloc(self, batch: int, heads: int, length: int, device: Any) -> None:
        import torch

        shape = (self.num_layers, batch, heads, max(length, self.capacity))
        self.sumsq = torch.zeros(shape, dtype=torch.float32, device=device)
        self.ctx_mass = torch.zeros(shape, dtype=torch.float32, device=device)
        self.diag = torch.zeros(shape, dtype=torch.float32, device=device)

    def ensure(self, batch: int, heads: int, rows_end: int, device: Any) -> None:
        """Room for query rows ``< rows_end`` (allocates on first use, doubles when a KV cache outgrows it)."""
        import torch

        if self.sumsq is None:
            self._alloc(batch, heads, rows_end, device)
            return
        have = self.sumsq.shape[-1]
        if rows_end > have:
            pad = max(rows_end, 2 * have) - have
            grow = lambda t: torch.cat([t, t.new_zeros((*t.shape[:-1], pad))], -1)  # noqa: E731
            self.sumsq, self.ctx_mass, self.diag = grow(self.sumsq), grow(self.ctx_mass), grow(self.diag)

    def record(self, layer: int, start: int, probs: Any, key_offset: int) -> None:
        """Add the statistics of attention probabilities ``probs`` ``(B, H, q, K)`` for query rows ``start..``.

        Slices rather than masks: a decoded row (q = 1) costs a handful of small ops per layer."""
        import torch

        _, _, q, k = probs.shape
        first = key_offset + start
        rows = slice(first, first + q)
        self.sumsq[layer, :, :, rows] = (probs * probs).sum(-1)
        if self.context_end is not None:
            for i, c in enumerate(self.context_end):
                c = min(max(int(c), 0), k)
                self.ctx_mass[layer, i, :, rows] = probs[i, :, :, :c].sum(-1) if c else 0.0
        if q == 1:
            self.diag[layer, :, :, first] = probs[:, :, 0, first]
        else:
            qi = torch.arange(first, first + q, device=probs.device)
            self.diag[layer, :, :, rows] = probs[:, :, torch.arange(q, device=probs.device), qi]


def rowstats_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Eager attention in blocks of query rows that records per-row statistics when a collector is active.

    Args:
        module: the attention module (``layer_idx`` and ``num_key_value_groups`` are read from it).
        query: ``(B, H, Tq, D)``. key, value: ``(B, H_kv, Tk, D)``.
        attention_mask: additive float mask ``(B, 1, Tq, Tk)`` (eager mask) or None.
        scaling: softmax temperature applied to ``q k^T``.

    Returns:
        ``(output (B, Tq, H, D), None)``: the same output as eager attention; no weights are returned.
    """
    import torch
    from torch import nn

    groups = getattr(module, "num_key_value_groups", 1)
    collector = _ACTIVE.get()
    bsz, heads, tq, dim = query.shape
    kv_heads, tk = key.shape[1], key.shape[2]
    offset = tk - tq  # > 0 when a KV cache holds earlier tokens
    layer = int(getattr(module, "layer_idx", 0))
    if collector is not None:
        collector.ensure(bsz, heads, tk, query.device)
        if collector.fused and attention_mask is None and tq == tk and tq > 1 and not module.training:
            if groups > 1:  # the CPU flash kernel wants as many K/V heads as query heads
                key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
            return _fused_with_stats(collector, layer, query, key, value, scaling)
    # grouped-query attention without copying the KV cache: the query heads h = kv * G + g of one KV head are
    # stacked as rows, (B, H_kv, G * rows, D) @ (B, H_kv, D, Tk), so K and V are never expanded or repeated
    g_per = heads // kv_heads
    qg = query.reshape(bsz, kv_heads, g_per, tq, dim)
    if attention_mask is not None and attention_mask.dtype == torch.bool:  # SDPA mask: True = attend
        attention_mask = torch.zeros_like(attention_mask, dtype=query.dtype).masked_fill(
            ~attention_mask, torch.finfo(query.dtype).min
        )
    block = collector.query_block if collector is not None else 256
    key_t = key.transpose(-1, -2)
    causal = attention_mask is None and tq > 1  # no mask given: the SDPA mask skipped a plain causal mask
    drop = dropout if module.training else 0.0
    outs = []
    for s in range(0, tq, block):
        e = min(tq, s + block)
        w = torch.matmul(qg[:, :, :, s:e].reshape(bsz, kv_heads, g_per * (e - s), dim), key_t)
        w = w.view(bsz, heads, e - s, tk) * scaling  # (B, H, e - s, Tk)
        if attention_mask is not None:
            w = w + attention_mask[:, :, s:e, :tk]
        elif causal:
            rows = torch.arange(s, e, device=w.device)[:, None] + offset
            w = w.masked_fill(torch.arange(tk, device=w.device)[None, :] > rows, float("-inf"))
        p = nn.functional.softmax(w, dim=-1, dtype=torch.float32)
        if collector is not None:
            collector.record(layer, s, p, offset)
        p = p.to(query.dtype)
        if drop:
            p = nn.functional.dropout(p, p=drop, training=True)
        pg = p.reshape(bsz, kv_heads, g_per * (e - s), tk)
        outs.append(torch.matmul(pg, value).view(bsz, heads, e - s, -1))  # (B, H, e - s, D)
    out = outs[0] if len(outs) == 1 else torch.cat(outs, 2)
    return out.transpose(1, 2).contiguous(), None


def _flash(query: Any, key: Any, value: Any, causal: bool, scale: float) -> tuple[Any, Any]:
    """``(output (B, H, Tq, D), log-sum-exp of the scaled logits (B, H, Tq))`` from the fused kernel."""
    import torch

    if query.device.type == "cuda":
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
            query, key, value, None, True, 0.0, causal, scale=scale
        )[:2]
        return out, lse[..., : query.shape[2]]
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, 0.0, causal, scale=scale)[:2]


def _fused_with_stats(collector: RowStatsCollector, layer: int, query: Any, key: Any, value: Any,
                      scaling: float) -> tuple[Any, None]:  # fmt: skip
    """Causal attention of a pass without cache or padding, recording the row statistics from log-sum-exps."""
    import torch

    t = query.shape[2]
    out, lse = _flash(query, key, value, True, scaling)
    lse = lse.float()
    _, lse2 = _flash(query, key, value, True, 2.0 * scaling)
    collector.sumsq[layer, :, :, :t] = torch.exp(lse2.float() - 2.0 * lse)
    s_ii = (query.float() * key.float()).sum(-1) * scaling  # (B, H, T): the diagonal logits
    collector.diag[layer, :, :, :t] = torch.exp(s_ii - lse)
    if collector.context_end is not None:
        for b, c in enumerate(collector.context_end):
            c = int(c)
            mass = torch.ones_like(lse[b])  # rows before c attend only to context keys
            if c <= 0:
                mass.zero_()
            elif c < t:
                _, lse_c = _flash(query[b : b + 1, :, c:], key[b : b + 1, :, :c], value[b : b + 1, :, :c], False,
                                  scaling)  # fmt: skip
                mass[:, c:] = torch.exp(lse_c[0].float() - lse[b, :, c:])
            collector.ctx_mass[layer, b, :, :t] = mass
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Register ``medfm_rowstats`` with transformers' attention and mask interfaces (idempotent)."""
    global _REGISTERED
    if not _REGISTERED:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

        AttentionInterface.register(IMPL_NAME, rowstats_attention)
        # the SDPA mask is None for an unpadded causal pass (-> the fused path), else boolean (True = attend)
        ALL_MASK_ATTENTION_FUNCTIONS.register(IMPL_NAME, sdpa_mask)
        _REGISTERED = True
    return IMPL_NAME


@contextlib.contextmanager
def use_rowstats(model: Any, collector: RowStatsCollector) -> Iterator[RowStatsCollector]:
    """Run ``model`` with the row-statistics attention and ``collector`` active; restores the previous attention.

    Raises:
        UsageError: the model's architecture does not route attention through ``AttentionInterface``.
    """
    from medfm.core.errors import UsageError

    register()
    previous = getattr(model.config, "_attn_implementation", None)
    if previous != IMPL_NAME:
        try:
            model.set_attn_implementation(IMPL_NAME)
        except (ValueError, AttributeError) as exc:
            raise UsageError(
                f"model {type(model).__name__} cannot use a custom attention function ({exc}); "
                "Head Entropy needs a transformers model built on AttentionInterface (Llama, Qwen, Gemma, ...)"
            ) from None
    token = _ACTIVE.set(collector)
    try:
        yield collector
    finally:
        _ACTIVE.reset(token)
        if previous != IMPL_NAME and previous is not None:
            model.set_attn_implementation(previous)


# ----------------------------------------------------------------------------------------------------------------------
# Span features (pure functions over the collected statistics)


def span_mean(rows: Any, start: int, end: int) -> Any:
    """Mean over query rows ``start..end-1`` of ``rows`` ``(L, H, T)``, flattened layer-major to ``(L*H,)``.

    Raises:
        ValueError: the span is empty.
    """
    if end <= start:
        raise ValueError(f"empty span [{start}, {end})")
    return rows[:, :, start:end].mean(-1).reshape(-1)


def renyi2_rows(sumsq: Any) -> Any:
    """2-Rényi entropy ``-log sum_j a_j^2`` (nats) of each row; input and output ``(L, H, T)``."""
    return -sumsq.clamp_min(1e-30).log()


def trace_jacobian_rows(sumsq: Any) -> Any:
    """Trace of the softmax Jacobian ``1 - sum_j a_j^2`` of each row; input and output ``(L, H, T)``."""
    return 1.0 - sumsq


def lookback_ratio(ctx_mass: Any, start: int, end: int, context_end: int, length: int) -> Any:
    """Lookback-Lens ratio per head as in the Head Entropy repo, averaged over query rows ``start..end-1``.

    ``ctx = mass_{j<c} / c`` and ``new = mass_{j>=c} / (T - c)`` with the *constant* divisor ``T - c`` (the repo
    averages over the full row slice including the masked future entries); ratio ``ctx / (ctx + new)``.

    Args:
        ctx_mass: ``(L, H, T)`` attention mass on the first ``context_end`` keys per row.
        start, end: query rows of the span. context_end: c. length: T.

    Returns:
        ``(L*H,)`` layer-major.
    """
    c = max(1, int(context_end))
    rest = max(1, int(length) - c)
    mass = ctx_mass[:, :, start:end]
    ctx = mass / c
    new = (1.0 - mass) / rest
    return (ctx / (ctx + new).clamp_min(1e-30)).mean(-1).reshape(-1)


def llm_check_attention_score(diag: Any, start: int, end: int, layer_fraction: float = 0.8) -> float:
    """LLM-Check attention score: per layer, sum over heads of ``mean_{i in span} log a_ii``, cumulated over
    layers; the value at layer index ``floor(layer_fraction * L)``.

    Args:
        diag: ``(L, H, T)`` attention diagonal.
    """
    per_layer = diag[:, :, start:end].clamp_min(1e-30).log().mean(-1).sum(-1)  # (L,)
    cum = per_layer.cumsum(0)
    idx = min(len(cum) - 1, int(layer_fraction * len(cum)))
    return float(cum[idx])


# -- references over full attention maps (tests) -----------------------------------------------------------------------


def row_sumsq_reference(attentions: Sequence[Any]) -> Any:
    """``sum_j a^2`` per row from full attention maps: a list over layers of ``(H, T, T)``; returns ``(L, H, T)``."""
    import torch

    return torch.stack([(a.float() ** 2).sum(-1) for a in attentions])
