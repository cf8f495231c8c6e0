"""The CLI's one error handler: expected failures become one line, bugs point to a log.

Every command runs inside `HandledGroup.invoke`. An expected failure (`cellkit.errors.describe`
knows it: bad input, I/O, permissions, disk space, corrupt files, validation) prints
``error: <what, naming the file / field / option>`` and, when there is one, ``  hint: <what to do>``
on stderr, and exits with status 1. Anything else is reported as an unexpected error, with its
full traceback written to a log file whose path is printed; exit status 2.
``--debug`` (before the command) or ``CELLKIT_DEBUG=1`` re-raises instead, showing the traceback.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import typer
from typer.core import TyperGroup

from .. import errors

_state = {"debug": False}


def set_debug(value: bool) -> None:
    _state["debug"] = bool(value)


def log_dir() -> Path:
    """Where tracebacks of unexpected errors go: ``$CELLKIT_LOG_DIR`` or ``<tmp>/cellkit-logs``."""
    return Path(os.environ.get("CELLKIT_LOG_DIR") or Path(tempfile.gettempdir()) / "cellkit-logs")


def _write_log(err: BaseException) -> Path | None:
    try:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"cellkit-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        path.write_text(f"cellkit {' '.join(sys.argv[1:])}\n\n"
                        + "".join(traceback.format_exception(type(err), err, err.__traceback__)))
        return path
    except OSError:
        return None


def _stores_in(args: list[str]) -> list[str]:
    """The command's arguments that are existing stores or AnnData files (to name a damaged one)."""
    names = []
    for arg in args:
        try:
            path = Path(arg)
            if path.suffix in (".zarr", ".h5ad") and path.exists():
                names.append(arg)
        except (OSError, ValueError):
            continue
    return names


def _outputs_in(args: list[str]) -> list[str]:
    """The values of the command's output options (--out, -o, --adata, --treatments)."""
    names = {"--out", "-o", "--adata", "--treatments", "--out-dir"}
    found = [b for a, b in zip(args, args[1:]) if a in names]
    return found + [a.split("=", 1)[1] for a in args if a.split("=", 1)[0] in names and "=" in a]


def report(err: BaseException, args: list[str] | None = None) -> int:
    """Print ``err`` as one line (plus a hint line) on stderr; return the exit status. ``args``:
    the command line, to name the stores it reads when a damaged chunk gives no file name."""
    from ._common import console

    described = errors.describe(err)
    if described is not None:
        message, hint = described
        if errors.is_corrupt(err) and _stores_in(args or []):
            message += f" (this command reads {', '.join(_stores_in(args or []))})"
        elif isinstance(err, OSError) and err.filename is None and _outputs_in(args or []):
            message += f" (while writing {', '.join(_outputs_in(args or []))})"
        console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
        if hint:
            console.print(f"  hint: {hint}", markup=False, highlight=False, soft_wrap=True)
        return 1
    log = _write_log(err)
    where = f"; traceback in {log}" if log else ""
    console.print(f"[bold red]unexpected error:[/] {type(err).__name__}: "
                  f"{errors._one_line(err, 200)}{where}", markup=True, highlight=False, soft_wrap=True)
    console.print("  hint: this is probably a bug in cellkit; rerun with --debug (or CELLKIT_DEBUG=1) to see "
                  "the traceback, and report it with the log", markup=False, highlight=False, soft_wrap=True)
    return 2


def _is_usage_error(err: BaseException) -> bool:
    """Click's own errors (bad option, missing argument: typer shows them with the usage line)."""
    return hasattr(err, "show") and hasattr(err, "exit_code")


class HandledGroup(TyperGroup):
    """Typer group that routes exceptions from any command through `report`."""

    def invoke(self, ctx):
        set_debug(False)
        args = [str(a) for a in (*getattr(ctx, "_protected_args", ()), *ctx.args)]
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as err:  # noqa: BLE001 - the one place errors become messages
            if _state["debug"] or errors.debug_requested() or _is_usage_error(err):
                raise
            raise typer.Exit(report(err, args)) from None
