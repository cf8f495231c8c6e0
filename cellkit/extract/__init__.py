"""The per-field pass: cut every cell out of a plate into cells.zarr, with per-cell features.

``cellkit.extract.extract_cells(index, labels, out, ...)`` is the library function behind
``cellkit extract``; see `cellkit.extract.run` for how writing stays parallel, safe and
resumable.
"""

from .adata import cells_adata, write_cells_adata
from .crops import crop_origins, cut_crops, nucleus_centroids, touches_border
from .run import ExtractResult, extract_cells
from .plan import ExtractInputError, FieldPlan, plan_field, plan_obs

__all__ = [
    "ExtractInputError", "ExtractResult", "FieldPlan", "cells_adata", "crop_origins", "cut_crops",
    "extract_cells", "nucleus_centroids", "plan_field", "plan_obs", "touches_border", "write_cells_adata",
]
