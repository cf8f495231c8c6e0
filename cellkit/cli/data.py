"""``cellkit synth`` and ``cellkit index``."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import WORKERS_HELP, console, fail, parse_pairs, progress_bar


def synth(
    out: Path = typer.Argument(..., help="New folder for the plate set."),
    batches: int = typer.Option(2, help="Number of batches (weeks)."),
    plates_per_batch: int = typer.Option(2, help="Replicate plates per batch."),
    compounds_per_moa: int = typer.Option(3, help="Compounds per MOA (1-4)."),
    moas: int = typer.Option(12, help="Number of MOAs (1-12)."),
    concentrations: int = typer.Option(2, help="Concentrations per compound."),
    dmso_wells: int = typer.Option(4, help="DMSO wells per plate."),
    sites: int = typer.Option(1, help="Fields (sites) per well."),
    height: int = typer.Option(512, help="Field height in pixels."),
    width: int = typer.Option(640, help="Field width in pixels."),
    seed: int = typer.Option(0, help="Random seed."),
    batch_effect: float = typer.Option(1.0, help="Strength of the batch effects (stain, background, illumination, "
                                       "focus, cell state, gain), 0-3; 0 = none."),
    batch_gain: float = typer.Option(0.4, help="Sd of each batch's log gain on every parameter of a compound's "
                                     "effect (a batch x compound interaction), 0-1; 0 = none."),
    workers: int = typer.Option(2, help=WORKERS_HELP + " Threads."),
):
    """Write a synthetic BBBC021-like plate set with ground-truth labels."""
    from ..datasets import SyntheticConfig, write_synthetic_plate

    try:
        config = SyntheticConfig(n_batches=batches, plates_per_batch=plates_per_batch,
                                 compounds_per_moa=compounds_per_moa, n_moas=moas, n_concentrations=concentrations,
                                 dmso_wells=dmso_wells, sites=sites, height=height, width=width, seed=seed,
                                 batch_effect=batch_effect, batch_gain=batch_gain).validate()
        with progress_bar("rendering fields") as update:
            write_synthetic_plate(out, config, workers=workers, progress=update)
    except (ValueError, FileExistsError) as err:
        fail(str(err))
    console.print(f"plate set written to {out}")


def index(
    source: Path = typer.Argument(..., help="BBBC021 image CSV, a generic CSV/parquet, an OME-Zarr HCS plate "
                                            "(or a folder of them), or (with --pattern) the image root."),
    out: Path = typer.Option(..., "--out", "-o", help="Output parquet file."),
    root: Path = typer.Option(None, help="Image root (default: the folder holding SOURCE)."),
    moa: Path = typer.Option(None, help="BBBC021 MOA CSV (compound, concentration, moa)."),
    pattern: str = typer.Option(None, help="File pattern under SOURCE, e.g. '{plate}/{well}_s{site}_w{channel}*.tif'."),
    channel: list[str] = typer.Option([], help="Channel: NAME=COLUMN (CSV) or TOKEN=NAME (pattern). Repeat."),
    column: list[str] = typer.Option([], help="Metadata column for a generic CSV: NAME=COLUMN. Repeat."),
    metadata: Path = typer.Option(None, help="CSV/parquet of batch/compound/concentration/moa to join on the "
                                             "index's plate, well (and site / field_id when the table has them)."),
    metadata_on: str = typer.Option(None, help="Comma-separated key columns of --metadata (default: those of "
                                               "plate, well, site, field_id it has)."),
    check_shapes: bool = typer.Option(False, help="Also read every TIFF header and check shapes."),
):
    """Build and validate a plate index (one row per field) and save it as parquet.

    An OME-Zarr HCS plate is indexed in place: channel names come from its omero metadata and every
    stage reads the fields from the plate.
    """
    import pandas as pd

    from .. import io
    from .._atomic import check_output

    check_output(out, "file")
    try:
        if pattern:
            index = io.from_pattern(source, pattern, channels=parse_pairs(channel, "--channel"))
        elif source.is_dir():  # OME-Zarr HCS: fields are read from the plate itself, lazily
            index = io.from_omezarr(source)
        else:
            head = pd.read_csv(source, nrows=0).columns if source.suffix != ".parquet" else []
            root = root or source.parent
            if "Image_FileName_DAPI" in head:
                index = io.from_bbbc021(source, moa, root)
            else:
                if not channel:
                    fail("a generic table needs --channel NAME=COLUMN for each channel")
                index = io.from_csv(source, root=root, channels=parse_pairs(channel, "--channel"),
                                    columns=parse_pairs(column, "--column"))
        if metadata is not None:
            index = io.join_metadata(index, metadata, on=metadata_on.split(",") if metadata_on else None)
            index = io.plate_index.finalize_index(index, check_files=False)
            missing = int(index["compound"].isna().sum())
            if missing:
                console.print(f"[yellow]note:[/] {missing} of {len(index)} fields have no compound in {metadata}")
        if check_shapes:
            io.validate_index(index, check_shapes=True)
    except (io.PlateIndexError, FileNotFoundError) as err:
        fail(str(err))
    except UnicodeDecodeError as err:
        fail(f"{source} is not UTF-8 text (byte {err.start}); save the table as UTF-8 CSV")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        reason = " ".join(str(err).split()).removeprefix("Error tokenizing data. ")
        fail(f"{source} is not a readable CSV table ({reason}); check that it is the plate's image table")
    io.write_index(index, out)
    console.print(f"{len(index)} fields, {index.plate.nunique()} plates, {index.compound.nunique()} compounds, "
                  f"channels {io.channels_of(index)} -> {out}")


def register(app: typer.Typer) -> None:
    app.command()(synth)
    app.command()(index)
