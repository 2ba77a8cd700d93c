"""Torch-free configuration of ``medfm raddiff`` verbs (presets in ``configs/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass

from medfm.core.config import CommonOptions, option, section


@dataclass
class CaptionerOptions:
    """Where the per-image texts of the proposer come from."""

    source: str = option("reports", help="reports (the images' reports; the paper's upper bound) or a backend spec "
                         "that accepts images: hf:/path/to/vlm, openai:http://host/v1#model, scripted:file.jsonl.")  # fmt: skip
    dropout: float = option(0.0, help="With source=reports: drop each report sentence with this probability "
                            "(seeded per image) to mimic an imperfect captioner.")  # fmt: skip
    prompt: str = option("Describe this image in detail.", help="Captioning prompt (backend captioners).")
    max_tokens: int = option(128, help="Caption length budget in tokens (backend captioners).", ge=1)


@dataclass
class ProposerOptions:
    """The chat model that proposes differences, and the paper's proposer settings."""

    backend: str = option("offline:contrast", help="Chat backend spec (hf:default, openai:URL#model, scripted:FILE) "
                          "or offline:contrast (deterministic phrase-contrast stand-in, no images).")  # fmt: skip
    mode: str = option("raddiff", help="visdiff: captions only; raddiff: captions + image grids; reports: reports + "
                       "image grids.", choices=("visdiff", "raddiff", "reports"))  # fmt: skip
    num_rounds: int = option(3, help="Sampling rounds per iteration.", ge=1)
    num_samples: int = option(20, help="Images sampled per group per round.", ge=1)
    num_iterations: int = option(
        2, help="1 = no refinement; 2 = refine with the top-k hypotheses and their AUROC.", ge=1
    )
    topk: int = option(5, help="Hypotheses fed back in refinement.", ge=1)
    visual_search: bool = option(True, help="Targeted visual search in refinement (image-capable backends).")
    dedup: bool = option(True, help="Ask the model to de-duplicate the merged hypotheses.")
    merge: bool = option(False, help="Rank the union of all iterations' hypotheses instead of the last iteration's.")
    max_tokens: int = option(512, help="Answer budget per proposer call.", ge=1)
    grid_tile: int = option(256, help="Grid tile size in pixels (paper: 256).")
    grid_resize: int = option(1024, help="Images are resized to this square size before tiling/cropping (paper: 1024).")


@dataclass
class RankerOptions:
    """The CLIP ranker."""

    model: str | None = option(None, help="chexficient:DIR (a 'medfm chexficient train' model), open_clip:ARCH[@CKPT] "
                               "or concept:DIR (the offline concept ranker from 'medfm raddiff prepare').")  # fmt: skip
    alpha: float = option(0.05, help="Welch t-test significance level.")
    threshold: float = option(0.3, help="Similarity threshold of correct_delta.")
    filter_pvalue: bool = option(False, help="Drop hypotheses with p >= alpha (the paper) instead of only recording "
                                 "p (the released code).")  # fmt: skip
    max_num_samples: int = option(5000, help="Images ranked per set at most (random subsample above).")


@dataclass
class JudgeOptions:
    """The evaluator's 0/1/2 judge."""

    judge: str = option("offline", help="offline (SRRG lexicon + concept synonyms) or a chat backend spec.")
    ks: list[int] = option(default_factory=lambda: [1, 5], help="Acc@k values to report.")


@dataclass
class _Shared:
    captioner: CaptionerOptions = section(CaptionerOptions, help="Captioner.")
    proposer: ProposerOptions = section(ProposerOptions, help="Proposer.")
    ranker: RankerOptions = section(RankerOptions, help="Ranker.")
    cache_dir: str = option("runs/raddiff/cache", help="Embedding store and model-response cache shared by runs.")


@dataclass
class DescribeConfig(CommonOptions, _Shared):
    """``medfm raddiff describe``: two image sets in, ranked differences out."""

    input: str | None = option(None, help="CSV/JSONL with one row per image: image (or path), group (or "
                               "group_name), optional report and id.", positional=True, input="table:image|path,group|group_name")  # fmt: skip
    group_a: str | None = option(None, help="Group of set A (default: first group in the file).")
    group_b: str | None = option(None, help="Group of set B (default: second group in the file).")
    manifest_a: str | None = option(
        None, help="Instead of input: an image–report manifest for set A.", input="manifest"
    )
    manifest_b: str | None = option(
        None, help="Instead of input: an image–report manifest for set B.", input="manifest"
    )
    gt_a: str | None = option(None, help="Known description of A: scored by the ranker (ceiling) and the judge.")
    gt_b: str | None = option(None, help="Known description of B.")
    judge: JudgeOptions = section(JudgeOptions, help="Judge (used when gt_a is given).")
    examples: int = option(4, help="Example images per set shown for each top hypothesis in the report.")


@dataclass
class EvaluateConfig(CommonOptions, _Shared):
    """``medfm raddiff evaluate``: Acc@1/Acc@5 over a benchmark of set pairs with ground truth."""

    benchmark: str | None = option(None, help="RadDiffBench JSONL (set1, set2, set1_images, set2_images); default: "
                                   "<cache_dir>/../bench/raddiffbench.jsonl from 'medfm raddiff prepare'.",
                                   positional=True)  # fmt: skip
    image_root: str | None = option(None, help="Folder the image paths are relative to (default: the JSONL's).")
    difficulty_csv: str | None = option(None, help="Difficulty CSV (default: difficulty.csv beside the JSONL).")
    reports: str | None = option(None, help="CSV with path, report (default: reports.csv beside the JSONL).")
    judge: JudgeOptions = section(JudgeOptions, help="Judge.")
    bootstrap: int = option(1000, help="Bootstrap resamples of the Acc@k confidence intervals.", ge=0)


@dataclass
class PrepareConfig(CommonOptions):
    """``medfm raddiff prepare``: the offline phantom benchmark and the offline concept ranker."""

    n_pool: int = option(2400, help="Phantom radiographs in the pool the set pairs are drawn from.")
    size: int = option(64, help="Phantom image size in pixels.", ge=1)
    set_size: int = option(40, help="Images in set A (B has 1x, 1.5x or 2x as many, by turn).")
    pairs: list[str] = option(default_factory=list, help="Only these pair names (default: all 32).")
    ranker_n: int = option(1500, help="Phantoms (another seed) the concept ranker is trained on; 0 = skip.")
    feature_size: int = option(24, help="Concept ranker: images pooled to this many pixels per side.")
