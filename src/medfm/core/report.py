"""Self-contained ``report.html`` pages: metric tables with CIs, tables, embedded PNG figures, links.

Figures are embedded as base64 data URIs so a report can be mailed or archived as one file. Plots use
matplotlib's Agg backend (no display needed). Reports are rendered from results.json / metrics.jsonl,
never from in-memory state only, so ``medfm <method> report`` can re-render any finished run.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from medfm import __version__
from medfm.core.config import option
from medfm.core.files import atomic_write_text
from medfm.core.results import Metric, MetricsLog, Results

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1d2430;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #dde3ea}
.sub{color:#5b6675;margin-top:0}table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}
th,td{border:1px solid #dde3ea;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f3f6f9}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #eef1f4}figcaption{color:#5b6675;font-size:.9rem}
.ok{color:#137333}.bad{color:#b3261e}.muted{color:#8a94a3}pre{background:#f6f8fa;padding:.6rem;overflow:auto}
footer{margin-top:3rem;color:#8a94a3;font-size:.85rem}
</style></head><body>
<h1>{{ title }}</h1>{% if subtitle %}<p class="sub">{{ subtitle }}</p>{% endif %}
{% for s in sections %}<section><h2>{{ s.heading }}</h2>{{ s.body | safe }}</section>
{% endfor %}<footer>medfm {{ version }}. Research software: not for clinical use.</footer>
</body></html>
"""


@dataclass
class _Section:
    heading: str
    body: str


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """PNG bytes of a matplotlib figure (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def caption_path(png: str | Path) -> Path:
    """Where :func:`save_figure` keeps a PNG's caption: ``<name>.caption.txt`` beside it."""
    png = Path(png)
    return png.with_name(png.stem + ".caption.txt")


def save_figure(path: str | Path, fig: Any, caption: str, dpi: int = 110) -> Path:
    """Write a matplotlib figure (or PNG bytes) to ``path`` with its caption beside it (atomically, both);
    run reports and the demo page show the caption under the figure."""
    from medfm.core.files import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, fig if isinstance(fig, bytes) else figure_png(fig, dpi=dpi))
    atomic_write_text(caption_path(path), caption.strip() + "\n")
    return path


def figure_html(figure: Any, caption: str = "", alt: str = "figure") -> str:
    """``<figure>`` with an embedded PNG (a matplotlib figure, PNG bytes or a PNG path) and its caption."""
    if isinstance(figure, bytes):
        png = figure
    elif isinstance(figure, str | Path):
        png = Path(figure).read_bytes()
        cap_file = caption_path(figure)
        if not caption and cap_file.is_file():
            caption = cap_file.read_text().strip()
    else:
        png = figure_png(figure)
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f"<figure><img alt='{html.escape(alt)}' src='{png_data_uri(png)}'>{cap}</figure>"


def display_array(image: Any) -> Any:
    """A 2D float array to show of an image given as a path (any format :func:`medfm.data.io.load_image` reads),
    a PIL image, a Volume/Image2D or an array; volumes give their middle axial slice."""
    import numpy as np

    if isinstance(image, str | Path):
        from medfm.data.io import load_image

        image = load_image(image)
    if hasattr(image, "array"):
        image = image.array
    if not isinstance(image, np.ndarray) and hasattr(image, "convert"):  # PIL: greyscale for display
        image = image.convert("L")
    return mid_slice(np.asarray(image, dtype=np.float32))


def mid_slice(a: Any) -> Any:
    """A 2D view of an array for display: itself if 2D, the middle of the last axis (axial) if 3D."""
    import numpy as np

    a = np.asarray(a)
    while a.ndim > 2:
        a = a[..., a.shape[-1] // 2] if a.ndim == 3 else a[0]
    return a


def image_grid_figure(rows: list[list[tuple[Any, ...]]], cell: float = 2.0, suptitle: str = "") -> Any:
    """Matplotlib grid of images. ``rows``: one list per row of ``(title, array)`` or ``(title, array, kwargs)``
    (kwargs go to ``imshow``; grey by default; 3D arrays show their middle axial slice). Empty cells stay blank."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ncol = max((len(r) for r in rows), default=1)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(cell * ncol, cell * len(rows) + 0.3), squeeze=False)
    for ax_row, row in zip(axes, rows):
        for ax, cellv in zip(ax_row, [*row, *[None] * (ncol - len(row))]):
            ax.axis("off")
            if cellv is None:
                continue
            title, arr, *kw = cellv
            ax.imshow(mid_slice(arr), **{"cmap": "gray", **(kw[0] if kw else {})})
            ax.set_title(str(title), fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def _wrap(text: str, width_chars: int, max_lines: int) -> str:
    import textwrap

    lines = [w for para in str(text).splitlines() for w in (textwrap.wrap(para, width_chars) or [""])]
    return "\n".join(lines[:max_lines] + (["..."] if len(lines) > max_lines else []))


# a 7-pt monospace character is ~0.06 in wide and a line ~0.13 in high: figures are sized to their text
_CHAR_IN, _LINE_IN = 0.062, 0.135


def text_panels_figure(
    panels: list[tuple[str, str]], image: Any = None, image_title: str = "", width_chars: int = 46,
    title: str = "", max_lines: int = 16,
) -> Any:  # fmt: skip
    """Matplotlib figure: an optional image (2D array, grey) beside text panels (heading, text), e.g. an X-ray
    beside its reference and generated reports. Text is wrapped at ``width_chars`` and cut at ``max_lines``;
    the figure is sized to the text."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    texts = [_wrap(t, width_chars, max_lines) for _, t in panels]
    n_lines = max((t.count("\n") + 1 for t in texts), default=1)
    height = max(2.2 if image is not None else 0.0, n_lines * _LINE_IN + 0.5)
    col_w = width_chars * _CHAR_IN + 0.2
    widths = ([height - 0.3] if image is not None else []) + [col_w] * len(panels)
    fig, axes = plt.subplots(1, len(widths), figsize=(sum(widths), height), squeeze=False,
                             gridspec_kw={"width_ratios": widths})  # fmt: skip
    axes = list(axes[0])
    if image is not None:
        ax = axes.pop(0)
        ax.imshow(image, cmap="gray")
        ax.set_title(image_title, fontsize=8)
        ax.axis("off")
    for ax, (head, _), text in zip(axes, panels, texts):
        ax.axis("off")
        ax.set_title(head, fontsize=8, loc="left")
        ax.text(0, 1, text, va="top", ha="left", family="monospace", fontsize=7, transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.4)
    return fig


def text_panels_grid(cells: list[tuple[str, Any, str]], width_chars: int = 60, max_lines: int = 12) -> Any:
    """Matplotlib figure with one row per ``(title, image, text)``: the image (2D array, grey) on the left, its
    text (wrapped at ``width_chars``, cut at ``max_lines``) on the right; e.g. X-rays with generated reports."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    row_h = max(1.9, max_lines * _LINE_IN * 0.95 + 0.3)
    text_w = width_chars * _CHAR_IN * 0.95
    fig, axes = plt.subplots(len(cells), 2, figsize=(row_h + text_w, row_h * len(cells)), squeeze=False,
                             gridspec_kw={"width_ratios": [row_h, text_w]})  # fmt: skip
    for (ax_im, ax_tx), (title, image, text) in zip(axes, cells):
        ax_im.imshow(image, cmap="gray")
        ax_im.set_title(str(title), fontsize=7)
        ax_im.axis("off")
        ax_tx.axis("off")
        ax_tx.text(0, 1, _wrap(text, width_chars, max_lines), va="top", ha="left", family="monospace",
                   fontsize=6.5, transform=ax_tx.transAxes)  # fmt: skip
    fig.tight_layout()
    return fig


def fmt_num(v: Any, sig: int = 3) -> str:
    """A number for people: ``sig`` significant digits, no exponent between 1e-4 and 1e6, thousands grouped.

    >>> fmt_num(0.87654), fmt_num(1.0), fmt_num(465.7533), fmt_num(12345.6), fmt_num(7), fmt_num(None)
    ('0.877', '1.00', '466', '12,346', '7', 'n/a')
    """
    if v is None:
        return "n/a"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if v != v or v in (float("inf"), float("-inf")):
        return str(v)
    a = abs(v)
    if a >= 10 ** (sig - 1) and a < 1e6:  # the integer part already carries the significant digits
        return f"{v:,.0f}"
    if a == 0 or 1e-4 <= a < 10 ** (sig - 1):  # '#' keeps the significant zeros: 1.00, 0.500
        return f"{v:#.{sig}g}"
    return f"{v:.{sig - 1}e}"


def fmt_ci(value: Any, ci: Any = None, unit: str = "", sig: int = 3) -> str:
    """``0.877 [0.851, 0.902] dB``-style text of a value with its optional CI and unit."""
    text = fmt_num(value, sig)
    if ci is not None and value is not None:
        text += f" [{fmt_num(ci[0], sig)}, {fmt_num(ci[1], sig)}]"
    return f"{text} {unit}".rstrip() if value is not None else text


def _fmt(v: Any) -> str:
    if isinstance(v, float | int) and not isinstance(v, bool):
        return fmt_num(v)
    if isinstance(v, dict):  # never show a raw dict to a reader: key value pairs
        return html.escape("; ".join(f"{k} {fmt_num(x) if _is_num(x) else x}" for k, x in v.items()))
    return html.escape(str(v))


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


@dataclass
class Report:
    """Builder for one self-contained HTML page."""

    title: str
    subtitle: str = ""
    sections: list[_Section] = field(default_factory=list)

    def add_html(self, heading: str, body: str) -> Report:
        self.sections.append(_Section(heading, body))
        return self

    def add_text(self, heading: str, text: str) -> Report:
        paras = "".join(f"<p>{html.escape(p)}</p>" for p in text.split("\n\n") if p.strip())
        return self.add_html(heading, paras)

    def add_metrics(self, metrics: dict[str, Metric], heading: str = "Metrics") -> Report:
        rows = []
        for name, m in metrics.items():
            ci = f"[{fmt_num(m.ci[0])}, {fmt_num(m.ci[1])}]" if m.ci else ""
            arrow = "↑" if m.higher_is_better else "↓"
            value = fmt_num(m.value)
            rows.append(
                f"<tr><td>{html.escape(name)} {arrow}</td><td class='num'>{value}</td><td class='num'>{ci}</td>"
                f"<td class='num'>{'' if m.n is None else m.n}</td><td>{html.escape(m.note)}</td></tr>"
            )
        level = next((m.ci_level for m in metrics.values() if m.ci), 0.95)
        head = f"<tr><th>metric</th><th>value</th><th>{level:.0%} CI</th><th>n</th><th>note</th></tr>"
        return self.add_html(heading, f"<table>{head}{''.join(rows)}</table>")

    def add_table(self, heading: str, rows: list[dict[str, Any]], max_rows: int = 200) -> Report:
        if not rows:
            return self.add_html(heading, "<p class='muted'>(empty)</p>")
        cols: list[str] = []
        for r in rows:
            cols += [c for c in r if c not in cols]
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
        body = "".join(
            "<tr>"
            + "".join(f"<td class='{'num' if _is_num(r.get(c)) else ''}'>{_fmt(r.get(c, ''))}</td>" for c in cols)
            + "</tr>"
            for r in rows[:max_rows]
        )
        more = f"<p class='muted'>{len(rows) - max_rows} more rows not shown</p>" if len(rows) > max_rows else ""
        return self.add_html(heading, f"<table><tr>{head}</tr>{body}</table>{more}")

    def add_figure(self, heading: str, figure: Any, caption: str = "") -> Report:
        """``figure``: a matplotlib figure, PNG bytes, or a path to a PNG file (its saved caption, see
        :func:`save_figure`, is used when ``caption`` is empty)."""
        return self.add_html(heading, figure_html(figure, caption, alt=heading))

    def add_links(self, heading: str, links: list[tuple[str, str, str]]) -> Report:
        """``links``: (label, href relative to the report, status text)."""
        items = "".join(
            f"<tr><td><a href='{html.escape(href)}'>{html.escape(label)}</a></td><td>{html.escape(status)}</td></tr>"
            if href
            else f"<tr><td>{html.escape(label)}</td><td>{html.escape(status)}</td></tr>"
            for label, href, status in links
        )
        return self.add_html(heading, f"<table><tr><th>part</th><th>status</th></tr>{items}</table>")

    def render(self) -> str:
        env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
        return env.from_string(_TEMPLATE).render(
            title=self.title, subtitle=self.subtitle, sections=self.sections, version=__version__
        )

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, self.render())


def plot_metrics_log(rows: list[dict[str, Any]], keys: list[str] | None = None) -> Any | None:
    """Line plot of metrics.jsonl rows against ``step``; None when there is nothing numeric to plot."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not rows:
        return None
    keys = keys or sorted({k for r in rows for k, v in r.items() if k != "step" and _is_num(v)})
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r["step"], r[key]) for r in rows if _is_num(r.get(key))]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.4)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def render_run_report(run_dir: str | Path, title: str | None = None, extra: list[_Section] | None = None) -> Path:
    """Render ``report.html`` of a run directory from its results.json, metrics.jsonl and plots/*.png."""
    from medfm.core.distributed import is_main_process

    run_dir = Path(run_dir)
    if not is_main_process():  # one writer: rank 0 writes the report (and may not have written results yet)
        return run_dir / "report.html"
    results = Results.load(run_dir / "results.json")
    rep = Report(title or f"medfm {results.method} {results.verb}", subtitle=f"{run_dir} · {results.created_at}")
    if results.metrics:
        rep.add_metrics(results.metrics)
    for group, metrics in sorted(results.groups.items()):
        rep.add_metrics(metrics, heading=f"Metrics: {group}")
    for name, table in results.tables.items():
        rep.add_table(name.replace("_", " ").capitalize(), table)
    fig = plot_metrics_log(MetricsLog(run_dir / "metrics.jsonl").read())
    if fig is not None:
        rep.add_figure("Training curves", fig)
    for png in sorted((run_dir / "plots").glob("*.png")) if (run_dir / "plots").is_dir() else []:
        rep.add_figure(png.stem.replace("_", " ").capitalize(), png)  # caption from save_figure's sidecar
    for section in extra or []:
        rep.sections.append(section)
    env = run_dir / "env.json"
    dist = json.loads(env.read_text()).get("distributed") if env.is_file() else None
    if dist:
        rep.add_table("Processes", [{"setting": k, "value": v} for k, v in dist.items()])
    config = run_dir / "config.yaml"
    if config.is_file():
        rep.add_html("Configuration", f"<pre>{html.escape(config.read_text())}</pre>")
    return rep.save(run_dir / "report.html")


@dataclass
class ReportConfig:
    """``medfm report <run_dir>`` (and ``medfm <method> report``): re-render report.html of a finished run."""

    run_dir: str = option(help="Run directory holding results.json (any medfm method).", positional=True)
    dry_run: bool = option(False, help="Only check the run directory.")


def run_report(cfg: ReportConfig) -> int:
    """The one ``report`` verb: every method's run folder has the same layout, so one renderer serves all."""
    from medfm.core.errors import DataError, UsageError

    if not cfg.run_dir:
        raise UsageError("give the run directory to render: medfm report <run_dir>")
    run_dir = Path(cfg.run_dir)
    if not (run_dir / "results.json").is_file():
        raise DataError(f"{run_dir} has no results.json; pass the folder of a finished medfm run")
    if cfg.dry_run:
        print(f"dry run: would re-render {run_dir / 'report.html'}")
        return 0
    print(render_run_report(run_dir))
    return 0
