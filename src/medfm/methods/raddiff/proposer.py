"""The proposer: rounds of sampled A/B images -> candidate differences ("hypotheses") from a chat model.

Variants (the paper's ablation axes; prompts are paraphrased, not copied):

- ``visdiff``: captions only, "Group A: ..." / "Group B: ..." lines (the VisDiff caption proposer).
- ``raddiff``: captions plus one image grid per group (A grid first) for backends that accept images.
- ``reports``: the sampled studies' reports instead of captions, plus the grids (the paper's upper bound).

Iteration 2 (refinement) feeds the previous top-k hypotheses with their AUROC back; with targeted visual
search the model first returns five boxes on the combined A-over-B grid, every sampled image is cropped per
box and re-tiled, and the crop grids are sent with the refinement prompt. Hypotheses of all rounds are
merged and de-duplicated by the model (with an exact-match fallback when its answer is unusable).
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from medfm.backends.base import JSON_FENCE, TRAILING_COMMA, Backend, ChatMessage, GenerationRequest, first_balanced
from medfm.methods.raddiff.grids import Box, GridSpec, boxes_json, crop_grids, make_grid, parse_boxes, stack_vertical
from medfm.methods.raddiff.vocab import normalise_phrase

log = logging.getLogger(__name__)

MODES = ("visdiff", "raddiff", "reports")

SYSTEM = "You are a careful assistant. Answer with JSON only."

PROPOSE_VISDIFF = """The following are the result of captioning two groups of images:

{texts}

I am a machine learning researcher trying to figure out the major differences between these two groups so I can \
better understand my data. Come up with 10 distinct concepts that are more likely to be true for Group A compared \
to Group B. Write each concept as a short caption-like phrase that could describe an image ("pleural effusion", \
"enlarged heart"), not a comparison ("more effusion") and not a list in parentheses.
Answer as JSON: {{"differences": ["...", "..."]}}"""

PROPOSE_RADDIFF = """You are an expert radiologist comparing two groups of chest radiographs.
Descriptions of the sampled studies:

{texts}

{images_note}List 5 to 10 salient findings that are more frequent in Group A than in Group B. Phrase each one as a \
bare radiological concept ("left pleural effusion"), never as a comparison and never mentioning Group B.
Answer as JSON: {{"differences": ["...", "..."]}}"""

LOCALIZE = """You are an expert radiologist comparing two groups of chest radiographs.
Descriptions of the sampled studies:

{texts}

The best differences found so far, with their AUROC (0.5 = no difference, 1 = perfect):
{feedback}

The attached image shows Group A's radiographs on top and Group B's below, as two grids. Return exactly five \
bounding boxes, in coordinates normalised to one radiograph (0 to 1, x to the right, y down), of the regions \
that would best confirm or sharpen these differences when zoomed in.
Answer as JSON: {{"boxes": [{{"x1": 0.0, "y1": 0.0, "x2": 0.5, "y2": 0.5}}, ...]}}"""

REFINE = """You are an expert radiologist comparing two groups of chest radiographs.
Descriptions of the sampled studies:

{texts}

The best differences found so far, with their AUROC (0.5 = no difference, 1 = perfect):
{feedback}

{images_note}Sharpen and verify these findings: keep what is well supported, make vague findings precise \
(laterality, size, location, device type), drop what is not supported, and add missed findings. List 5 to 10 \
single-phrase findings more frequent in Group A, never mentioning Group B.
Answer as JSON: {{"differences": ["...", "..."]}}"""

DEDUP = """Here is a numbered list of candidate differences between two groups of radiographs:

{items}

Deduplicate the list: merge items that mean the same thing, keep the most precise wording, keep the order of \
first appearance. Answer as JSON: {{"differences": ["...", "..."]}}"""

NOTE_GRIDS = "Attached are two image grids: the first shows Group A's radiographs, the second Group B's.\n"
NOTE_CROPS = ("Attached are zoomed crops of the same region of every sampled radiograph, one image per region: "
              "Group A's crops on top, Group B's below.\n")  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# Parsing (tolerant, like the originals)


def extract_json(text: str | None) -> Any:
    """The first JSON value (object or array) in a model answer, or None.

    Tolerates code fences, prose around the value, trailing commas, Python-style single quotes and a JSON
    document encoded as a JSON string (decoded once more).
    """
    if text is None:
        return None
    text = str(text).strip()
    fence = JSON_FENCE.search(text)
    body = fence.group(1).strip() if fence else text
    cands = [body]
    for o, c in (("{", "}"), ("[", "]")):
        b = first_balanced(body, o, c)
        if b is not None:
            cands.append(b)
    cands.sort(key=lambda s: body.find(s[:1]) if s[:1] in "{[" else -1)
    for cand in cands:
        for variant in (cand, TRAILING_COMMA.sub(r"\1", cand)):
            for v in (variant, variant.replace("'", '"')):
                try:
                    obj = json.loads(v)
                except (json.JSONDecodeError, ValueError):
                    continue
                if isinstance(obj, str):
                    try:
                        obj = json.loads(obj)
                    except (json.JSONDecodeError, ValueError):
                        continue
                if isinstance(obj, dict | list):
                    return obj
    return None


def _items(obj: Any) -> list[Any] | None:
    if isinstance(obj, list):
        return obj
    if isinstance(obj, dict):
        for v in obj.values():
            if isinstance(v, str):
                v = extract_json(v) if v.strip()[:1] in "[{" else v
            if isinstance(v, list):
                return v
    return None


def parse_hypotheses(text: str | None) -> list[str]:
    """Hypotheses from a proposer answer: JSON (first list value of an object, or a list) else bullet lines.

    Purely numeric entries and empty strings are dropped; ``* ``/``- ``/``1.`` prefixes are stripped.
    """
    items = _items(extract_json(text))
    if items is None:
        items = [ln for ln in str(text or "").splitlines() if re.match(r"^\s*(?:[-*•]|\d+[.)])\s+\S", ln)]
    out = []
    for it in items:
        if isinstance(it, dict):
            it = next((v for v in it.values() if isinstance(v, str)), "")
        s = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", str(it)).strip().strip("\"'")
        if not s or re.fullmatch(r"[\d.\s%-]+", s):
            continue
        out.append(re.sub(r"\s+", " ", s))
    return out


def exact_dedup(hypotheses: Sequence[str]) -> list[str]:
    """Drop repeats after normalisation (case, spacing, list markers, articles), keeping first occurrences."""
    seen, out = set(), []
    for h in hypotheses:
        key = re.sub(r"\b(a|an|the)\b", " ", normalise_phrase(h))
        key = re.sub(r"\s+", " ", key).strip()
        if key and key not in seen:
            seen.add(key)
            out.append(h.strip())
    return out


def sample_rounds(
    n_a: int, n_b: int, num_rounds: int, num_samples: int, seed: int
) -> list[tuple[list[int], list[int]]]:
    """Per round, ``min(num_samples, n)`` indices of A and of B without replacement.

    The generator is re-seeded on every call (like the originals' ``propose()``), so iteration 2 draws the
    same samples as iteration 1.
    """
    rng = random.Random(seed)
    return [
        (sorted(rng.sample(range(n_a), min(num_samples, n_a))), sorted(rng.sample(range(n_b), min(num_samples, n_b))))
        for _ in range(num_rounds)
    ]


def format_texts(texts_a: Sequence[str], texts_b: Sequence[str]) -> str:
    """ "Group A: ..." lines then "Group B: ..." lines, one per sampled image (newlines flattened)."""
    flat = lambda t: re.sub(r"\s+", " ", str(t)).strip()  # noqa: E731
    return "\n".join([f"Group A: {flat(t)}" for t in texts_a] + [f"Group B: {flat(t)}" for t in texts_b])


def format_feedback(ranked: Sequence[Any], topk: int = 5) -> str:
    """ "Top i Difference: ... / Top i Score: <AUROC>" for the first ``topk`` ranked hypotheses."""
    lines = []
    for i, r in enumerate(list(ranked)[:topk], 1):
        lines += [f"Top {i} Difference: {r.text}", f"Top {i} Score: {r.auroc:.3f}"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# The proposer


@dataclass
class Proposal:
    """What one proposer call produced.

    Attributes:
        hypotheses: de-duplicated hypotheses, in order of first appearance.
        raw: per round, the proposer's answer texts (localisation answers included in iteration 2).
        boxes: per round, the parsed boxes of the visual search (empty without it).
        images: (name, PIL image) grids and crop grids of the first round, for the report.
        calls: model calls made.
        errors: per-call error lines.
    """

    hypotheses: list[str]
    raw: list[dict[str, Any]] = field(default_factory=list)
    boxes: list[list[Box]] = field(default_factory=list)
    images: list[tuple[str, Any]] = field(default_factory=list)
    calls: int = 0
    errors: list[str] = field(default_factory=list)


class Proposer:
    """Propose differences through any chat backend.

    Args:
        backend: the chat model (images are attached only when it has the ``images`` capability).
        mode: ``visdiff``, ``raddiff`` or ``reports`` (see module docstring).
        num_rounds: rounds of sampling per iteration (3).
        num_samples: images sampled per group per round (20).
        grid: grid geometry.
        seed: sampling seed.
        max_tokens: answer budget per call.
        dedup: ask the model to de-duplicate the merged hypotheses.
        topk: hypotheses fed back in refinement (5).
    """

    def __init__(self, backend: Backend, mode: str = "raddiff", num_rounds: int = 3, num_samples: int = 20,
                 grid: GridSpec | None = None, seed: int = 0, max_tokens: int = 512, dedup: bool = True,
                 topk: int = 5):  # fmt: skip
        if mode not in MODES:
            from medfm.core.errors import UsageError

            raise UsageError(f"proposer mode {mode!r} is not one of {', '.join(MODES)}")
        self.backend = backend
        self.mode = mode
        self.num_rounds = num_rounds
        self.num_samples = num_samples
        self.grid = grid or GridSpec()
        self.seed = seed
        self.max_tokens = max_tokens
        self.dedup = dedup
        self.topk = topk

    @property
    def sends_images(self) -> bool:
        return self.mode != "visdiff" and self.backend.capabilities.images

    def _request(self, prompt: str, images: Sequence[Any] = ()) -> GenerationRequest:
        msgs = [ChatMessage("system", SYSTEM), ChatMessage("user", prompt, list(images))]
        return GenerationRequest(msgs, max_tokens=self.max_tokens, temperature=0.0, seed=self.seed, json_mode=True)

    def _generate(self, reqs: list[GenerationRequest], prop: Proposal) -> list[str]:
        if not reqs:
            return []
        out = self.backend.generate(reqs)
        prop.calls += len(reqs)
        texts = []
        for r in out:
            if not r.ok:
                prop.errors.append(str(r.error))
            texts.append(r.text if r.ok else "")
        return texts

    def propose(
        self,
        texts_a: Sequence[str],
        texts_b: Sequence[str],
        load_a: Callable[[int], Any],
        load_b: Callable[[int], Any],
        feedback: Sequence[Any] | None = None,
        visual_search: bool = False,
    ) -> Proposal:
        """Run the rounds of one iteration.

        Args:
            texts_a, texts_b: per image of each set, its caption (or report in ``reports`` mode).
            load_a, load_b: index -> PIL image, called only for sampled images when images are sent.
            feedback: ranked hypotheses of the previous iteration (refinement when given).
            visual_search: localise boxes and send crop grids (needs ``feedback`` and an image backend).
        """
        prop = Proposal([])
        rounds = sample_rounds(len(texts_a), len(texts_b), self.num_rounds, self.num_samples, self.seed)
        fb = format_feedback(feedback, self.topk) if feedback else ""
        blocks, grids = [], []
        for ia, ib in rounds:
            blocks.append(format_texts([texts_a[i] for i in ia], [texts_b[i] for i in ib]))
            if self.sends_images:
                ims_a, ims_b = [load_a(i) for i in ia], [load_b(i) for i in ib]
                grids.append((ims_a, ims_b, make_grid(ims_a, self.grid), make_grid(ims_b, self.grid)))
        if grids:
            prop.images += [("grid_A", grids[0][2]), ("grid_B", grids[0][3])]
        reqs: list[GenerationRequest] = []
        search = bool(visual_search and feedback and self.sends_images)
        if visual_search and not search:
            log.info("visual search skipped: it needs refinement feedback and a proposer backend that accepts images")
        if feedback and search:
            loc_reqs = [
                self._request(LOCALIZE.format(texts=blocks[k], feedback=fb),
                              [stack_vertical(g[2], g[3], self.grid.group_gap)])
                for k, g in enumerate(grids)
            ]  # fmt: skip
            loc_answers = self._generate(loc_reqs, prop)
            for k, (g, ans) in enumerate(zip(grids, loc_answers)):
                boxes = parse_boxes(ans)
                prop.boxes.append(boxes)
                crops = crop_grids(g[0], g[1], boxes, self.grid)
                if k == 0:
                    prop.images += [(f"crop_{j + 1}", im) for j, (_, im) in enumerate(crops)]
                prop.raw.append({"round": k, "kind": "localize", "answer": ans, "boxes": boxes_json(boxes)})
                reqs.append(self._request(REFINE.format(texts=blocks[k], feedback=fb, images_note=NOTE_CROPS if crops
                                                        else ""), [im for _, im in crops]))  # fmt: skip
        elif feedback:
            for k, block in enumerate(blocks):
                imgs = [grids[k][2], grids[k][3]] if grids else []
                note = NOTE_GRIDS if imgs else ""
                reqs.append(self._request(REFINE.format(texts=block, feedback=fb, images_note=note), imgs))
        else:
            for k, block in enumerate(blocks):
                if self.mode == "visdiff":
                    reqs.append(self._request(PROPOSE_VISDIFF.format(texts=block)))
                else:
                    imgs = [grids[k][2], grids[k][3]] if grids else []
                    note = NOTE_GRIDS if imgs else ""
                    reqs.append(self._request(PROPOSE_RADDIFF.format(texts=block, images_note=note), imgs))
        answers = self._generate(reqs, prop)
        merged: list[str] = []
        for k, ans in enumerate(answers):
            hyps = parse_hypotheses(ans)
            prop.raw.append({"round": k, "kind": "refine" if feedback else "propose", "answer": ans,
                             "hypotheses": hyps})  # fmt: skip
            merged += hyps
        merged = exact_dedup(merged)
        if self.dedup and len(merged) > 1:
            merged = self.deduplicate(merged, prop)
        prop.hypotheses = merged
        return prop

    def deduplicate(self, hypotheses: Sequence[str], prop: Proposal | None = None) -> list[str]:
        """LLM de-duplication; falls back to the exact-match list when the answer is empty or unusable."""
        prop = prop or Proposal([])
        items = "\n".join(f"{i}. {h}" for i, h in enumerate(hypotheses, 1))
        ans = self._generate([self._request(DEDUP.format(items=items))], prop)[0]
        out = exact_dedup(parse_hypotheses(ans))
        if not out:
            log.info("de-duplication answer unusable; keeping the exact-match de-duplicated list")
            return list(hypotheses)
        return out
