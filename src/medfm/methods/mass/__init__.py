"""MASS: mask-guided self-supervised 3D pretraining with in-context segmentation (spec: specs/mass_medvae.md, A).

Public API (heavy modules import torch; this package's ``__init__`` and ``config``/``cli`` do not):

- :mod:`.proposals`: ``propose_masks``, ``proposal_quality``, ``register_generator``, ``MaskGenerator``
- :mod:`.model`: ``IrisNet`` (``encode_tasks``, ``segment``, ``forward``), ``build_model``
- :mod:`.losses`: ``adaptive_dice_loss``, ``mass_loss``, ``nt_xent``
- :mod:`.sampling`: ``TwoViewSampler``
- :mod:`.pretrain`: ``pretrain``
- :mod:`.incontext`: ``class_tokens``, ``predict_volume``, ``evaluate``, ``finetune``, ``PromptedIris``
- :mod:`.probe`: ``run_probe``, ``AttentionPoolHead``
"""
