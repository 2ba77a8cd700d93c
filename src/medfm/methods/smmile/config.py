"""Torch-free configuration of ``medfm smmile`` verbs (presets in ``configs/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass

from medfm.core.config import CommonOptions, option

CONDITION_NAMES = ("zero_shot", "icl", "permutations", "random_noise", "targeted_noise", "order_last",
                   "order_not_last", "order_first", "order_not_first")  # fmt: skip


@dataclass
class PrepareConfig(CommonOptions):
    """``medfm smmile prepare``: write the offline CXR-phantom problem set into the run directory."""

    n_problems: int = option(40, help="Number of problems.")
    size: int = option(128, help="Phantom image size in pixels (square).", ge=1)
    pool_size: int | None = option(None, help="Phantoms generated to draw images from (default max(400, 15 n)).")
    parquet: bool = option(True, help="Also write the Hugging Face parquet layout (data/train-*.parquet).")


@dataclass
class RunConfig(CommonOptions):
    """``medfm smmile run``: answer problems with a backend under conditions and tasks, score, report."""

    data: str | None = option(None, help="Problems: a .jsonl/.parquet file or a dataset folder (problems.jsonl or "
                              "the HF layout data/*.parquet). Default: generate the phantom set into <run>/data.")  # fmt: skip
    phantom_problems: int = option(40, help="Problems of the generated phantom set (when --data is not given).")
    phantom_size: int = option(64, help="Image size of the generated phantom set.", ge=1)
    image_dir: str | None = option(None, help="Folder with images for rows that have only an image_url "
                                   "(file named as the URL's basename or <sha256(url)[:16]><ext>).")  # fmt: skip
    fetch_urls: bool = option(False, help="Download uncached image URLs into <data>/image_cache (needs network).")
    backend: str = option("hf:default", help="Model backend spec: hf:default, hf:/path, openai:URL#model, "
                          "scripted:file.jsonl (see medfm.backends).")  # fmt: skip
    conditions: list[str] = option(default_factory=lambda: ["zero_shot", "icl"],
                                   help=f"Conditions (comma-separated): {', '.join(CONDITION_NAMES)}.")  # fmt: skip
    tasks: list[str] = option(default_factory=lambda: ["open"], help="Tasks: open (free answer), mcqa (letters).")
    judge: str | None = option(None, help="Judge for open answers: a backend spec (binary LLM judge), 'contains' "
                               "(rule stand-in), or none.")  # fmt: skip
    system_prompt: str = option("physician", help="System prompt: none, physician, expert, text_only or literal text.")
    answer_role: str = option("assistant", help="Role of in-context answers (system = the GPT-4o script's quirk).",
                              choices=("assistant", "system"))  # fmt: skip
    text_only: bool | None = option(None, help="Text-only baseline prompt without images (default: when the "
                                    "backend cannot take images).")  # fmt: skip
    max_tokens: int = option(512, help="Maximum generated tokens per answer (the original uses 512).", ge=1)
    temperature: float = option(0.0, help="Sampling temperature (0 = greedy, as the original).", ge=0)
    answer_extraction: str = option("full", help="Answer compared by EM: the full response (original) or its "
                                    "first line.", choices=("full", "first_line"))  # fmt: skip
    strict_match: bool = option(False, help="EM on raw strings instead of normalised ones.")
    perm_cap: int = option(24, help="Maximum permutations per problem (SMMILE++ uses 24).")
    relevance: str = option("answer", help="Relevance for ordering conditions: answer match or image similarity.",
                            choices=("answer", "image"))  # fmt: skip
    embedder: str = option("pixels", help="Image embedder for relevance=image and the nearest-image baseline: "
                           "pixels, or module:function mapping a list of images to an (N, D) array (e.g. CLIP).")  # fmt: skip
    exclude_reasoning: bool = option(True, help="Exclude reasoning problems from permutations (as SMMILE++).")
    batch_size: int = option(8, help="Instances per backend call (HTTP backends answer a call concurrently).", ge=1)
    max_concurrency: int = option(4, help="Concurrent HTTP requests (openai backends).")
    threads: int | None = option(None, help="CPU threads for local hf backends.", ge=1)
    cache: str | None = option("auto", help="sqlite response cache: auto (<run>/cache.sqlite), a path, or none.")
    cache_mode: str = option("readwrite", help="Cache mode.", choices=("readwrite", "record", "replay", "off"))
    bootstrap_resamples: int = option(1000, help="Bootstrap resamples (the paper: 1000).")
    bootstrap_seed: int = option(42, help="Bootstrap seed (the paper: 42).")


@dataclass
class ScoreConfig(CommonOptions):
    """``medfm smmile score``: re-score result CSVs in the original layout."""

    inputs: list[str] = option(help="Result CSVs or folders holding result_*.csv files.", positional=True)
    task: str | None = option(None, help="open or mcqa (default: from the file name or columns).",
                              choices=("open", "mcqa"))  # fmt: skip
    strict_match: bool = option(False, help="EM on raw strings instead of normalised ones.")
    errors: str = option("wrong", help="Rows whose answer is a failed API call ('ERROR' in it): counted in errors "
                         "either way; 'wrong' scores them as wrong answers (the original's accuracy), 'exclude' "
                         "drops them from the accuracy.", choices=("wrong", "exclude"))  # fmt: skip
    judge: str | None = option(None, help="Also judge open answers: a backend spec (the paper's strict 0/1 judge "
                               "prompt; hf:..., openai:http://host/v1#model, scripted:...) or 'contains'.")  # fmt: skip
    judge_cache: str | None = option(None, help="SQLite cache of judge answers (default: judge_cache.sqlite in "
                                     "the run folder; reuse one across runs to judge each answer once).")  # fmt: skip
    bootstrap_seed: int = option(42, help="Bootstrap seed.")


@dataclass
class ReportConfig(CommonOptions):
    """``medfm smmile report``: paper-style tables (ICL vs 0-shot per model, noise and order effects) and plots."""

    runs: list[str] = option(help="Run directories of 'medfm smmile run' (one per model).", positional=True)
    title: str = option("SMMILE benchmark", help="Report title.")
