"""Plate index column names shared by the index and the image readers."""

from __future__ import annotations

import pandas as pd

PATH_PREFIX = "path_"  # one ``path_<channel>`` column per channel


def channels_of(index: pd.DataFrame) -> list[str]:
    """Channel names of a plate index, in column order (``path_DNA`` -> ``DNA``)."""
    return [c[len(PATH_PREFIX):] for c in index.columns if c.startswith(PATH_PREFIX)]
