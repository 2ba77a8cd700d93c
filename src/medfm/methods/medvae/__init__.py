"""MedVAE: 2D and 3D medical autoencoders that downsize images into latents (Varma et al., MIDL 2025).

``medfm medvae train --stage 1|2``, ``encode``, ``decode``, ``evaluate``, ``classify``, ``export``, ``report``.
Import the model from :mod:`medfm.methods.medvae.model` (``MedVAE``, ``build_model``, ``PRESETS``); this package
itself imports nothing heavy.
"""

from __future__ import annotations
