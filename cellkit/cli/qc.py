"""``cellkit qc``: focus, saturation, intensity and empty-field measures and flags per field and channel."""

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
    from .. import io
    from ..qc import FLAGS, qc_plate, write_qc

    try:
        if source.is_dir():
            index = io.from_folder(source, regex=regex)
        elif source.suffix == ".parquet":
            index = io.read_index(source, check_files=True)
        else:
            import pandas as pd

            index = pd.read_csv(source)
            io.validate_index(index, check_files=True)
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


def register(app: typer.Typer) -> None:
    app.command()(qc)
