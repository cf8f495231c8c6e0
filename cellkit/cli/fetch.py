"""``cellkit fetch``."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, fail, progress_bar


def fetch(dataset: str = typer.Argument(..., help="Dataset name: bbbc021."),
          out: Path = typer.Option(..., "--out", "-o", help="Folder to download into."),
          plates: list[str] = typer.Option(None, "--plates", help="Plates to fetch (default: all). Repeat."),
          base_url: str = typer.Option(None, help="Mirror to download from (default: the Broad's BBBC site)."),
          keep_zips: bool = typer.Option(False, help="Keep plate zips after unpacking.")):
    """Download a public dataset (resumable; checks sizes and archives)."""
    from ..datasets.bbbc021 import BASE_URL, FetchError, fetch_bbbc021

    if dataset.lower() != "bbbc021":
        fail(f"unknown dataset {dataset!r}; available: bbbc021")
    try:
        with progress_bar("downloading") as update:
            fetch_bbbc021(out, plates=plates or None, base_url=base_url or BASE_URL, keep_zips=keep_zips,
                          progress=update)
    except FetchError as err:
        fail(str(err))
    console.print(f"BBBC021 in {out}; index it with: cellkit index {out}/BBBC021_v1_image.csv "
                  f"--moa {out}/BBBC021_v1_moa.csv --out index.parquet")


def register(app: typer.Typer) -> None:
    app.command()(fetch)
