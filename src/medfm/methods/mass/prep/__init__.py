"""Presets (``configs/*.yaml``) of ``medfm mass prepare``."""
