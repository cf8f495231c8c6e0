"""Synthetic BBBC021-like plates with ground truth."""

from .phenotypes import CONTROL, MOA_COMPOUNDS, MOA_EFFECTS, MOAS, phenotype
from .render import CHANNELS, render_field
from .synthetic import (
    SyntheticConfig,
    ground_truth_paths,
    plate_layout,
    render_layout_field,
    synthetic_index,
    write_ground_truth_labels,
    write_synthetic_plate,
)

__all__ = [
    "CHANNELS", "CONTROL", "MOAS", "MOA_COMPOUNDS", "MOA_EFFECTS", "SyntheticConfig", "ground_truth_paths",
    "phenotype", "plate_layout", "render_field", "render_layout_field", "synthetic_index", "write_ground_truth_labels",
    "write_synthetic_plate",
]
