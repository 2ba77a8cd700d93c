"""Head Entropy (arXiv 2602.13699): per-head 2-Rényi attention entropy predicts LLM answer correctness.

Modules: ``attention`` (sum a^2 per row inside the forward pass), ``qa`` (datasets, prompts, labels),
``extract`` (generation + teacher-forced features), ``probe`` (L1 probe, scores, transfer), ``runner`` (verbs).
No heavy imports here.
"""
