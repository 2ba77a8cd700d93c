"""Global commands that need no method: ``medfm env`` and ``medfm list``."""

from __future__ import annotations

from dataclasses import dataclass

from medfm.core.commands import Command, Group
from medfm.core.config import option


@dataclass
class EnvConfig:
    json: bool = option(False, help="Print machine-readable JSON instead of text.")


@dataclass
class ListConfig:
    json: bool = option(False, help="Print machine-readable JSON instead of text.")


def run_env(cfg: EnvConfig) -> int:
    import json

    from medfm.core.runs import capture_env
    from medfm.data.assets import ASSETS

    env = capture_env(with_device=True)
    env["assets"] = {a.name: (str(a.find()) if a.installed else None) for a in ASSETS}
    if cfg.json:
        print(json.dumps(env, indent=2))
        return 0
    print(f"medfm {env['packages']['medfm']}  python {env['python']}  {env['platform']}")
    print(f"git commit: {env['git_commit'] or 'not a checkout'}")
    dev = env["device"]
    print(
        f"device: {dev.get('default_device')}  cuda: {dev.get('cuda_available')}  threads: {dev.get('cpu_threads')}"
        + (f"  gpus: {', '.join(dev['gpus'])}" if dev.get("gpus") else "")
    )
    print("packages:")
    for name, version in env["packages"].items():
        print(f"  {name:<22} {version or '-'}")
    print("offline assets:")
    for a in ASSETS:
        where = a.find()
        print(f"  {a.name:<28} {str(where) if where else 'missing: ' + a.install}")
    return 0


def run_list(cfg: ListConfig) -> int:
    import importlib
    import json

    from medfm import capabilities
    from medfm.core.config import applicable_presets

    rows = []
    for cap in capabilities.all_capabilities():
        entry = {"name": cap.name, "title": cap.title, "available": cap.available, "verbs": []}
        if cap.available:
            group = getattr(importlib.import_module(cap.module), capabilities.GROUP_ATTR.get(cap.name, "GROUP"))
            for cmd in group.commands:
                entry["verbs"].append(
                    {
                        "name": cmd.name,
                        "help": cmd.help,
                        "presets": applicable_presets(cmd.preset_package(), cmd.config_class()),
                    }
                )
        rows.append(entry)
    if cfg.json:
        print(json.dumps(rows, indent=2))
        return 0
    for entry in rows:
        status = "" if entry["available"] else "  (planned)"
        print(f"{entry['name']}{status}")
        for verb in entry["verbs"]:
            presets = f"  [presets: {', '.join(verb['presets'])}]" if verb["presets"] else ""
            print(f"  {verb['name']:<12} {verb['help']}{presets}")
    return 0


ENV = Group(
    "env",
    "Print versions, device and installed offline assets.",
    (
        Command(
            "env",
            "Print versions, device and installed offline assets.",
            "medfm.core.builtin:EnvConfig",
            "medfm.core.builtin:run_env",
        ),
    ),
    single=True,
)

LIST = Group(
    "list",
    "List methods, verbs and presets.",
    (
        Command(
            "list", "List methods, verbs and presets.", "medfm.core.builtin:ListConfig", "medfm.core.builtin:run_list"
        ),
    ),
    single=True,
)

REPORT = Group(
    "report",
    "Re-render report.html of a finished run of any method.",
    (
        Command(
            "report",
            "Re-render report.html of a finished run of any method.",
            "medfm.core.report:ReportConfig",
            "medfm.core.report:run_report",
        ),
    ),
    single=True,
)
