"""``cellkit extract``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..extract.plan import BORDER_HELP
from ._common import SCHEDULER_HELP, WORKERS_HELP, console, fail, progress_bar


def _feature_function():
    try:
        from ..features import measure_field
    except ImportError as err:
        fail(f"per-cell features need cellkit.features.measure_field, which cannot be imported ({err}); "
             "run with --no-features to write crops only")
    return measure_field


def extract(
    index: Path = typer.Argument(..., help="Plate index (parquet, from `cellkit index`)."),
    labels: Path = typer.Argument(..., help="Label store (labels.zarr)."),
    out: Path = typer.Option(..., "--out", "-o", help="Single-cell store to write (cells.zarr)."),
    size: int = typer.Option(64, help="Crop side in pixels, centred on the nucleus centroid."),
    border: str = typer.Option("inside", help="Border cells. " + BORDER_HELP + " (padded crops: obs "
                                              "'crop_padded')."),
    mask_neighbors: bool = typer.Option(False, "--mask-neighbors/--keep-neighbors",
                                        help="Zero the pixels of neighbouring cells in each crop."),
    features: bool = typer.Option(True, "--features/--no-features",
                                  help="Measure per-cell morphology in the same pass and write an AnnData."),
    adata: Path = typer.Option(None, help="AnnData to write with the features (default: OUT with suffix .h5ad)."),
    workers: int = typer.Option(1, help=WORKERS_HELP),
    processes: bool = typer.Option(False, "--processes/--threads", help="Local workers are processes or threads."),
    scheduler: str = typer.Option(None, help=SCHEDULER_HELP),
    overwrite: bool = typer.Option(False, help="Replace a store at OUT made from other inputs or parameters."),
):
    """Cut every cell out of a plate into a single-cell Zarr store (resumes an interrupted run)."""
    from ..extract import ExtractInputError, extract_cells
    from ..io import PlateIndexError
    from ..io.images import ImageReadError

    if scheduler and workers != 1:
        fail("give either --workers or --scheduler, not both")
    if not index.exists():
        fail(f"no plate index at {index}")
    measure = _feature_function() if features else None
    try:
        with progress_bar("extracting cells") as update:
            result = extract_cells(index, labels, out, size=size, border=border, mask_neighbors=mask_neighbors,
                                   measure=measure, adata=adata, workers=workers, processes=processes,
                                   scheduler=scheduler, overwrite=overwrite, progress=update)
    except (ExtractInputError, PlateIndexError, ImageReadError, ValueError, OSError) as err:
        fail(f"{err}\n{out} is left incomplete or unchanged; fix the problem and run the same command again"
             if out.exists() else str(err))
    if result.empty_fields:
        console.print(f"[yellow]note:[/] {len(result.empty_fields)} field(s) had no cells to keep, e.g. "
                      f"{result.empty_fields[0]}")
    console.print(f"{result.n_cells} cells from {result.n_fields} fields -> {result.store}"
                  + (f" and {result.adata}" if result.adata else ""))


def register(app: typer.Typer) -> None:
    app.command()(extract)
