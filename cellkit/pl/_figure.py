"""What every plot shares: finishing (layout, save, show), categorical order and palette, row names.

Nothing here selects a matplotlib backend: plots draw on whatever backend the user has (a terminal
without a display gets matplotlib's own non-interactive fallback).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

PALETTE_SIZE = 20  # distinct colours (tab20); more categories repeat colours


def _finish(fig, show: bool, save: str | os.PathLike | None, *, tight: bool = True):
    if tight:
        fig.tight_layout()
    if save:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save, dpi=120, bbox_inches="tight")  # legends and long labels outside the axes stay in
    if show:
        plt.show()
    return fig


def natural_key(text: str):
    """Sort key that orders numbers inside text by value: 0, 1, 2, 10, 11 and plate2 < plate10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", str(text))]


def categories(values: pd.Series) -> list[str]:
    """The categories of ``values`` in display order: a categorical's own order, else natural order."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        present = set(values.dropna().astype(str))
        return [str(c) for c in values.cat.categories if str(c) in present]
    return sorted(values.dropna().astype(str).unique(), key=natural_key)


def _palette(values: pd.Series) -> dict:
    cats = categories(values)
    cmap = plt.get_cmap("tab20" if len(cats) > 10 else "tab10")
    return {c: cmap(i % cmap.N) for i, c in enumerate(cats)}


def row_kind(adata) -> str:
    """What the rows of ``adata`` are, for axis labels: ``cells``, ``wells``, ``treatments`` or ``profiles``."""
    record = adata.uns.get("cellkit", {}).get("aggregate") if hasattr(adata, "uns") else None
    if record is None:
        return "profiles" if "n_cells" in adata.obs else "cells"
    by = [str(b) for b in record.get("by", [])]
    return "wells" if "well" in by else "treatments"
