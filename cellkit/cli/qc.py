"""``cellkit qc`` (focus, saturation, intensity and empty-field flags per field and channel) and
``cellkit illumination`` (flat-field estimate per plate and channel, and the corrected fields)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, fail, progress_bar


def qc(
    source: Path = typer.Argument(..., help="Plate index (.parquet/.csv) or a folder of single-channel images."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for qc.csv, qc_fields.csv and qc_plate_map.png."),
    saturation: float = typer.Option(None, help="Saturated pixel value (default: the dtype maximum, 65535 for "
                                     "uint16; give 4095 for 12-bit data)."),
    blur_z: float = typer.Option(3.0, help="Flag blurry when the focus robust z within plate and channel < -BLUR_Z."),
    saturated: float = typer.Option(1e-3, help="Flag saturated when this fraction of pixels is at saturation."),
    empty: float = typer.Option(1e-3, help="Flag empty when the foreground fraction is below this."),
    regex: str = typer.Option(None, help="Folder input: regex with (?P<well>...) and (?P<site>...) groups."),
    workers: int = typer.Option(2, help="Fields read in parallel (results do not depend on it)."),
    figure: bool = typer.Option(True, "--figure/--no-figure", help="Write the plate-map figure."),
):
    """Measure image quality of every field and channel, flag blurry, saturated and empty fields."""
    from ..qc import FLAGS, qc_plate
    from ..workflows.qc import write_qc

    try:
        index = _read_index(source, regex)
        with progress_bar("qc") as update:
            table = qc_plate(index, saturation=saturation, workers=workers, progress=update, blur_z=blur_z,
                             saturated=saturated, empty=empty)
        paths = write_qc(table, out, figure=figure)
    except (FileNotFoundError, ValueError, KeyError, OSError) as err:
        fail(str(err).strip("'\""))
    fields = table.groupby("field_id")[list(FLAGS) + ["qc_pass"]].agg({**{f: "any" for f in FLAGS}, "qc_pass": "all"})
    counts = ", ".join(f"{int(fields[f].sum())} {f}" for f in FLAGS)
    console.print(f"{len(fields)} fields: {int((~fields.qc_pass).sum())} flagged ({counts})")
    console.print(f"QC written to {', '.join(str(p) for p in paths.values())}")


def _read_index(source: Path, regex: str | None = None):
    from .. import io

    if source.is_dir():
        return io.from_folder(source, regex=regex)
    if source.suffix == ".parquet":
        return io.read_index(source, check_files=True)
    import pandas as pd

    index = pd.read_csv(source)
    io.validate_index(index, check_files=True)
    return index


def illumination(
    source: Path = typer.Argument(..., help="Plate index (.parquet/.csv) or a folder of single-channel images."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for <plate>.tif flat fields, illumination.json/.png."),
    aggregate: str = typer.Option("median", help="Per-pixel median (default) or mean (CellProfiler Regular) of the fields."),
    smoothing: str = typer.Option("median", help="median (window min(H,W)/4) or gaussian (sigma min(H,W)/8)."),
    size: float = typer.Option(None, help="Gaussian sigma or median window in pixels (default from the field size)."),
    apply: Path = typer.Option(None, help="Also write the corrected fields (same dtype) under this folder ..."),
    index_out: Path = typer.Option(None, help="... and their plate index (parquet) here."),
    regex: str = typer.Option(None, help="Folder input: regex with (?P<well>...) and (?P<site>...) groups."),
    workers: int = typer.Option(2, help="Fields read in parallel (results do not depend on it)."),
):
    """Estimate each plate's illumination per channel (mean of its fields, heavily smoothed) and divide it out."""
    from .. import io
    from ..illumination import correct_index, estimate_illumination, save_illumination

    if (apply is None) != (index_out is None):
        fail("--apply and --index-out go together")
    try:
        index = _read_index(source, regex)
        with progress_bar("illumination") as update:
            fields = estimate_illumination(index, aggregate=aggregate, smoothing=smoothing, size=size, workers=workers,
                                           progress=update)
        save_illumination(fields, io.channels_of(index), out,
                          attrs={"aggregate": aggregate, "smoothing": smoothing,
                                 "size": size, "source": str(source)})
        console.print(f"{len(fields)} illumination fields written to {out}")
        if apply is not None:
            with progress_bar("correcting") as update:
                corrected = correct_index(index, fields, apply, workers=workers, progress=update)
            io.write_index(corrected, index_out)
            console.print(f"{len(corrected)} corrected fields under {apply}, index {index_out}")
    except (FileNotFoundError, ValueError, KeyError, OSError) as err:
        fail(str(err).strip("'\""))


def register(app: typer.Typer) -> None:
    app.command()(qc)
    app.command()(illumination)
