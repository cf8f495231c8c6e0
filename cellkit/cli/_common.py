"""Shared pieces of the CLI: console, progress bars, error reporting."""

from __future__ import annotations

from contextlib import contextmanager

import typer
from rich.console import Console

console = Console(stderr=True)

# --workers and --scheduler mean the same in every command (`cellkit._parallel.Runner`).
WORKERS_HELP = "Local dask workers: tasks (fields) run at once on this machine; 1 runs in this process."
SCHEDULER_HELP = "Address of a running dask distributed scheduler (tcp://host:8786); overrides --workers."


@contextmanager
def progress_bar(description: str, total: int | None = None):
    """Yield ``update(n_done, n_total)`` that drives a rich progress bar with an ETA (`cellkit._progress`)."""
    from .._progress import progress_bar as bar

    with bar("rich", description, total, console=console) as update:
        yield update


def fail(message: str, code: int = 1):
    """Print an error without a traceback and exit non-zero."""
    console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def parse_pairs(items: list[str], option: str) -> dict[str, str]:
    """``["a=b", "c=d"]`` -> ``{"a": "b", "c": "d"}``; a malformed item is a clear error naming ``option``."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            fail(f"{option} must look like NAME=VALUE, got {item!r}")
        pairs[key] = value
    return pairs
