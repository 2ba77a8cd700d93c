"""Model cards in the terminology of the radiology foundation-model review.

A card has the review's four parts — training **data** (size, modalities, body regions, annotation,
sources, sites, licences), training **paradigm**, **capabilities**, and **evaluation** (setting:
in-distribution, out-of-distribution, subgroups, robustness, clinical readers) — plus intended use,
limitations and the "not for clinical use" statement. Cards are written next to the weights
(``README.md`` for the Hugging Face hub, ``card.json`` for machines) by every training verb.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import html
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import yaml

from medfm import __version__
from medfm.core.errors import DataError
from medfm.core.results import Results

SCHEMA = "medfm.card/1"

Paradigm = Literal[
    "supervised",
    "weakly-supervised",
    "self-supervised-contrastive",
    "self-supervised-generative",
    "self-supervised-mask-guided",
    "vision-language-alignment",
    "preference-alignment",
]
CapabilityKind = Literal[
    "zero-shot",
    "few-shot",
    "in-context",
    "fine-tuning",
    "linear-probe",
    "generation",
    "segmentation",
    "classification",
    "retrieval",
    "reconstruction",
    "detection",
]
EvalSetting = Literal["in-distribution", "out-of-distribution", "subgroups", "robustness", "clinical-readers"]
Annotation = Literal["none", "automatic", "report-derived", "manual", "mixed"]
Modality = Literal["CT", "MR", "CXR", "X-ray", "US", "PET", "mammography", "pathology", "text", "other"]

NOT_FOR_CLINICAL_USE = (
    "Research use only. Not a medical device; not validated for diagnosis, treatment or any clinical decision."
)


@dataclass
class TrainingData:
    """What the model was trained on (the review's "data" axis)."""

    size: int | None = None  # number of units seen in the training set
    unit: str = ""  # volumes, images, image-report pairs, reports, questions
    modalities: list[str] = field(default_factory=list)
    body_regions: list[str] = field(default_factory=list)
    annotation: str = ""  # one of Annotation
    sources: list[str] = field(default_factory=list)  # dataset names or manifest paths
    sites: int | None = None  # number of institutions, when known
    licences: list[str] = field(default_factory=list)
    synthetic: bool = False
    statistics: dict[str, Any] = field(default_factory=dict)  # manifest statistics (splits, prevalence, ...)


@dataclass
class Training:
    """How it was trained (paradigm, objective, compute)."""

    paradigm: list[str] = field(default_factory=list)  # one or more of Paradigm
    objective: str = ""
    architecture: str = ""
    parameters: int | None = None
    base_model: str = ""  # what training started from ("scratch" or a checkpoint)
    steps: int | None = None
    samples_seen: int | None = None
    device: str = ""
    device_hours: float | None = None
    precision: str = ""
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class Capabilities:
    """What it can be used for, and with what inputs and outputs."""

    supported: list[str] = field(default_factory=list)  # of CapabilityKind
    inputs: str = ""
    outputs: str = ""


@dataclass
class EvaluationResult:
    """One reported number with its uncertainty and the review's evaluation setting."""

    metric: str
    value: float | None
    ci: list[float] | None = None
    n: int | None = None
    setting: str = "in-distribution"  # one of EvalSetting
    dataset: str = ""
    group: str = ""  # subgroup name for setting == subgroups


@dataclass
class ModelCard:
    name: str
    method: str
    data: TrainingData = field(default_factory=TrainingData)
    training: Training = field(default_factory=Training)
    capabilities: Capabilities = field(default_factory=Capabilities)
    evaluation: list[EvaluationResult] = field(default_factory=list)
    intended_use: str = ""
    limitations: list[str] = field(default_factory=list)
    not_for_clinical_use: str = NOT_FOR_CLINICAL_USE
    license: str = "apache-2.0"
    run_dir: str = ""
    created_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    medfm_version: str = __version__

    # -- validation ----------------------------------------------------------------------------------------------
    def validate(self) -> list[str]:
        """Every missing required field or out-of-vocabulary term (empty when the card is complete)."""
        problems: list[str] = []

        def need(cond: bool, what: str) -> None:
            if not cond:
                problems.append(what)

        need(bool(self.name), "name is empty")
        need(bool(self.method), "method is empty")
        need(self.data.size is not None and self.data.size > 0, "data.size is missing")
        need(bool(self.data.unit), "data.unit is missing (volumes, images, image-report pairs, ...)")
        need(bool(self.data.modalities), "data.modalities is empty")
        need(bool(self.data.sources), "data.sources is empty")
        need(self.data.annotation in get_args(Annotation), f"data.annotation must be one of {get_args(Annotation)}")
        for m in self.data.modalities:
            need(m in get_args(Modality), f"data.modalities: {m!r} is not one of {get_args(Modality)}")
        need(bool(self.training.paradigm), "training.paradigm is empty")
        for p in self.training.paradigm:
            need(p in get_args(Paradigm), f"training.paradigm: {p!r} is not one of {get_args(Paradigm)}")
        need(bool(self.training.objective), "training.objective is missing")
        need(bool(self.training.architecture), "training.architecture is missing")
        need(self.training.parameters is not None, "training.parameters is missing")
        need(self.training.steps is not None, "training.steps is missing")
        need(bool(self.capabilities.supported), "capabilities.supported is empty")
        for c in self.capabilities.supported:
            need(c in get_args(CapabilityKind), f"capabilities: {c!r} is not one of {get_args(CapabilityKind)}")
        for r in self.evaluation:
            need(
                r.setting in get_args(EvalSetting),
                f"evaluation {r.metric}: setting {r.setting!r} is not one of {get_args(EvalSetting)}",
            )
        need(bool(self.intended_use), "intended_use is missing")
        need(bool(self.limitations), "limitations is empty")
        need(bool(self.not_for_clinical_use), "not_for_clinical_use statement is missing")
        return problems

    # -- (de)serialisation ---------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelCard:
        if d.get("schema") != SCHEMA:
            raise DataError(f"not a {SCHEMA} card (schema={d.get('schema')!r})")
        d = {k: v for k, v in d.items() if k != "schema"}
        try:
            return cls(
                **{k: v for k, v in d.items() if k not in {"data", "training", "capabilities", "evaluation"}},
                data=TrainingData(**d.get("data", {})),
                training=Training(**d.get("training", {})),
                capabilities=Capabilities(**d.get("capabilities", {})),
                evaluation=[EvaluationResult(**r) for r in d.get("evaluation", [])],
            )
        except TypeError as exc:
            raise DataError(f"card has an unknown or missing field: {exc}") from None

    def add_results(self, results: Results, setting: str = "in-distribution", dataset: str = "") -> ModelCard:
        """Copy every metric (and per-group metric, as ``subgroups``) of a results.json into the card."""
        for name, m in results.metrics.items():
            self.evaluation.append(EvaluationResult(name, m.value, list(m.ci) if m.ci else None, m.n, setting, dataset))
        for group, metrics in results.groups.items():
            for name, m in metrics.items():
                self.evaluation.append(
                    EvaluationResult(name, m.value, list(m.ci) if m.ci else None, m.n, "subgroups", dataset, group)
                )
        return self

    # -- rendering -----------------------------------------------------------------------------------------------
    def _rows(self) -> list[tuple[str, list[tuple[str, str]]]]:
        d, t, c = self.data, self.training, self.capabilities

        def j(xs: list[str]) -> str:
            return ", ".join(xs) if xs else "—"

        def v(x: Any) -> str:
            return "—" if x in (None, "", []) else (f"{x:,}" if isinstance(x, int) else str(x))

        return [
            (
                "Training data",
                [
                    ("Size", f"{v(d.size)} {d.unit}".strip()),
                    ("Modalities", j(d.modalities)),
                    ("Body regions", j(d.body_regions)),
                    ("Annotation", v(d.annotation)),
                    ("Sources", j(d.sources)),
                    ("Sites", v(d.sites)),
                    ("Licences", j(d.licences)),
                    ("Synthetic", "yes" if d.synthetic else "no"),
                ],
            ),
            (
                "Training paradigm",
                [
                    ("Paradigm", j(t.paradigm)),
                    ("Objective", v(t.objective)),
                    ("Architecture", v(t.architecture)),
                    ("Parameters", v(t.parameters)),
                    ("Initialised from", v(t.base_model)),
                    ("Steps", v(t.steps)),
                    ("Samples seen", v(t.samples_seen)),
                    ("Device", v(t.device)),
                    ("Device hours", "—" if t.device_hours is None else f"{t.device_hours:.4f}"),
                    ("Precision", v(t.precision)),
                ],
            ),
            ("Capabilities", [("Supported", j(c.supported)), ("Inputs", v(c.inputs)), ("Outputs", v(c.outputs))]),
        ]

    def _eval_rows(self) -> list[list[str]]:
        rows = []
        for r in self.evaluation:
            val = "n/a" if r.value is None else f"{r.value:.4g}"
            ci = f"[{r.ci[0]:.4g}, {r.ci[1]:.4g}]" if r.ci else ""
            rows.append([r.metric, val, ci, "" if r.n is None else str(r.n), r.setting, r.dataset, r.group])
        return rows

    def to_markdown(self) -> str:
        """Markdown with Hugging Face hub front matter (usable as the repo README.md)."""
        front = {
            "library_name": "medfm",
            "license": self.license,
            "tags": ["medical-imaging", "radiology", self.method, *self.training.paradigm],
        }
        out = [
            "---",
            yaml.safe_dump(front, sort_keys=False).strip(),
            "---",
            "",
            f"# {self.name}",
            "",
            f"> **Not for clinical use.** {self.not_for_clinical_use}",
            "",
            f"Trained with medfm {self.medfm_version} (`medfm {self.method}`) on {self.created_at}.",
            "",
        ]
        for title, rows in self._rows():
            out += [f"## {title}", "", "| | |", "|---|---|"]
            out += [f"| {k} | {v} |" for k, v in rows]
            out.append("")
        out += ["## Evaluation", ""]
        if self.evaluation:
            out += ["| metric | value | 95% CI | n | setting | dataset | group |", "|---|---|---|---|---|---|---|"]
            out += ["| " + " | ".join(r) + " |" for r in self._eval_rows()]
        else:
            out.append("Not evaluated yet.")
        out += ["", "## Intended use", "", self.intended_use or "—", "", "## Limitations", ""]
        out += [f"- {x}" for x in self.limitations] or ["—"]
        return "\n".join(out) + "\n"

    def to_html(self) -> str:
        """HTML fragment (tables) for embedding in report.html."""
        e = html.escape
        parts = [f"<p><strong>Not for clinical use.</strong> {e(self.not_for_clinical_use)}</p>"]
        for title, rows in self._rows():
            parts.append(
                f"<h3>{e(title)}</h3><table>"
                + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
                + "</table>"
            )
        parts.append("<h3>Evaluation</h3>")
        if self.evaluation:
            head = "".join(f"<th>{h}</th>" for h in ("metric", "value", "95% CI", "n", "setting", "dataset", "group"))
            body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in self._eval_rows())
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        else:
            parts.append("<p>Not evaluated yet.</p>")
        parts.append(
            f"<h3>Intended use</h3><p>{e(self.intended_use or '—')}</p><h3>Limitations</h3><ul>"
            + "".join(f"<li>{e(x)}</li>" for x in self.limitations)
            + "</ul>"
        )
        return "".join(parts)


def load_card(directory: Any) -> ModelCard:
    """Read ``card.json`` from a model directory."""
    import json
    from pathlib import Path

    path = Path(directory) / "card.json"
    if not path.is_file():
        raise DataError(f"{directory} has no card.json; was it written by a medfm training verb?")
    try:
        return ModelCard.from_json(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg})") from None


def count_parameters(model: Any) -> int:
    """Number of parameters of an ``nn.Module``."""
    return int(sum(p.numel() for p in model.parameters()))


def card_from_run(
    run_dir: Any,
    *,
    name: str,
    method: str,
    data: TrainingData,
    training: Training,
    capabilities: Capabilities,
    intended_use: str,
    limitations: list[str],
    model: Any = None,
    seconds: float | None = None,
    n_devices: int = 1,
    setting: str = "in-distribution",
) -> ModelCard:
    """A card filled from what the run knows: config.yaml, env.json's device, results.json, the model.

    Args:
        run_dir: the run directory (``Run.dir``).
        model: the trained ``nn.Module``; its parameter count fills ``training.parameters``.
        seconds: wall-clock training time; with ``n_devices`` it fills ``training.device_hours``.
        setting: evaluation setting of the run's results.json metrics.
    """
    import json
    from pathlib import Path

    run_dir = Path(run_dir)
    if model is not None and training.parameters is None:
        training.parameters = count_parameters(model)
    if seconds is not None and training.device_hours is None:
        training.device_hours = seconds * n_devices / 3600.0
    env_path = run_dir / "env.json"
    if env_path.is_file() and not training.device:
        training.device = json.loads(env_path.read_text()).get("device", {}).get("default_device", "")
    cfg_path = run_dir / "config.yaml"
    if cfg_path.is_file() and not training.config:
        training.config = yaml.safe_load(cfg_path.read_text()) or {}
    card = ModelCard(
        name=name,
        method=method,
        data=data,
        training=training,
        capabilities=capabilities,
        intended_use=intended_use,
        limitations=limitations,
        run_dir=str(run_dir),
    )
    results_path = run_dir / "results.json"
    if results_path.is_file():
        card.add_results(Results.load(results_path), setting=setting)
    return card


def method_facts(package: str, kind: str, **fill: Any) -> dict[str, Any]:
    """The fixed facts of a method's model card, ``intended_use`` and ``limitations``, as data.

    They live in ``<package>/card.yaml`` under ``kind`` (one method can write several kinds of card); a fact may hold
    ``{placeholders}`` that ``fill`` supplies from the run (data source, steps, image size). Returns keyword
    arguments for :func:`card_from_run`."""
    from importlib.resources import files

    path = files(package).joinpath("card.yaml")
    facts = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get(kind)
    if not isinstance(facts, dict):
        raise KeyError(f"{package}/card.yaml has no card kind {kind!r}")

    def fmt(text: str) -> str:
        try:
            return str(text).format_map(fill)
        except KeyError as err:
            raise KeyError(f"{package}/card.yaml [{kind}] needs the run fact {err.args[0]!r}") from None

    return {"intended_use": fmt(facts["intended_use"]), "limitations": [fmt(x) for x in facts.get("limitations", [])]}
