"""Presets (``configs/*.yaml``) of the downstream verbs ``segment``, ``finetune`` and ``probe``."""
