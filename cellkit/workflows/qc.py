"""The QC report: a `cellkit.qc` table -> ``qc.csv``, ``qc_fields.csv`` and the plate map figure."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def write_qc(table: pd.DataFrame, out: str | os.PathLike, *, figure: bool = True) -> dict[str, Path]:
    """Write ``qc.csv`` (per field and channel), ``qc_fields.csv`` (per field) and ``qc_plate_map.png``."""
    from .._atomic import atomic_path
    from ..qc import field_table

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"table": out / "qc.csv", "fields": out / "qc_fields.csv"}
    with atomic_path(paths["table"]) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(paths["fields"]) as tmp:
        field_table(table).to_csv(tmp, index=False)
    if figure:
        import matplotlib.pyplot as plt

        from ..pl import qc_plate_map

        paths["figure"] = out / "qc_plate_map.png"
        fig = qc_plate_map(table)
        fig.savefig(paths["figure"], dpi=110, bbox_inches="tight")

        plt.close(fig)
    return paths
