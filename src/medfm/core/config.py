"""Configuration as data: dataclasses, YAML presets and dotted overrides.

A verb's configuration is a dataclass whose fields are options and whose dataclass-typed fields are
sections, so ``--train.lr 1e-4`` sets ``cfg.train.lr``. Values are resolved in this order:
dataclass defaults, then each ``--config`` (``preset:NAME`` from the method's ``configs/NAME.yaml``, or a
YAML file), then dotted command-line overrides. Everything here is torch-free so ``--help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from medfm.core.errors import UsageError

_MISSING = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    *,
    help: str,
    default_factory: Any = _MISSING,
    positional: bool = False,
    choices: tuple[Any, ...] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    input: str | None = None,
) -> Any:
    """A documented config field. ``help`` is shown by ``--help``; ``positional`` makes it a CLI argument.

    ``choices`` (for a list option: of every item) and the bounds ``ge``/``gt``/``le``/``lt`` are enforced
    whenever a value is set, from a YAML config or a flag alike (:func:`check_value`): a UsageError, exit 2.
    None always passes (an unset optional option). ``input`` declares a file the verb reads (``manifest``,
    ``datalist``, ``table:col,...``); ``--dry_run`` checks it (:mod:`medfm.core.inputs`).

    Without a default the option is *required*: it defaults to None so configs stay constructible, and
    :func:`resolve` raises a UsageError naming it when no config source or flag set it.
    """
    meta = {"help": help, "positional": positional, "choices": choices, "required": False,
            "bounds": {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None},
            "input": input}  # fmt: skip
    if default is _MISSING and default_factory is _MISSING:
        default, meta["required"] = None, True
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type, *, help: str) -> Any:
    """A nested config section (a dataclass) addressed as ``--<name>.<field>`` on the command line."""
    return dataclasses.field(default_factory=cls, metadata={"help": help, "section": True})


@dataclasses.dataclass
class CommonOptions:
    """Options every method verb accepts (ARCHITECTURE.md, "Command line")."""

    output_dir: str | None = option(
        None, help="Run directory. Default: runs/<method>/<timestamp>-<verb>. Rerunning into it resumes."
    )
    seed: int = option(0, help="Random seed for Python, NumPy and torch.")
    device: str = option("auto", help="auto, cpu, cuda, cuda:N or mps.")
    limit: int | None = option(None, help="Use at most this many items (smoke runs).", ge=1)
    dry_run: bool = option(False, help="Validate inputs, print the plan and exit 0 without computing.")


# ----------------------------------------------------------------------------------------------------------------------
# Introspection


def is_config(obj: Any) -> bool:
    return dataclasses.is_dataclass(obj)


def field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass (works with ``from __future__ import annotations``)."""
    return typing.get_type_hints(cls)


def iter_options(cls: type, prefix: str = "") -> typing.Iterator[tuple[str, dataclasses.Field, Any]]:
    """Yield ``(dotted_name, field, type)`` for every leaf option of ``cls``, sections flattened."""
    hints = field_types(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        name = f"{prefix}{f.name}"
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            yield from iter_options(tp, prefix=f"{name}.")
        else:
            yield name, f, tp


def describe_type(tp: Any) -> str:
    """Short human name of a type for help texts: ``int``, ``float|None``, ``list[str]``, ``{a,b}``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return "{" + ",".join(str(a) for a in args) + "}"
    if origin in (typing.Union, types.UnionType):
        return "|".join(describe_type(a) for a in args)
    if origin in (list, tuple):
        return f"list[{describe_type(args[0]) if args else 'any'}]"
    if origin is dict:
        return "dict"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


# ----------------------------------------------------------------------------------------------------------------------
# Coercion


_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert ``value`` (a YAML value or a command-line string) to type ``tp`` or raise UsageError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in {"none", "null", "~"})
        if is_none and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, name)
            except UsageError as exc:
                errors.append(str(exc))
        raise UsageError(errors[0] if errors else f"{name}: cannot use {value!r}")
    if origin is Literal:
        for choice in args:
            if value == choice or str(value) == str(choice):
                return choice
        raise UsageError(f"{name}: {value!r} is not one of {', '.join(map(str, args))}")
    if origin in (list, tuple):
        if isinstance(value, str):
            text = value.strip()
            value = yaml.safe_load(text) if text.startswith("[") else [v for v in text.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            value = [value]
        inner = args[0] if args else Any
        items = [coerce(v.strip() if isinstance(v, str) else v, inner, name) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise UsageError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise UsageError(f"{name}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise UsageError(f"{name}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).replace("_", ""))
        except ValueError:
            raise UsageError(f"{name}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise UsageError(f"{name}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UsageError(f"{name}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, dict | list):
            raise UsageError(f"{name}: expected a string, got {value!r}")
        return str(value)
    if tp is Path:
        return Path(str(value))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise UsageError(f"{name}: expected a section (mapping), got {value!r}")
        return from_dict(tp, value, where=name)
    return value


_BOUND_TEXT = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


class ConstraintError(UsageError):
    """A value outside an option's declared choices or bounds (a UsageError: exit code 2)."""


def check_value(value: Any, meta: Mapping[str, Any], name: str) -> Any:
    """Enforce an option's declared ``choices`` and bounds on a coerced value; returns it or raises UsageError."""
    if value is None:
        return value
    items = value if isinstance(value, list | tuple) else [value]
    choices = meta.get("choices")
    if choices:
        for v in items:
            if v not in choices and str(v) not in map(str, choices):
                raise ConstraintError(f"--{name}: {v!r} is not one of {', '.join(map(str, choices))}")
    for key, bound in (meta.get("bounds") or {}).items():
        for v in items:
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            ok = {"ge": v >= bound, "gt": v > bound, "le": v <= bound, "lt": v < bound}[key]
            if not ok:
                raise ConstraintError(f"--{name}: {v!r} must be {_BOUND_TEXT[key]} {bound:g}")
    return value


# ----------------------------------------------------------------------------------------------------------------------
# dict <-> dataclass


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (Paths as strings, tuples as lists), ready for YAML/JSON."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


class _UnknownOptionError(UsageError):
    """A config key that is not an option of the config class (a UsageError: exit code 2)."""


def _unknown(key: str, known: list[str], where: str) -> UsageError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
    return _UnknownOptionError(f"unknown option {key!r} in {where}{hint}")


def from_dict(cls: type, data: Mapping[str, Any], where: str = "config") -> Any:
    """Build dataclass ``cls`` from a (partial) nested mapping; unknown keys and bad types raise UsageError."""
    return merge(cls(), data, where=where)


def merge(cfg: Any, data: Mapping[str, Any], where: str = "config", _path: tuple[str, ...] = ()) -> Any:
    """Return a copy of ``cfg`` with the nested mapping ``data`` applied on top (values coerced to their types and
    checked against their declared choices and bounds)."""
    hints = field_types(type(cfg))
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    names = list(fields)
    updates: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown(key, names, where)
        tp = hints[key]
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and isinstance(tp, type):
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise UsageError(f"{where}: {key} is a section and needs a mapping, got {value!r}")
            updates[key] = merge(current, value, where=f"{where}:{key}", _path=(*_path, key))
        else:
            updates[key] = check_value(coerce(value, tp, key), fields[key].metadata, ".".join((*_path, key)))
    return dataclasses.replace(cfg, **updates)


def dotted_to_nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"train.lr": 1}`` -> ``{"train": {"lr": 1}}``."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


# ----------------------------------------------------------------------------------------------------------------------
# Presets and YAML


def preset_dir(package: str) -> Path | None:
    """``configs/`` folder of a method package (``medfm.methods.mass``), or None if it has none."""
    try:
        root = resources.files(package) / "configs"
    except ModuleNotFoundError:
        return None
    path = Path(str(root))
    return path if path.is_dir() else None


def list_presets(package: str | None) -> list[str]:
    """Names of the YAML presets a package ships, sorted."""
    folder = preset_dir(package) if package else None
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder else []


def applicable_presets(package: str | None, cls: type) -> list[str]:
    """Presets of ``package`` whose every key is an option of ``cls`` (a group's verbs may share a folder)."""
    names = []
    for name in list_presets(package):
        try:
            merge(cls(), load_config_source(f"preset:{name}", package), where=name)
        except UsageError:
            continue
        names.append(name)
    return names


def load_config_source(spec: str, package: str | None) -> dict[str, Any]:
    """Read ``preset:NAME`` (from ``package``'s configs/) or a YAML file path into a mapping."""
    if spec.startswith("preset:"):
        name = spec.split(":", 1)[1]
        available = list_presets(package)
        if name not in available:
            raise UsageError(
                f"unknown preset {name!r}; available: {', '.join(available) or 'none'} "
                "(or pass --config path/to/file.yaml)"
            )
        path = preset_dir(package) / f"{name}.yaml"  # type: ignore[operator]
    else:
        path = Path(spec)
        if not path.is_file():
            raise UsageError(f"config file {spec} does not exist (use --config preset:NAME or a YAML file path)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a mapping of options, got {type(data).__name__}")
    return data


def dump_yaml(cfg: Any) -> str:
    """Resolved config as YAML (the form ``--print_config`` prints and runs save as config.yaml)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def resolve(cls: type, sources: list[str], overrides: Mapping[str, Any], package: str | None = None) -> Any:
    """Defaults, then each ``--config`` source in order, then dotted overrides (strings from the CLI)."""
    cfg = cls()
    for spec in sources:
        try:
            cfg = merge(cfg, load_config_source(spec, package), where=spec)
        except _UnknownOptionError as exc:
            if not spec.startswith("preset:"):
                raise
            fitting = applicable_presets(package, cls)
            raise UsageError(
                f"{exc} — {spec} is meant for another verb of this command; presets for this verb: "
                f"{', '.join(fitting) or 'none'}"
            ) from None
    cfg = merge(cfg, dotted_to_nested(overrides), where="command line")
    missing = [name for name, f, _tp in iter_options(cls) if f.metadata.get("required") and _get(cfg, name) is None]
    if missing:
        raise UsageError(f"missing required option(s): {', '.join('--' + m for m in missing)}")
    return cfg


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg
