"""Method-agnostic building blocks: configs, runs, results, reports, metrics, checkpoints, cards.

Nothing in ``medfm.core`` imports a method, and no module here imports torch at import time.
"""
