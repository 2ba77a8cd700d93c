"""``medfm card show|validate|render <checkpoint>`` and ``medfm models [folder]`` (torch-free)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from medfm.core.commands import Command, Group
from medfm.core.config import option

log = logging.getLogger(__name__)


@dataclass
class CardConfig:
    checkpoint: str = option(
        help="Model directory holding card.json (written by every training verb).", positional=True
    )


@dataclass
class RenderConfig(CardConfig):
    format: Literal["md", "html"] = option("md", help="md: Hugging Face hub README; html: report fragment page.")
    output: str | None = option(None, help="Write here instead of stdout.")


@dataclass
class ModelsConfig:
    folder: str = option("runs", help="Folder searched recursively for model directories.", positional=True)
    json: bool = option(False, help="Print machine-readable JSON.")


def run_show(cfg: CardConfig) -> int:
    from medfm.core.cards import load_card

    print(load_card(cfg.checkpoint).to_markdown(), end="")
    return 0


def run_validate(cfg: CardConfig) -> int:
    from medfm.core.cards import load_card

    problems = load_card(cfg.checkpoint).validate()
    for p in problems:
        print(f"{cfg.checkpoint}: {p}")
    if problems:
        print(f"{len(problems)} problem(s) in the card of {cfg.checkpoint}")
        return 3
    print(f"{cfg.checkpoint}: card is complete")
    return 0


def render_html_page(card) -> str:
    from medfm.core.report import Report

    return Report(f"Model card: {card.name}", subtitle=f"medfm {card.method}").add_html("Card", card.to_html()).render()


def run_render(cfg: RenderConfig) -> int:
    from medfm.core.cards import load_card
    from medfm.core.files import atomic_write_text

    card = load_card(cfg.checkpoint)
    text = card.to_markdown() if cfg.format == "md" else render_html_page(card)
    if cfg.output:
        atomic_write_text(cfg.output, text)
        print(cfg.output)
    else:
        print(text, end="")
    return 0


def find_models(folder: str | Path) -> list[dict]:
    """Key facts of every model directory (one with card.json) under ``folder``."""
    from medfm.core.cards import load_card
    from medfm.core.errors import DataError

    rows = []
    for card_path in sorted(Path(folder).rglob("card.json")):
        if any(part.startswith(".") for part in card_path.parent.parts):  # temporaries of atomic writes
            continue
        try:
            card = load_card(card_path.parent)
        except DataError as exc:
            rows.append({"path": str(card_path.parent), "error": str(exc)})
            continue
        best = next((e for e in card.evaluation if e.setting == "in-distribution" and e.value is not None), None)
        rows.append(
            {
                "path": str(card_path.parent),
                "name": card.name,
                "method": card.method,
                "paradigm": ", ".join(card.training.paradigm),
                "parameters": card.training.parameters,
                "data": f"{card.data.size} {card.data.unit}".strip(),
                "steps": card.training.steps,
                "metric": f"{best.metric}={best.value:.4g}" if best else "",
                "valid": not card.validate(),
                "created_at": card.created_at,
            }
        )
    return rows


def run_models(cfg: ModelsConfig) -> int:
    import json

    from medfm.core.errors import DataError

    if not Path(cfg.folder).is_dir():
        raise DataError(f"{cfg.folder} is not a folder")
    rows = find_models(cfg.folder)
    if cfg.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no trained models under {cfg.folder}")
        return 0
    for r in rows:
        if "error" in r:
            print(f"{r['path']}: unreadable card: {r['error']}")
            continue
        params = f"{r['parameters']:,}" if r["parameters"] else "?"
        flag = "" if r["valid"] else "  [card incomplete]"
        print(
            f"{r['path']}\n  {r['method']} · {r['paradigm']} · {params} params · {r['data']} · "
            f"{r['steps']} steps{' · ' + r['metric'] if r['metric'] else ''}{flag}"
        )
    return 0


def run_demo(out_dir: Path, seed: int):
    """Demo step: validate and render the card of every model the earlier demo steps trained."""
    from medfm.core.cards import load_card
    from medfm.core.files import atomic_write_text
    from medfm.core.report import Report
    from medfm.demo import StepOutcome

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = find_models(out_dir.parent)
    rep = Report("Model cards of the demo's trained models")
    if not rows:
        rep.add_text("Models", "No demo step trained a model yet.")
        return StepOutcome(rep.save(out_dir / "report.html"), "no trained models in this demo yet")
    rep.add_table("Models", rows)
    for r in rows:
        if "error" in r:
            continue
        card = load_card(r["path"])
        name = Path(r["path"]).name
        page = out_dir / f"{r['method']}-{name}.html"
        atomic_write_text(page, render_html_page(card))
        rep.add_html(f"{card.name}", f"<p><a href='{page.name}'>full card</a></p>" + card.to_html())
    valid = sum(bool(r.get("valid")) for r in rows)
    return StepOutcome(rep.save(out_dir / "report.html"), f"{len(rows)} model cards, {valid} complete")


CARD = Group(
    "card",
    "Show, validate and render model cards.",
    (
        Command(
            "show",
            "Print a model's card as Markdown.",
            "medfm.core.cards_cli:CardConfig",
            "medfm.core.cards_cli:run_show",
        ),
        Command(
            "validate",
            "List missing or invalid card fields; exit 3 if any.",
            "medfm.core.cards_cli:CardConfig",
            "medfm.core.cards_cli:run_validate",
        ),
        Command(
            "render",
            "Render a card as hub README Markdown or an HTML page.",
            "medfm.core.cards_cli:RenderConfig",
            "medfm.core.cards_cli:run_render",
        ),
    ),
)

MODELS = Group(
    "models",
    "List trained models under a folder with their key facts.",
    (
        Command(
            "models",
            "List trained models under a folder with their key facts.",
            "medfm.core.cards_cli:ModelsConfig",
            "medfm.core.cards_cli:run_models",
        ),
    ),
    single=True,
)
