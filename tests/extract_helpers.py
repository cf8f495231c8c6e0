"""Shared pieces of the extraction tests: a measure test double and store comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

# small write blocks so that the small plate (~200 cells) spans several and fields straddle them
OPTIONS = dict(size=48, border="pad", chunk_cells=8, block_cells=32)


def measure_area_intensity(images, nuclei, cells, channels):
    """Test double of cellkit.features.measure_field: nucleus area and mean cell intensity per label."""
    labels = np.unique(nuclei)
    labels = labels[labels > 0]
    table = {"Nuclei_AreaShape_Area": ndi.sum_labels(np.ones(nuclei.shape), nuclei, labels)}
    for c, channel in enumerate(channels):
        table[f"Cells_Intensity_MeanIntensity_{channel}"] = ndi.mean(images[c].astype(float), cells, labels)
    return pd.DataFrame(table, index=labels.astype(int)).astype(np.float32)


def store_files(path: Path) -> dict[str, bytes]:
    """Every file of a store by relative path, with its bytes."""
    path = Path(path)
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def assert_same_store(a: Path, b: Path, ignore: tuple[str, ...] = ()) -> None:
    """Same files with the same bytes (except the relative paths in ``ignore``)."""
    files_a, files_b = store_files(a), store_files(b)
    for name in ignore:
        files_a.pop(name), files_b.pop(name)
    assert sorted(files_a) == sorted(files_b)
    different = [name for name in files_a if files_a[name] != files_b[name]]
    assert not different, f"files differ: {different[:5]}"
