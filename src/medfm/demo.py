"""``medfm demo``: run every available capability on embedded defaults and link their reports.

Each capability contributes one :class:`DemoStep` whose function ``run(out_dir, seed) -> StepOutcome``
does a small real run into ``out_dir`` (its own run directory with its own report.html). The demo
writes ``<output_dir>/report.html``: an overview table, then per step its key figure, its headline number
with CI, whether that number is a finding at this budget ("smoke scale" links the effect-scale benchmark
verdict instead), a summary and a link to the step's full report; ``demo.json`` holds the same data.
A failing step is reported and the demo goes on; the exit code is 1 if any step failed.
Budget: the whole demo under 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import html
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medfm.core.commands import Command, Group
from medfm.core.config import option

log = logging.getLogger(__name__)


@dataclass
class Headline:
    """The one number a step shows on the top page: ``label``, value with its CI and unit, and what it is to be
    compared with (``compare``: "bicubic 15.6 dB", "chance 0.07"), so a reader can tell an effect from noise."""

    label: str
    value: float | int | None
    ci: tuple[float, float] | None = None
    unit: str = ""
    compare: str = ""

    @classmethod
    def of(cls, label: str, metric: Any, unit: str = "", compare: str = "") -> Headline:
        """From a :class:`medfm.core.results.Metric` (value and CI)."""
        ci = tuple(metric.ci) if getattr(metric, "ci", None) else None
        return cls(label, None if metric is None else metric.value, ci, unit, compare)  # type: ignore[arg-type]

    def text(self) -> str:
        from medfm.core.report import fmt_ci

        tail = f" ({self.compare})" if self.compare else ""
        return f"{self.label}: {fmt_ci(self.value, self.ci, self.unit)}{tail}"


@dataclass
class StepOutcome:
    """What a demo step returns.

    report: its full report (inside its out_dir); summary: one line of what it showed; figure: its key figure, a
    PNG written with :func:`medfm.core.report.save_figure` (caption beside it); headline: its number; smoke: True
    when the number is not a finding at the demo's budget (the page then links ``benchmark``, the name of
    ``benchmarks/results/<benchmark>.json``, for the effect-scale verdict).
    """

    report: Path | None
    summary: str
    figure: Path | None = None
    headline: Headline | None = None
    smoke: bool = False
    benchmark: str | None = None


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


def benchmark_file(name: str) -> Path | None:
    """``benchmarks/results/<name>.json`` of the checkout medfm runs from (or of the working directory)."""
    import medfm

    for root in (Path.cwd(), Path(medfm.__file__).resolve().parents[2]):
        f = root / "benchmarks" / "results" / f"{name}.json"
        if f.is_file():
            return f
    return None


def benchmark_verdict(name: str) -> tuple[Path | None, str]:
    """(file, "effect scale: 3 hold, 1 fails, 2 inconclusive") of a benchmark's claims file."""
    f = benchmark_file(name)
    if f is None:
        return None, "no benchmark result in this installation"
    try:
        doc = json.loads(f.read_text())
    except (OSError, ValueError):
        return f, "unreadable"
    counts = {s: sum(c.get("status") == s for c in doc.get("claims", [])) for s in ("holds", "fails", "inconclusive")}
    parts = [f"{n} {'hold' if s == 'holds' and n != 1 else s}" for s, n in counts.items() if n]
    return f, f"{doc.get('scale', '?')} scale: {', '.join(parts) or 'no claims'}"


def _scale(o: StepOutcome) -> str:
    """'smoke', 'finding' (a headline whose CI clears its comparison), or '' for steps that measure no effect."""
    if o.smoke:
        return "smoke"
    return "finding" if o.headline is not None and o.headline.ci is not None else ""


def _section(out: Path, step: DemoStep, status: str, secs: float, o: StepOutcome) -> str:
    from medfm.core.report import figure_html

    body = []
    if o.figure is not None and Path(o.figure).is_file():
        body.append(figure_html(o.figure, alt=step.title))
    if o.headline is not None:
        badge = "<span class='muted'> &middot; smoke scale: not a finding</span>" if o.smoke else ""
        body.append(f"<p class='headline'><b>{html.escape(o.headline.text())}</b>{badge}</p>")
    if o.benchmark:
        f, verdict = benchmark_verdict(o.benchmark)
        link = (f"<a href='{html.escape(os.path.relpath(f, out))}'>{html.escape(f.name)}</a>" if f
                else html.escape(f"{o.benchmark}.json"))  # fmt: skip
        lead = "The effect is measured at scale in" if o.smoke else "Benchmark:"
        body.append(f"<p>{lead} {link} ({html.escape(verdict)}).</p>")
    cls = "ok" if status == "ok" else "bad"
    body.append(f"<p><span class='{cls}'>{status}</span> in {secs:.1f} s. {html.escape(o.summary)}</p>")
    if o.report:
        body.append(f"<p><a href='{html.escape(os.path.relpath(o.report, out))}'>Full report</a></p>")
    return "".join(body)


def run_demo(cfg: DemoConfig) -> int:
    from medfm import capabilities
    from medfm.core.commands import load_object
    from medfm.core.errors import UsageError
    from medfm.core.files import atomic_write_json
    from medfm.core.report import Report

    names = [s.name for s in STEPS]
    for n in [*cfg.only, *cfg.skip]:
        if n not in names:
            raise UsageError(f"unknown demo step {n!r}; steps: {', '.join(names)}")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    done: list[tuple[DemoStep, str, float, StepOutcome]] = []
    planned: list[DemoStep] = []
    failed = 0
    t_all = time.perf_counter()
    for step in STEPS:
        if (cfg.only and step.name not in cfg.only) or step.name in cfg.skip:
            continue
        cap = capabilities.get(step.capability)
        if cap is None or not cap.available:
            planned.append(step)
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
        done.append((step, status, secs, outcome))
        log.info("demo: %s %s in %.1f s: %s", step.name, status, secs, outcome.summary)
    total = time.perf_counter() - t_all
    rep = Report("medfm demo", subtitle=f"{len(done)} steps, {failed} failed, {total:.0f} s in total on "
                                        f"{os.cpu_count()} CPU cores. Research software: not for clinical use.")  # fmt: skip
    rep.add_text("What this page is", "Each section is one capability run for real on embedded data within the "
                 "demo's budget: its key figure, its headline number with a 95 % CI and what to compare it with. "
                 "Numbers marked 'smoke scale' come from runs too small to show the method's effect (the step decides "
                 "from its measured CI, not by assumption); their effect-scale verdicts are in the linked benchmark "
                 "results. 'finding' means the CI clears the comparison named beside the number.")  # fmt: skip
    overview = [{"step": s.title, "status": st, "headline": o.headline.text() if o.headline else o.summary,
                 "scale": _scale(o), "seconds": f"{secs:.1f}"}
                for s, st, secs, o in done]  # fmt: skip
    overview += [{"step": s.title, "status": "planned", "headline": "", "scale": "", "seconds": ""} for s in planned]
    rep.add_table("Overview", overview)
    for step, status, secs, o in done:
        rep.add_html(step.title, _section(out, step, status, secs, o))
    path = rep.save(out / "report.html")
    atomic_write_json(out / "demo.json", {"seconds": round(total, 1), "failed": failed, "steps": [
        {"name": s.name, "title": s.title, "status": st, "seconds": round(secs, 1), "summary": o.summary,
         "report": str(o.report) if o.report else None, "figure": str(o.figure) if o.figure else None,
         "headline": asdict(o.headline) if o.headline else None, "smoke": o.smoke, "benchmark": o.benchmark}
        for s, st, secs, o in done]})  # fmt: skip
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
