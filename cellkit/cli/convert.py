"""``cellkit convert``: a plate index (TIFF or OME-Zarr fields) -> OME-Zarr HCS plates."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, fail, progress_bar


def convert(
    index: Path = typer.Argument(..., help="Plate index (parquet from `cellkit index`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the plates (one <plate>.ome.zarr each); "
                                                       "a rerun resumes it."),
    levels: int = typer.Option(None, min=0, max=8, help="Downsampled pyramid levels (default: until the longer "
                                                        "side would drop under 256 px, at most 4)."),
    chunk: int = typer.Option(1024, min=16, help="Chunk edge in pixels (one channel per chunk)."),
):
    """Write every field as an OME-Zarr (NGFF 0.5) HCS plate: chunked, multiscale, pixels unchanged."""
    from ..io import PlateIndexError, read_index
    from ..io.omezarr_write import write_plate

    try:
        plate_index = read_index(index, check_files=True)
    except (PlateIndexError, FileNotFoundError) as err:
        fail(f"cannot read plate index {index}: {err}")
    try:
        with progress_bar("converting fields", total=len(plate_index)) as update:
            summary = write_plate(plate_index, out, levels=levels, chunk=chunk, progress=update)
    except ValueError as err:
        fail(str(err))
    console.print(f"{summary['fields']} fields ({summary['written']} written now) in "
                  f"{len(summary['plates'])} plate(s) -> {out}")


def register(app: typer.Typer) -> None:
    app.command()(convert)
