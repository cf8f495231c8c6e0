"""``cellkit demo``."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console


def demo(out: Path = typer.Argument(Path("demo_out"), help="Output folder."),
         seed: int = typer.Option(0, help="Random seed of the synthetic plate set.")):
    """Generate a synthetic plate set and run every cellkit stage on it."""
    from dataclasses import replace

    from ..demo import DEMO_CONFIG, run_demo

    outputs = run_demo(out, replace(DEMO_CONFIG, seed=seed), log=console.print)
    console.print("[bold]outputs[/]")
    for name, path in outputs.items():
        console.print(f"  {name:<12} {path}")


def register(app: typer.Typer) -> None:
    app.command()(demo)
