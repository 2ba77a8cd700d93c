"""``medfm demo``: run every available capability on embedded defaults and link their reports.

Each capability contributes one :class:`DemoStep` whose function ``run(out_dir, seed) -> StepOutcome``
does a small real run into ``out_dir`` (its own run directory with its own report.html). The demo
writes ``<output_dir>/report.html`` with one row per step: linked report, status, summary and time.
A failing step is reported and the demo goes on; the exit code is 1 if any step failed.
Budget: the whole demo under 15 minutes on 2 CPU cores when every method exists.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from medfm.core.commands import Command, Group
from medfm.core.config import option

log = logging.getLogger(__name__)


@dataclass
class StepOutcome:
    """What a demo step returns: its report (inside its out_dir) and a one-line summary of what it showed."""

    report: Path | None
    summary: str


@dataclass(frozen=True)
class DemoStep:
    name: str  # folder under the demo output dir
    title: str
    capability: str  # capabilities.py name; the step is skipped ("planned") when that is unavailable
    run: str  # "module:function" with signature (out_dir: Path, seed: int) -> StepOutcome


# Order matters: later steps may reuse earlier steps' outputs (e.g. phantoms) through their own defaults.
STEPS: tuple[DemoStep, ...] = (
    DemoStep("environment", "Environment and capabilities", "env", "medfm.demo:environment_step"),
    DemoStep("phantoms", "Synthetic CT and chest X-ray phantoms", "phantom", "medfm.data.phantoms.demo:run_demo"),
    DemoStep(
        "backends",
        "Model backends: local model, OpenAI-compatible server, cache",
        "serve",
        "medfm.backends.demo:run_demo",
    ),
    DemoStep("medvae", "MedVAE", "medvae", "medfm.methods.medvae.demo:run_demo"),
    DemoStep("chexficient", "CheXficient", "chexficient", "medfm.methods.chexficient.demo:run_demo"),
    DemoStep("ravl", "RaVL", "ravl", "medfm.methods.ravl.demo:run_demo"),
    DemoStep("mass", "MASS", "mass", "medfm.methods.mass.demo:run_demo"),
    DemoStep("headentropy", "Head Entropy", "headentropy", "medfm.methods.headentropy.demo:run_demo"),
    DemoStep("srrg", "SRRG", "srrg", "medfm.methods.srrg.demo:run_demo"),
    DemoStep("vlm", "Radiology VLM", "vlm", "medfm.methods.vlm.demo:run_demo"),
    DemoStep("chexalign", "CheXalign", "chexalign", "medfm.methods.chexalign.demo:run_demo"),
    DemoStep("smmile", "SMMILE", "smmile", "medfm.methods.smmile.demo:run_demo"),
    DemoStep("raddiff", "RadDiff", "raddiff", "medfm.methods.raddiff.demo:run_demo"),
    DemoStep("cards", "Model cards", "card", "medfm.core.cards_cli:run_demo"),
)


@dataclass
class DemoConfig:
    output_dir: str = option("runs/demo", help="Where the demo writes its steps and report.html.")
    seed: int = option(0, help="Seed for every step.")
    only: list[str] = option(default_factory=list, help="Run only these steps (comma-separated names).")
    skip: list[str] = option(default_factory=list, help="Skip these steps (comma-separated names).")


def environment_step(out_dir: Path, seed: int) -> StepOutcome:
    """Capture the environment and the capability table (what this installation can run)."""
    from medfm import capabilities
    from medfm.core.report import Report
    from medfm.core.runs import capture_env
    from medfm.data.assets import ASSETS

    env = capture_env(with_device=True)
    rep = Report("medfm environment", subtitle=env["platform"])
    rep.add_table(
        "Capabilities",
        [
            {"command": f"medfm {c.name}", "capability": c.title, "available": "yes" if c.available else "planned"}
            for c in capabilities.all_capabilities()
        ],
    )
    rep.add_table("Packages", [{"package": k, "version": v or "not installed"} for k, v in env["packages"].items()])
    rep.add_table(
        "Offline assets",
        [
            {"asset": a.name, "description": a.description, "location": str(a.find()) if a.installed else a.install}
            for a in ASSETS
        ],
    )
    rep.add_table("Device", [{"key": k, "value": str(v)} for k, v in env["device"].items()])
    path = rep.save(out_dir / "report.html")
    available = sum(c.available for c in capabilities.all_capabilities())
    installed = sum(a.installed for a in ASSETS)
    return StepOutcome(
        path,
        f"{available}/{len(capabilities.all_capabilities())} capabilities available, "
        f"{installed}/{len(ASSETS)} offline assets installed, device "
        f"{env['device'].get('default_device')}",
    )


def run_demo(cfg: DemoConfig) -> int:
    import os

    from medfm import capabilities
    from medfm.core.commands import load_object
    from medfm.core.errors import UsageError
    from medfm.core.report import Report

    names = [s.name for s in STEPS]
    for n in [*cfg.only, *cfg.skip]:
        if n not in names:
            raise UsageError(f"unknown demo step {n!r}; steps: {', '.join(names)}")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str]] = []
    table: list[dict[str, object]] = []
    failed = 0
    t_all = time.perf_counter()
    for step in STEPS:
        if (cfg.only and step.name not in cfg.only) or step.name in cfg.skip:
            continue
        cap = capabilities.get(step.capability)
        if cap is None or not cap.available:
            rows.append((step.title, "", "planned: not implemented yet"))
            table.append({"step": step.name, "status": "planned", "seconds": "", "summary": ""})
            continue
        log.info("demo: %s ...", step.title)
        t0 = time.perf_counter()
        try:
            outcome: StepOutcome = load_object(step.run)(out / step.name, cfg.seed)
            status = "ok"
        except Exception as exc:  # a broken step must not hide the others
            log.exception("demo step %s failed", step.name)
            outcome = StepOutcome(None, f"{type(exc).__name__}: {exc}")
            status = "FAILED"
            failed += 1
        secs = time.perf_counter() - t0
        href = os.path.relpath(outcome.report, out) if outcome.report else ""
        rows.append((step.title, href, f"{status} ({secs:.1f} s): {outcome.summary}"))
        table.append({"step": step.name, "status": status, "seconds": round(secs, 1), "summary": outcome.summary})
        log.info("demo: %s %s in %.1f s: %s", step.name, status, secs, outcome.summary)
    total = time.perf_counter() - t_all
    rep = Report("medfm demo", subtitle=f"{len(table)} steps, {failed} failed, {total:.0f} s in total")
    rep.add_links("Parts", rows)
    rep.add_table("Steps", table)
    path = rep.save(out / "report.html")
    log.info("demo report: %s", path)
    print(path)
    return 1 if failed else 0


GROUP = Group(
    "demo",
    "Run every available capability on embedded defaults.",
    (
        Command(
            "demo",
            "Run every available capability on embedded defaults; writes <output_dir>/report.html.",
            "medfm.demo:DemoConfig",
            "medfm.demo:run_demo",
        ),
    ),
    single=True,
)
