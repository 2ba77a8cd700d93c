"""Error types that the CLI maps to exit codes and one actionable line.

Library code raises these for problems a user can fix; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MedfmError(Exception):
    """Base class: a problem the user can act on. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UsageError(MedfmError):
    """Bad command line or configuration (unknown flag, wrong type, missing preset). Exit code 2."""

    exit_code = 2


class DataError(MedfmError):
    """Invalid input data (missing file, corrupt image, manifest without a column). Exit code 3."""

    exit_code = 3


class MissingDependencyError(MedfmError):
    """An optional package is not installed; the message names the install command. Exit code 1."""

    exit_code = 1


def require(module: str, extra: str | None = None, package: str | None = None):
    """Import ``module`` or raise :class:`MissingDependencyError` with the exact install command.

    Args:
        module: importable module name, e.g. ``"nibabel"``.
        extra: medfm extra that provides it, e.g. ``"imaging"``.
        package: distribution name when it differs from the module name.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        how = f"pip install 'medfm[{extra}]'" if extra else f"pip install {package or module}"
        raise MissingDependencyError(f"{module} is not installed ({exc}); install it with: {how}") from exc
