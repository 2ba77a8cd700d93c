"""Declarations of command groups and verbs, read by the CLI without importing any heavy code.

A group module (``medfm.methods.<method>.cli``) defines ``GROUP = Group(...)``; each :class:`Command`
names its config dataclass and its run function by import path, so ``--help`` imports only the
torch-free config module and the run module is imported only when the verb actually runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Command:
    """One verb: ``medfm <group> <name>``.

    Attributes:
        name: verb name (``train``, ``evaluate``, ...).
        help: one-line description shown in listings.
        config: ``"module:Class"`` of the torch-free config dataclass.
        run: ``"module:function"`` called with the resolved config; returns an exit code or None.
        presets: package whose ``configs/*.yaml`` are this verb's presets (default: the config's package).
    """

    name: str
    help: str
    config: str
    run: str
    presets: str | None = None

    def config_class(self) -> type:
        return load_object(self.config)

    def run_function(self) -> Any:
        return load_object(self.run)

    def preset_package(self) -> str:
        return self.presets or self.config.split(":", 1)[0].rsplit(".", 1)[0]


@dataclass(frozen=True)
class Group:
    """A method or a global command. ``single`` groups run their only command without a verb (``medfm env``)."""

    name: str
    help: str
    commands: tuple[Command, ...] = field(default_factory=tuple)
    single: bool = False

    def command(self, name: str) -> Command | None:
        return next((c for c in self.commands if c.name == name), None)


def load_object(path: str) -> Any:
    """Import ``"package.module:attribute"``."""
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
