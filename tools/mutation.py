"""Mutation testing: does the test suite catch single-line mistakes in the code every verdict rests on?

Usage: ``python tools/mutation.py [module ...] [--list] [--max N]`` (``make mutation``).

For each module of tools/mutation.yaml, every single-operator mutant is generated from the AST (a
comparison flipped or loosened, ``+``/``-`` and ``*``/``/`` swapped, an integer constant moved by one, ``and``
/``or`` swapped, a ``not`` dropped, ``True``/``False`` swapped, a ``min``/``max`` swapped), written into a
copy of the package, and the module's tests are run against the copy (``PYTHONPATH`` points at it; the
checkout is never modified). Default values of a module's declared ``knobs`` (bootstrap seeds, resample
counts) are not mutated: another value is equally correct. A mutant is *killed* when a test fails or times out. Mutants that cannot
change behaviour are listed as equivalent in tools/mutation.yaml, each with a reason, and left out of the
score. A module with ``sample: N`` is scored on a seeded sample of N of its mutants (an estimate, said so
in the output). Prints a score per module (killed / non-equivalent) and the surviving mutants; exit 1 when a
module is below its declared ``min_score``.
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

_CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}  # fmt: skip
_BIN_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
             ast.Pow: ast.Mult}  # fmt: skip
_FUNC_SWAP = {"min": "max", "max": "min"}


@dataclass
class Mutant:
    key: str  # stable across line moves: "<function>: <source of the node> : <what changed>"
    line: int
    source: str  # the mutated module


def _sites(tree: ast.AST) -> Iterator[tuple[ast.AST, str]]:
    """Every (node, description) that one operator swap can mutate, outside docstrings."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in _CMP_SWAP:
                    yield node, f"cmp{i}:{type(op).__name__}->{_CMP_SWAP[type(op)].__name__}"
        elif isinstance(node, ast.BinOp) and type(node.op) in _BIN_SWAP:
            yield node, f"bin:{type(node.op).__name__}->{_BIN_SWAP[type(node.op)].__name__}"
        elif isinstance(node, ast.AugAssign) and type(node.op) in _BIN_SWAP:
            yield node, f"aug:{type(node.op).__name__}->{_BIN_SWAP[type(node.op)].__name__}"
        elif isinstance(node, ast.BoolOp):
            yield node, f"bool:{type(node.op).__name__}->{'Or' if isinstance(node.op, ast.And) else 'And'}"
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield node, "not:drop"
        elif isinstance(node, ast.Constant) and type(node.value) is bool:
            yield node, f"const:{node.value}->{not node.value}"
        elif isinstance(node, ast.Constant) and type(node.value) is int and not isinstance(node.value, bool):
            yield node, f"const:{node.value}->{node.value + 1}"
            if node.value != 0:
                yield node, f"const:{node.value}->{node.value - 1}"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNC_SWAP:
            yield node, f"call:{node.func.id}->{_FUNC_SWAP[node.func.id]}"


def _apply(node: ast.AST, what: str) -> ast.AST | None:
    """The mutated replacement of ``node`` (None: drop the ``not``, i.e. replace by its operand)."""
    kind, change = what.split(":", 1)
    new = copy.deepcopy(node)
    if kind.startswith("cmp"):
        i = int(kind[3:])
        new.ops[i] = _CMP_SWAP[type(node.ops[i])]()
    elif kind in ("bin", "aug"):
        new.op = _BIN_SWAP[type(node.op)]()
    elif kind == "bool":
        new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif kind == "not":
        return copy.deepcopy(node.operand)
    elif kind == "const":
        new.value = type(node.value)(ast.literal_eval(change.split("->")[1]))
    elif kind == "call":
        new.func.id = _FUNC_SWAP[node.func.id]
    return new


class _Replace(ast.NodeTransformer):
    def __init__(self, target: ast.AST, replacement: ast.AST) -> None:
        self.target, self.replacement = target, replacement

    def visit(self, node: ast.AST) -> ast.AST:
        if node is self.target:
            return self.replacement
        return super().visit(node)


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _enclosing(tree: ast.AST) -> dict[int, str]:
    names: dict[int, str] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}.{child.name}" if prefix else child.name
            names[id(child)] = name or "<module>"
            walk(child, name)

    walk(tree, "")
    return names


def _knob_defaults(tree: ast.AST, knobs: set[str]) -> set[int]:
    """Default values of tuning knobs (``seed=0``, ``n_resamples=1000``, ``kwargs.pop("seed", 0)``).

    Another bootstrap seed or resample count is equally correct, so such mutants are equivalent by nature."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            pos = a.posonlyargs + a.args
            for arg, default in zip(pos[len(pos) - len(a.defaults) :], a.defaults, strict=True):
                if arg.arg in knobs:
                    ids.add(id(default))
            for arg, default in zip(a.kwonlyargs, a.kw_defaults, strict=True):
                if default is not None and arg.arg in knobs:
                    ids.add(id(default))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("pop", "get")
              and len(node.args) == 2 and isinstance(node.args[0], ast.Constant) and node.args[0].value in knobs):  # fmt: skip
            ids.add(id(node.args[1]))
    return ids


def mutants(path: Path, knobs: set[str] | None = None) -> list[Mutant]:
    text = path.read_text()
    tree = ast.parse(text)
    skip = _docstring_nodes(tree) | _knob_defaults(tree, knobs or set())
    where = _enclosing(tree)
    out, seen = [], {}
    for node, what in list(_sites(tree)):
        if id(node) in skip:
            continue
        segment = ast.get_source_segment(text, node) or ast.unparse(node)
        base = f"{where.get(id(node), '<module>')}: {' '.join(segment.split())[:80]} : {what}"
        seen[base] = seen.get(base, 0) + 1
        key = base if seen[base] == 1 else f"{base} #{seen[base]}"
        tree2 = ast.parse(text)  # fresh tree so node identity maps by position
        target = _find_same(tree2, node)
        repl = _apply(target, what)
        mutated = _Replace(target, repl).visit(tree2)
        ast.fix_missing_locations(mutated)
        out.append(Mutant(key=key, line=node.lineno, source=ast.unparse(mutated)))
    return out


def _find_same(tree: ast.AST, node: ast.AST) -> ast.AST:
    for cand in ast.walk(tree):
        if (type(cand) is type(node) and getattr(cand, "lineno", None) == node.lineno
                and getattr(cand, "col_offset", None) == node.col_offset
                and getattr(cand, "end_col_offset", None) == node.end_col_offset):  # fmt: skip
            return cand
    raise LookupError(f"node at line {node.lineno} not found")


def run_tests(copy_root: Path, tests: list[str], timeout: float) -> str:
    env = {**os.environ, "PYTHONPATH": str(copy_root), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *tests]
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"
    return "survived" if r.returncode == 0 else ("killed" if r.returncode == 1 else f"error{r.returncode}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help="module paths relative to src/ (default: all of mutation.yaml)")
    ap.add_argument("--config", default=str(ROOT / "tools" / "mutation.yaml"))
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--max", type=int, default=0, help="at most N mutants per module (0: all)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant test run")
    args = ap.parse_args(argv)
    cfg = yaml.safe_load(Path(args.config).read_text())
    mods = cfg["modules"]
    if args.modules:
        mods = {m: v for m, v in mods.items() if m in args.modules}
    below = []
    for mod, spec in mods.items():
        path = SRC / mod
        equivalent = spec.get("equivalent") or {}
        ms = mutants(path, set(spec.get("knobs") or ()))
        all_keys = {m.key for m in ms}
        n_all = len(ms)
        if spec.get("sample") and len(ms) > int(spec["sample"]) and not args.list:
            # a seeded sample keeps long modules affordable; the score is then an estimate over it
            keep = sorted(random.Random(0).sample(range(len(ms)), int(spec["sample"])))
            ms = [ms[i] for i in keep]
        if args.max:
            ms = ms[: args.max]
        if args.list:
            for m in ms:
                print(f"{mod}:{m.line}  {m.key}{'  [equivalent]' if m.key in equivalent else ''}")
            continue
        with tempfile.TemporaryDirectory(prefix="medfm-mutation-") as tmp:
            copy_root = Path(tmp)
            shutil.copytree(SRC / "medfm", copy_root / "medfm", ignore=shutil.ignore_patterns("__pycache__"))
            target = copy_root / mod
            original = target.read_text()
            if run_tests(copy_root, spec["tests"], args.timeout) != "survived":
                print(f"{mod}: the tests fail on the unmutated code; fix them first (module skipped)")
                below.append(mod)
                continue
            killed, survived, t0 = 0, [], time.perf_counter()
            for m in ms:
                if m.key in equivalent:
                    continue
                target.write_text(m.source)
                outcome = run_tests(copy_root, spec["tests"], args.timeout)
                target.write_text(original)
                if outcome == "survived":
                    survived.append(m)
                else:
                    killed += 1
                print("s" if outcome == "survived" else ".", end="", file=sys.stderr, flush=True)
            print(file=sys.stderr)
            total = killed + len(survived)
            score = killed / total if total else 1.0
            n_eq = sum(m.key in equivalent for m in ms)
            sampled = f", sample of {len(ms)} of {n_all} mutants" if len(ms) < n_all else ""
            print(
                f"{mod}: {score:.1%} ({killed}/{total} killed, {n_eq} equivalent{sampled}, "
                f"{time.perf_counter() - t0:.0f} s)"
            )
            for m in survived:
                print(f"  survived  line {m.line}: {m.key}")
            stale = set(equivalent) - all_keys
            for key in sorted(stale):
                print(f"  stale equivalent entry (no such mutant): {key}")
            if score < float(spec.get("min_score", 0.0)):
                below.append(mod)
    if below:
        print(f"below min_score: {', '.join(below)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
