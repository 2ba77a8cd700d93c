"""Run directories, seeding, environment capture and progress bars.

A run directory (``runs/<method>/<timestamp>-<verb>/`` or ``--output_dir``) holds::

    config.yaml    resolved configuration          env.json       versions, device, git commit
    log.txt        the run's log                    metrics.jsonl  one line per logged step
    results.json   medfm.results/1                  samples.jsonl  one line per item
    plots/*.png    figures                          report.html    self-contained report
    checkpoints/   save_pretrained directories
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import os
import platform
import random
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from medfm.core import config as cfgmod
from medfm.core.distributed import broadcast_from_main, process_rank, world_size
from medfm.core.files import atomic_write_json, atomic_write_text
from medfm.core.results import MetricsLog, Results

log = logging.getLogger(__name__)
T = TypeVar("T")

# Packages whose versions go into env.json and `medfm env` (read from metadata, never imported).
TRACKED_PACKAGES = (
    "medfm",
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "scikit-learn",
    "monai",
    "nibabel",
    "pydicom",
    "SimpleITK",
    "transformers",
    "accelerate",
    "trl",
    "peft",
    "open_clip_torch",
    "timm",
    "diffusers",
    "faiss-cpu",
    "sentence-transformers",
    "datasets",
    "gguf",
)


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(cwd: str | Path | None = None, ignore: tuple[str, ...] = ()) -> str | None:
    """Commit of the working tree (with ``-dirty``) when running from a checkout, else None.

    ``ignore``: paths (relative to the checkout root) whose changes do not make the tree dirty.
    """
    try:
        root = Path(cwd or Path(__file__).resolve().parent)
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ":/",
                *(f":(top,exclude){x}" for x in ignore),
            ],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``mps``, else ``cpu``. Imports torch."""
    import torch

    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            from medfm.core.errors import UsageError

            raise UsageError(f"--device {device} requested but CUDA is not available here; use --device cpu")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def device_info() -> dict[str, Any]:
    """Device facts for env.json (imports torch if installed)."""
    try:
        import torch
    except ImportError:
        return {"torch": None}
    info: dict[str, Any] = {
        "cuda_available": torch.cuda.is_available(),
        "cpu_threads": torch.get_num_threads(),
        "default_device": resolve_device("auto"),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def capture_env(with_device: bool = True) -> dict[str, Any]:
    """Machine, Python, package versions, git commit and (optionally) device facts."""
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "command": " ".join(["medfm", *sys.argv[1:]]) if sys.argv else None,
        "git_commit": git_commit(),
        "packages": package_versions(),
    }
    if with_device:
        env["device"] = device_info()
    return env


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (if installed) so a run is repeatable on the same machine."""
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, **kwargs: Any) -> Iterator[T]:
    """tqdm progress bar on stderr; silent when stderr is not a terminal (CI logs stay readable)."""
    from tqdm.auto import tqdm

    disable = kwargs.pop("disable", None)
    if disable is None:
        disable = not sys.stderr.isatty()
    return iter(tqdm(iterable, desc=desc, total=total, disable=disable, dynamic_ncols=True, **kwargs))


#: The lock file of a run folder (holds the pid of the process writing it).
LOCK_NAME = ".medfm.lock"
#: How the folder's last attempt ended (see Run._write_status).
STATUS_NAME = "status.json"
#: Run-folder locks this process holds: lock file path -> open descriptor. flock conflicts between two
#: descriptors of one process too, and a verb may open a second Run on a folder it is already writing.
_HELD: dict[str, int] = {}


def timestamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


class Run:
    """A run directory plus its log, metrics and results writers.

    Args:
        method: method name (``mass``), used for the default location.
        verb: verb name (``train``).
        cfg: the resolved config dataclass (saved as config.yaml). Its ``output_dir`` wins if set.
        root: parent of the default location (``runs/``).

    Reusing an ``output_dir`` keeps what is there (verbs resume from it); a different config is saved
    alongside as ``config.previous.yaml`` so changes between attempts are visible.
    """

    def __init__(self, method: str, verb: str, cfg: Any = None, root: str | Path = "runs"):
        self.method = method
        self.verb = verb
        self.cfg = cfg
        out = getattr(cfg, "output_dir", None) if cfg is not None else None
        if out:
            self.dir = Path(out)
        else:  # every rank of a multi-process launch must agree on the folder: rank 0's timestamp wins
            stamp = timestamp()
            if world_size() > 1:
                cpu = resolve_device(str(getattr(cfg, "device", "auto") or "auto")) == "cpu"
                stamp = broadcast_from_main(stamp, cpu=cpu)
            self.dir = Path(root) / method / f"{stamp}-{verb}"
        self.resumed = (self.dir / "config.yaml").is_file()  # logged only (by rank 0, which decides)
        # Nothing is created before start(): a --dry_run or a rejected configuration leaves no folder.
        self._created = False
        self._lock_fd: int | None = None
        self._started = False
        self._handler: logging.Handler | None = None
        self.is_main = process_rank() == 0
        self.metrics = MetricsLog(self.dir / "metrics.jsonl", enabled=self.is_main)
        self.layout: dict[str, Any] = {}

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def start(self, with_device: bool = True) -> Run:
        """Create the folder, take its lock, write config.yaml and env.json, attach log.txt, seed from ``cfg.seed``.

        Only the main process (rank 0) creates, locks and writes; other ranks of a multi-process launch
        log to their console and write nothing into the folder.
        """
        if self._started:  # `with run.start(...):` starts once, then __enter__ finds it started
            return self
        self._started = True
        if self.is_main:
            self._created = not self.dir.exists()
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock()
        if self.cfg is not None:
            if self.is_main:
                text = cfgmod.dump_yaml(self.cfg)
                cfg_path = self.dir / "config.yaml"
                if cfg_path.is_file() and cfg_path.read_text() != text:
                    atomic_write_text(self.dir / "config.previous.yaml", cfg_path.read_text())
                atomic_write_text(cfg_path, text)
            seed_everything(int(getattr(self.cfg, "seed", 0)))
        if self.is_main:
            atomic_write_json(self.dir / "env.json", capture_env(with_device=with_device))
            self._write_status("running")
            self._handler = logging.FileHandler(self.dir / "log.txt", encoding="utf-8")
            self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            self._handler.setLevel(logging.DEBUG)
            logging.getLogger().addHandler(self._handler)
        if not self.is_main:  # other ranks report problems only; rank 0 tells the story once
            logging.getLogger().setLevel(logging.WARNING)
        elif logging.getLogger().level > logging.INFO or logging.getLogger().level == logging.NOTSET:
            logging.getLogger().setLevel(logging.INFO)
        log.info("%s %s: run directory %s%s", self.method, self.verb, self.dir, " (resuming)" if self.resumed else "")
        return self

    def _lock(self) -> None:
        """Exclusive lock on the folder: a second writer gets one line naming the holder (exit 2)."""
        import fcntl

        from medfm.core.errors import UsageError

        path = self.dir / LOCK_NAME
        key = str(path.resolve())
        if key in _HELD:  # this process already holds it (an earlier Run of this process, not closed): one writer
            self._lock_fd = _HELD[key]
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UsageError(
                f"{self.dir} is in use by another medfm process (pid {holder}); wait for it to finish "
                "or choose another --output_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = _HELD[key] = fd

    def close(self) -> None:
        self._started = False
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler.close()
            self._handler = None
        if self._lock_fd is not None:
            for key, fd in list(_HELD.items()):
                if fd == self._lock_fd:
                    del _HELD[key]
                    os.close(fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> Run:
        return self.start()

    def _write_status(self, status: str, error: str | None = None) -> None:
        """``status.json``: running / completed / failed / interrupted, so a folder says how its last attempt ended
        (a run killed outright stays ``running`` with no process holding the folder's lock)."""
        if not self.is_main or not self.dir.is_dir():
            return
        doc: dict[str, Any] = {"status": status, "verb": f"{self.method} {self.verb}", "pid": os.getpid(),
                               "at": _dt.datetime.now().isoformat(timespec="seconds")}  # fmt: skip
        if error:
            doc["error"] = error
        atomic_write_json(self.dir / STATUS_NAME, doc)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        from medfm.core.errors import MedfmError

        if self._started and self.is_main:
            if exc is None:
                self._write_status("completed")
            else:
                first = (str(exc).strip().splitlines() or [""])[0][:500]
                kind = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                self._write_status(kind, f"{type(exc).__name__}: {first}")
        self.close()
        # A user mistake (bad data, bad option) found inside the run leaves nothing behind in a folder
        # this run created; crashes keep theirs (log.txt and checkpoints are needed to resume or debug).
        if isinstance(exc, MedfmError) and self._created:
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)

    def record_layout(self, accelerator: Any = None) -> dict[str, Any]:
        """Record world size, rank layout, device and precision in env.json (``distributed``); returns them."""
        from medfm.core.distributed import layout

        self.layout = layout(accelerator)
        env_path = self.dir / "env.json"
        if self.is_main and env_path.is_file():
            env = json.loads(env_path.read_text())
            env["distributed"] = self.layout
            atomic_write_json(env_path, env)
        return self.layout

    # -- outputs -------------------------------------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        p = self.dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def checkpoints(self) -> Path:
        return self.path("checkpoints", ".keep").parent

    def new_results(self) -> Results:
        return Results(method=self.method, verb=self.verb, meta={"run_dir": str(self.dir)})

    def save_results(self, results: Results) -> Path:
        """Write results.json (rank 0), recording the process layout the run trained with in env.json."""
        path = self.dir / "results.json"
        if not self.is_main:
            return path
        self.record_layout()
        return results.save(path)

    def save_figure(self, name: str, fig: Any, caption: str) -> Path:
        """``plots/<name>.png`` with its caption (shown under it in report.html); rank 0 writes."""
        from medfm.core.report import save_figure

        path = self.path("plots", f"{name}.png")
        if self.is_main:
            save_figure(path, fig, caption)
        elif not isinstance(fig, bytes):
            import matplotlib.pyplot as plt

            plt.close(fig)
        return path

    def write_samples(self, rows: Iterable[dict[str, Any]], name: str = "samples.jsonl") -> Path:
        if not self.is_main:
            return self.dir / name
        text = "".join(json.dumps(r, default=str) + "\n" for r in rows)
        return atomic_write_text(self.dir / name, text)

    def plan(self, lines: Iterable[str]) -> int:
        """The dry run: check every declared input file as ``medfm data validate`` would (:mod:`medfm.core.inputs`),
        then print the plan to stdout. Returns 0, or 3 after listing the inputs' problems on stderr."""
        import sys

        from medfm.core.inputs import check_inputs

        problems = check_inputs(self.cfg) if self.cfg is not None else []
        if problems:
            for p in problems:
                print(p, file=sys.stderr)
            print(f"dry run: {len(problems)} problem(s) in the inputs of {self.method} {self.verb}", file=sys.stderr)
            return 3
        print(f"dry run: {self.method} {self.verb} -> {self.dir}")
        for line in lines:
            print(f"  {line}")
        return 0
