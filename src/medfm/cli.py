"""``medfm <method> <verb> [--config preset:NAME|file.yaml] [--section.field value ...]``.

The dispatcher imports only the torch-free group declaration and config dataclass of the verb it runs,
so ``medfm --help`` and ``medfm <method> --help`` never import torch. Errors a user can fix print one
line and exit 2 (usage), 3 (invalid data) or 1 (runtime); see :mod:`medfm.core.errors`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from medfm import __version__, capabilities
from medfm.core import config as cfgmod
from medfm.core.commands import Command, Group
from medfm.core.errors import MedfmError, UsageError

log = logging.getLogger("medfm")


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (raised, so main() maps it to exit code 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def load_group(name: str) -> Group:
    """Import the declaration of CLI group ``name`` (torch-free)."""
    cap = capabilities.get(name)
    if cap is None:
        names = ", ".join(c.name for c in capabilities.all_capabilities())
        import difflib

        close = difflib.get_close_matches(name, [c.name for c in capabilities.all_capabilities()], n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UsageError(f"unknown command '{name}'; {hint}commands: {names} (see 'medfm --help')")
    if not cap.available:
        raise UsageError(f"'{name}' ({cap.title}) is not available in this version of medfm ({__version__})")
    module = importlib.import_module(cap.module)
    return getattr(module, capabilities.GROUP_ATTR.get(name, "GROUP"))


def top_level_help() -> str:
    lines = [
        f"medfm {__version__}: build, adapt and audit radiology foundation models.",
        "",
        "usage: medfm [-v|-q] <command> [<verb>] [--config preset:NAME|FILE] [--section.option VALUE ...]",
        "",
        "methods:",
    ]
    for cap in capabilities.METHODS:
        mark = "" if cap.available else "  (planned)"
        lines.append(f"  {cap.name:<12} {cap.summary}{mark}")
    lines += ["", "commands:"]
    for cap in capabilities.GLOBAL:
        mark = "" if cap.available else "  (planned)"
        lines.append(f"  {cap.name:<12} {cap.summary}{mark}")
    lines += [
        "",
        "options:",
        "  -h, --help   show this help; 'medfm <command> --help' and 'medfm <command> <verb> --help' for more",
        "  --version    print the version",
        "  -v, -q       more or less logging",
        "",
        "exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 invalid data",
    ]
    return "\n".join(lines)


def group_help(group: Group) -> str:
    lines = [f"usage: medfm {group.name} <verb> [options]", "", group.help, "", "verbs:"]
    for cmd in group.commands:
        lines.append(f"  {cmd.name:<12} {cmd.help}")
    lines += ["", f"'medfm {group.name} <verb> --help' lists the verb's options and presets."]
    return "\n".join(lines)


def _bool_options(cls: type) -> set[str]:
    """Dotted names of options typed ``bool`` or ``bool | None`` (a bare flag means true)."""
    import typing

    return {name for name, _f, tp in cfgmod.iter_options(cls) if tp is bool or bool in typing.get_args(tp)}


def _expand_bool_flags(args: list[str], bools: set[str]) -> list[str]:
    """``--dry_run`` alone means ``--dry_run=true``; ``--dry_run false`` keeps its value."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and "=" not in arg and arg[2:] in bools:
            nxt = args[i + 1] if i + 1 < len(args) else None
            if nxt is not None and nxt.lower() in cfgmod._TRUE | cfgmod._FALSE:
                out.append(f"{arg}={nxt}")
                i += 2
                continue
            out.append(f"{arg}=true")
        else:
            out.append(arg)
        i += 1
    return out


def build_parser(prog: str, cmd: Command, cls: type) -> _Parser:
    """argparse parser for one verb: ``--config``, ``--print_config`` and one flag per config option."""
    presets = cfgmod.applicable_presets(cmd.preset_package(), cls)
    epilog = f"presets: {', '.join(presets)}" if presets else None
    parser = _Parser(
        prog=prog,
        description=cmd.help,
        allow_abbrev=False,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="preset:NAME|FILE",
        help="apply a preset or YAML file (repeatable; later ones win; flags win over both)",
    )
    parser.add_argument("--print_config", action="store_true", help="print the resolved config as YAML and exit")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, f, tp in cfgmod.iter_options(cls):
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        text = meta.get("help", "")
        if meta.get("choices"):
            text += f" One of: {', '.join(map(str, meta['choices']))}."
        if meta.get("bounds"):
            signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
            text += " Must be " + " and ".join(f"{signs[k]} {v:g}" for k, v in meta["bounds"].items()) + "."
        if meta.get("positional"):
            is_list = cfgmod.describe_type(tp).startswith("list[")
            required = bool(meta.get("required"))
            nargs = ("+" if required else "*") if is_list else (None if required else "?")
            parser.add_argument(name, nargs=nargs, default=argparse.SUPPRESS, metavar=name.upper(), help=text)
            continue
        section = name.rsplit(".", 1)[0] if "." in name else ""
        target = parser
        if section:
            if section not in groups:
                groups[section] = parser.add_argument_group(f"{section} options")
            target = groups[section]
        target.add_argument(
            f"--{name}",
            dest=name,
            default=argparse.SUPPRESS,
            metavar=cfgmod.describe_type(tp),
            help=f"{text} (default: {default})",
        )
    return parser


def run_command(group: Group, cmd: Command, argv: list[str]) -> int:
    prog = f"medfm {group.name}" if group.single else f"medfm {group.name} {cmd.name}"
    cls = cmd.config_class()
    parser = build_parser(prog, cmd, cls)
    ns = parser.parse_args(_expand_bool_flags(argv, _bool_options(cls)))
    values = vars(ns)
    sources = values.pop("config")
    print_config = values.pop("print_config")
    for name, _f, tp in cfgmod.iter_options(cls):
        if name in values and isinstance(values[name], list) and not cfgmod.describe_type(tp).startswith("list["):
            values[name] = values[name][0] if values[name] else None
    cfg = cfgmod.resolve(cls, sources, values, package=cmd.preset_package())
    if print_config:
        sys.stdout.write(cfgmod.dump_yaml(cfg))
        return 0
    result = cmd.run_function()(cfg)
    return int(result or 0)


def _main(argv: list[str]) -> int:
    verbosity = 0
    while argv and argv[0] in {"-v", "--verbose", "-q", "--quiet"}:
        verbosity += 1 if argv[0] in {"-v", "--verbose"} else -1
        argv = argv[1:]
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(top_level_help())
        return 0
    if argv[0] == "--version":
        print(f"medfm {__version__}")
        return 0
    if argv[0].startswith("-"):
        raise UsageError(f"unknown option {argv[0]} before the command (see 'medfm --help')")
    setup_logging(verbosity)
    group = load_group(argv[0])
    rest = argv[1:]
    if group.single:
        return run_command(group, group.commands[0], rest)
    if not rest or rest[0] in {"-h", "--help"}:
        print(group_help(group))
        return 0
    cmd = group.command(rest[0])
    if cmd is None:
        import difflib

        close = difflib.get_close_matches(rest[0], [c.name for c in group.commands], n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        verbs = ", ".join(c.name for c in group.commands)
        raise UsageError(f"unknown verb '{rest[0]}' for {group.name}; {hint}verbs: {verbs}")
    return run_command(group, cmd, rest[1:])


def setup_logging(verbosity: int = 0) -> None:
    """Log to stderr: INFO by default, DEBUG with -v, WARNING with -q. Library code only uses loggers."""
    level = logging.INFO if verbosity == 0 else logging.DEBUG if verbosity > 0 else logging.WARNING
    root = logging.getLogger()
    if not any(getattr(h, "_medfm", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._medfm = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # Third-party libraries are chatty at INFO; keep them at WARNING unless -v.
    for noisy in ("httpx", "urllib3", "matplotlib", "PIL", "filelock", "huggingface_hub", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbosity > 0 else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point. Returns the exit code (see module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(args)
    except MedfmError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"medfm: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("medfm: interrupted; rerun the same command with the same --output_dir to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `medfm list | head`
        return 0
    except SystemExit as exc:  # argparse's --help
        return exc.code if isinstance(exc.code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
