"""Deterministic synthetic data with ground truth: 3D CT-like volumes (:mod:`.ct3d`) and chest X-rays (:mod:`.cxr`).

Configs live in :mod:`.config` (torch- and numpy-free, so ``medfm phantom --help`` stays fast).
"""
