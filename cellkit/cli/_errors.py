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

import click
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


def report(err: BaseException) -> int:
    """Print ``err`` as one line (plus a hint line) on stderr; return the exit status."""
    from ._common import console

    described = errors.describe(err)
    if described is not None:
        message, hint = described
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


class HandledGroup(TyperGroup):
    """Typer group that routes exceptions from any command through `report`."""

    def invoke(self, ctx: click.Context):
        set_debug(False)
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, typer.Exit, SystemExit):
            raise
        except KeyboardInterrupt:
            raise
        except Exception as err:  # noqa: BLE001 - the one place errors become messages
            if _state["debug"] or errors.debug_requested():
                raise
            raise typer.Exit(report(err)) from None
