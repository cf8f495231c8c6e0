"""What every plot shares: finishing (layout, save, show) and a categorical palette."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd


def _finish(fig, show: bool, save: str | os.PathLike | None, *, tight: bool = True):
    if tight:
        fig.tight_layout()
    if save:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save, dpi=120)
    if show:
        plt.show()
    return fig


def _palette(values: pd.Series) -> dict:
    cats = sorted(values.dropna().astype(str).unique())
    cmap = plt.get_cmap("tab20" if len(cats) > 10 else "tab10")
    return {c: cmap(i % cmap.N) for i, c in enumerate(cats)}
