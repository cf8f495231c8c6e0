"""``cellkit run``."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import SCHEDULER_HELP, WORKERS_HELP, console


def run(pipeline: Path = typer.Argument(..., help="Pipeline YAML file."),
        out: Path = typer.Option(None, "--out", "-o", help="Output folder (default: the pipeline's)."),
        scheduler: str = typer.Option(None, help=SCHEDULER_HELP),
        workers: int = typer.Option(None, help=WORKERS_HELP + " Default: 1 for segment, 2 for extract and "
                                    "synthetic input.")):
    """Run a pipeline; stages whose outputs are complete and up to date are skipped."""
    from ..workflows.pipeline import load_pipeline, run_pipeline

    spec = load_pipeline(pipeline)  # every problem of the YAML, before any stage runs
    outputs = run_pipeline(spec, out=out, scheduler=scheduler, workers=workers, progress="rich")
    console.print("[bold]outputs[/]")
    for name, path in outputs.items():
        console.print(f"  {name:<12} {path}")


def register(app: typer.Typer) -> None:
    app.command()(run)
