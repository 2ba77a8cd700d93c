"""A small LLaVA-style radiology vision–language model, built from stock transformers parts (issue 11).

Report generation and VQA for CheXalign (the policy to align), SMMILE (a multimodal model to benchmark) and
RadDiff (a captioner). This ``__init__`` imports nothing heavy; the modules below import torch/transformers.

Model (:mod:`.model`): ``LlavaForConditionalGeneration`` = image tower + 2-layer GELU projector + causal LM.

- ``build_vlm(spec: VLMSpec | None = None, dtype="float32", seed=None) -> (model, processor)``: a fresh model.
  ``VLMSpec`` (:mod:`.config`, torch-free) has ``vision`` (``VisionSpec``: ``kind="siglip"`` random-init ViT of
  ``image_size``/``patch_size``/width/depth, ``kind="hf"`` + ``path`` for any pretrained transformers
  CLIP/SigLIP vision model, or ``kind="chexficient"`` + ``path`` for a saved CheXficient ViT converted exactly
  to a ``CLIPVisionModel`` by :mod:`.towers`; ``feature_select``/``feature_layer`` pick the tokens the LM sees),
  ``lm`` (``LMSpec``: ``source="default"`` = SmolLM2-135M-Instruct dequantised from
  the offline GGUF via :mod:`medfm.backends.hf`; a folder, ``.gguf``, ``hf-hub:org/name``; or ``"tiny"`` =
  random 2-layer Llama with SmolLM2's tokenizer for tests), ``system_prompt``, ``max_length``, ``max_images``.
  The tokenizer gets an ``<image>`` special token and :data:`.model.CHAT_TEMPLATE` (ChatML that renders
  ``{"type": "image"}`` parts as ``<image>``); ``processor`` is a ``LlavaProcessor`` (``SiglipImageProcessor``).
- ``save_vlm(model, processor, directory, card=None) -> Path`` / ``load_vlm(source, device="cpu") -> (model,
  processor)``: a Hugging Face folder (atomic write; ``README.md`` + ``card.json`` when a card is given). The
  folder also loads with ``AutoModelForImageTextToText`` / ``AutoProcessor`` and ``medfm.backends.hf.HFBackend``
  (``make_backend("hf:/path/to/folder")``), so every method can reach it through the backend interface.
- ``spec_of(model) -> VLMSpec``, ``trainable_summary(model)``.

Data (:mod:`.data`): ``Example(id, images, prompt, answer, kind, labels, finding, split)``;
``load_report_examples(manifest, split, prompt, section)``, ``load_vqa_examples(manifest, split)``,
``vqa_from_labels(rows, findings, per_image, seed)`` (balanced yes/no questions from finding labels),
``messages_for(example, system_prompt, with_answer)`` (chat messages with image parts) and
``VLMCollator(processor, system_prompt, max_length, max_images, train, blind)`` (examples -> ``input_ids``,
``attention_mask``, ``pixel_values``, ``labels`` with -100 outside the answer). Missing images, too many images
and over-long prompts raise :class:`medfm.core.errors.DataError` with one actionable line.

Training (:mod:`.train`): ``make_model(spec, seed)``, ``set_trainable(model, TrainOptions)`` (LoRA via peft /
full / frozen LM; frozen or trainable tower), ``train_sft(model, processor, examples, opts, spec, run_dir, ...)``
(Accelerate, resumable from ``<run>/checkpoints/last``).

Inference and metrics (:mod:`.infer`, :mod:`.findings`): ``generate(model, processor, examples, spec, opts,
blind) -> Generations(texts, new_tokens, seconds, tokens_per_s)`` (KV cache on by default);
``score_reports(texts, examples)`` (finding-level micro F1 against labels, extracted with SRRG's lexicon labeller
mapped to CheXpert names), ``score_vqa(texts, examples)`` (exact match), ``srr_report_f1`` (F1-SRR-BERT).

Preference training with TRL works on the model and processor as they are: a dataset with ``images``, ``prompt``,
``chosen``, ``rejected`` in conversational form (content parts ``{"type": "image"}``/``{"type": "text"}``) and
``DPOTrainer(model=model, ref_model=ref_model, processing_class=processor, ...)``; pass ``ref_model`` explicitly
(e.g. a second ``load_vlm`` of the same folder). See tests/methods/vlm/test_vlm_trl.py.

CLI: ``medfm vlm prepare|train|generate|evaluate`` (:mod:`.cli`, :mod:`.verbs`); presets ``tiny``, ``small``,
``paper`` (for ``train``).
"""
