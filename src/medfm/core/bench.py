"""The benchmark harness every ``benchmarks/<method>.py`` script uses (in the spirit of timm's runner).

A script declares its claims as data in ``benchmarks/claims/<method>.yaml`` (paper statement, metric,
``min_effect``, ``falsifiable_by``, threshold, direction, what the CI resamples, whether trained arms are
compared), measures, and reports numbers; the harness fills in the declarations, computes every status
(:mod:`medfm.core.claims`), writes the whole schema, and records the real command line, commit, device,
seeds and wall time. Declared claims that a run did not measure are written as ``inconclusive / not_run``.

Common flags on every script: ``--quick`` (a CI-size run: scale ``smoke``, written under
``runs/bench-quick/`` and never into ``benchmarks/results/``), ``--seeds``, ``--device``, ``--out``,
``--keep_tmp``. Arms run through the method's verbs with :meth:`Benchmark.run_verb` (the path users
run); base models that several benchmarks share are built once with :meth:`Benchmark.cached` under a
key made of their config and the hash of the code that builds them.

Typical script::

    bench = Benchmark("srrg", __doc__)
    bench.parser.add_argument("--epochs", type=int, default=10)
    args = bench.parse()
    ...
    bench.claim("leaf_micro_f1_radlabels", m.value, ci=m.ci, n=m.n, seeds=3)
    bench.write(metrics)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import logging
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from medfm.core.claims import Claim, Control, claim, write_benchmark
from medfm.core.files import atomic_write_json, match_umask

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[3]
BENCH_DIR = ROOT / "benchmarks"
#: Keys of a claim declaration (benchmarks/claims/<method>.yaml) that :func:`claim` accepts.
DECLARED = ("paper", "metric", "min_effect", "falsifiable_by", "threshold", "expect", "resample", "trained",
            "primary", "min_n", "min_positives", "bounds")  # fmt: skip
#: Declaration keys only the re-emission of a legacy file reads.
LEGACY = ("legacy",)


def load_declarations(method: str, bench_dir: str | Path = BENCH_DIR) -> dict[str, Any]:
    """``benchmarks/claims/<method>.yaml``: ``{"scale": ..., "claims": {id: declaration}}``."""
    path = Path(bench_dir) / "claims" / f"{method}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no claim declarations for {method!r}; declare each claim there first")
    doc = yaml.safe_load(path.read_text()) or {}
    claims = doc.get("claims") or {}
    for cid, d in claims.items():
        unknown = set(d) - set(DECLARED) - set(LEGACY)
        if unknown:
            raise ValueError(f"{path}: claim {cid}: unknown key(s) {sorted(unknown)}; allowed {DECLARED}")
        for key in ("paper", "metric", "min_effect", "falsifiable_by"):
            if key not in d:
                raise ValueError(f"{path}: claim {cid} must declare {key!r}")
    return doc


def declared_claim(decl: Mapping[str, Any], cid: str, ours: float | None, **measured: Any) -> Claim:
    """A :class:`Claim` from its declaration plus measured values (``measured`` wins over the declaration)."""
    kw = {k: v for k, v in decl.items() if k in DECLARED}
    if kw.get("threshold") == "baseline":  # compared with the baseline measured in the same run
        kw.pop("threshold")
    kw.update(measured)
    if ours is None and kw.get("threshold") is None and kw.get("baseline") is None:
        kw["threshold"] = 0.0  # not run: nothing to compare, the verdict is not_run whatever the threshold
    kw["controls"] = [c if isinstance(c, Control) else Control(**c) for c in kw.get("controls", [])]
    paper, metric = kw.pop("paper"), kw.pop("metric")
    return claim(cid, paper, metric, ours, **kw)


def code_hash(paths: Sequence[str | Path]) -> str:
    """SHA-256 over the bytes of source files or folders (``*.py`` inside folders), in a fixed order."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f.name).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def module_path(module: str) -> Path:
    """Source file (or package folder) of an importable module, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(module)
    origin = Path(spec.origin)
    return origin.parent if origin.name == "__init__.py" else origin


class Benchmark:
    """One benchmark run: flags, declarations, arms through verbs, cached base models, the results file.

    Args:
        method: the results file's name (``benchmarks/results/<method>.json``) and declarations file.
        description: the script's docstring (shown by ``--help``).
        scale: the scale of a full run (default: the declarations' ``scale``); ``--quick`` runs are always ``smoke``.
        default_seeds: seeds of a full run (trained arms need >= 3).
    """

    def __init__(self, method: str, description: str | None = None, *, scale: str | None = None,
                 default_seeds: int = 3, bench_dir: str | Path = BENCH_DIR) -> None:  # fmt: skip
        self.method = method
        self.bench_dir = Path(bench_dir)
        self.decl = load_declarations(method, self.bench_dir)
        # The scale of a full run is declared with the claims: "smoke" until the script's default sizes
        # reach the effect (its method issue), so a full run of a smoke-sized script never becomes a verdict.
        self.full_scale = scale or self.decl.get("scale", "effect")
        self.parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawTextHelpFormatter)
        g = self.parser.add_argument_group("benchmark harness")
        g.add_argument("--quick", action="store_true", help="CI-size run: scale smoke, nothing written to results/")
        g.add_argument("--seeds", type=int, default=default_seeds, help="seeds of trained arms (>= 3 for a verdict)")
        g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps, auto")
        g.add_argument("--out", default=None, help="results file (default benchmarks/results/<method>.json)")
        g.add_argument("--keep_tmp", action="store_true", help="keep the temporary run folders")
        self.args: argparse.Namespace | None = None
        self.claims: list[Claim] = []
        self._argv: list[str] = []
        self._t0 = time.perf_counter()
        self._tmp_roots: list[Path] = []

    # -- flags -------------------------------------------------------------------------------------------------------

    def parse(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        self._argv = list(sys.argv[1:] if argv is None else argv)
        self.args = self.parser.parse_args(self._argv)
        if self.args.seeds < 1:
            self.parser.error("--seeds must be >= 1")
        self._t0 = time.perf_counter()
        return self.args

    @property
    def quick(self) -> bool:
        return bool(self.args and self.args.quick)

    @property
    def scale(self) -> str:
        return "smoke" if self.quick else self.full_scale

    @property
    def seeds(self) -> list[int]:
        """Seeds of the trained arms: ``0 .. --seeds - 1`` (one with ``--quick``)."""
        n = 1 if self.quick else self.args.seeds
        return list(range(n))

    def size(self, full: Any, quick: Any) -> Any:
        """``quick`` under ``--quick``, else ``full``: one place per script where CI-size settings live."""
        return quick if self.quick else full

    @property
    def command(self) -> str:
        script = Path(sys.argv[0]).resolve()
        shown = str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else script.name
        return shlex.join(["python", shown, *self._argv])

    @property
    def out_path(self) -> Path:
        if self.args and self.args.out:
            return Path(self.args.out)
        if self.quick:
            return ROOT / "runs" / "bench-quick" / f"{self.method}.json"
        return self.bench_dir / "results" / f"{self.method}.json"

    # -- running arms ----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def tmpdir(self, name: str = "run") -> Iterator[Path]:
        """A temporary folder removed afterwards (kept with ``--keep_tmp``)."""
        path = Path(tempfile.mkdtemp(prefix=f"medfm-bench-{self.method}-{name}-"))
        try:
            yield path
        finally:
            if self.args is not None and self.args.keep_tmp:
                log.info("kept %s", path)
            else:
                shutil.rmtree(path, ignore_errors=True)

    def run_verb(self, method: str, verb: str, *options: str, output_dir: str | Path) -> dict[str, Any]:
        """Run ``medfm <method> <verb> ... --output_dir D`` in-process, as a user would; returns results.json.

        ``--device`` is passed on unless ``options`` set it. Raises RuntimeError on a non-zero exit."""
        from medfm.cli import main

        argv = [method, verb, *options, "--output_dir", str(output_dir)]
        if "--device" not in options and self.args is not None:
            argv += ["--device", self.args.device]
        rc = main(argv)
        if rc != 0:
            raise RuntimeError(f"medfm {shlex.join(argv)} exited {rc}")
        res = Path(output_dir) / "results.json"
        return json.loads(res.read_text()) if res.is_file() else {}

    def cached(self, name: str, config: Mapping[str, Any], code: Sequence[str], build: Callable[[Path], None],
               cache_dir: str | Path | None = None) -> Path:  # fmt: skip
        """A base model (or any artefact) built once per (config, code) and reused by later runs.

        Args:
            name: artefact name, e.g. ``cxr-clip``.
            config: everything that determines the artefact (JSON-serialisable).
            code: importable module names whose source determines it (``medfm.methods.chexficient``).
            build: writes the artefact into the folder it is given. The folder survives an interruption
                (``.<name>-<key>.partial``) and is handed to the next attempt, so a build that trains through a
                medfm verb with ``--output_dir`` inside it resumes from its checkpoints instead of restarting.
            cache_dir: default ``benchmarks/cache`` (git-ignored).

        Returns:
            The folder holding the artefact and a ``cache.json`` with its key, config and code hash.
        """
        digest = code_hash([module_path(m) for m in code])
        key = hashlib.sha256(json.dumps({"config": config, "code": digest}, sort_keys=True).encode()).hexdigest()[:12]
        root = Path(cache_dir) if cache_dir is not None else self.bench_dir / "cache"
        final = root / f"{name}-{key}"
        if (final / "cache.json").is_file():
            log.info("reusing %s", final)
            return final
        partial = root / f".{name}-{key}.partial"
        if partial.is_dir():
            log.info("continuing the interrupted build in %s", partial)
        partial.mkdir(parents=True, exist_ok=True)
        match_umask(partial, 0o777)
        t0 = time.perf_counter()
        build(partial)
        meta = {"name": name, "key": key, "config": config, "code": list(code), "code_hash": digest,
                "build_s": round(time.perf_counter() - t0, 1), "command": self.command}  # fmt: skip
        atomic_write_json(partial / "cache.json", meta)
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        return final

    # -- claims and the results file -------------------------------------------------------------------------------

    def claim(self, cid: str, ours: float | None, **measured: Any) -> Claim:
        """Record a declared claim with its measured numbers (``ci``, ``n``, ``seeds``, ``controls``, ...)."""
        decls = self.decl.get("claims", {})
        if cid not in decls:
            raise KeyError(f"claim {cid!r} is not declared in benchmarks/claims/{self.method}.yaml")
        if any(c.id == cid for c in self.claims):
            raise ValueError(f"claim {cid!r} recorded twice")
        c = declared_claim(decls[cid], cid, ours, **measured)
        self.claims.append(c)
        log.info("%s: ours %s -> %s%s", cid, c.ours, c.status, f" ({c.reason})" if c.reason else "")
        return c

    def write(self, metrics: Mapping[str, Any], *, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the results file: every declared claim (unmeasured ones as not_run), run facts, metrics."""
        measured = {c.id for c in self.claims}
        for cid, d in self.decl.get("claims", {}).items():
            if cid not in measured:
                self.claims.append(declared_claim(d, cid, None, note="not measured by this run"))
        seeds = max(c.seeds for c in self.claims)  # what the claims rest on, not what --seeds asked for
        path = write_benchmark(self.out_path, self.method, self.command, self.claims, metrics, scale=self.scale,
                               seeds=seeds, wall_s=time.perf_counter() - self._t0, device=self.args.device,
                               extra=extra)  # fmt: skip
        log.info("wrote %s (%s scale)", path, self.scale)
        return path
