"""``cellkit demo``."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import WORKERS_HELP, console


def demo(out: Path = typer.Argument(Path("demo_out"), help="Output folder."),
         seed: int = typer.Option(0, help="Random seed of the synthetic plate set."),
         workers: int = typer.Option(None, help=WORKERS_HELP + " Default: 1 for segment, 2 for extract and "
                                     "rendering.")):
    """Generate a synthetic plate set and run every cellkit stage on it (pipelines/demo.yaml)."""
    from dataclasses import replace

    from ..workflows import demo as demo_module

    outputs = demo_module.run_demo(out, replace(demo_module.DEMO_CONFIG, seed=seed),
                                   workers=workers, progress="rich")
    console.print("[bold]outputs[/]")
    for name, path in outputs.items():
        console.print(f"  {name:<12} {path}")


def register(app: typer.Typer) -> None:
    app.command()(demo)
