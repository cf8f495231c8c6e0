"""Handcrafted morphology: CellProfiler-grade per-cell features, vectorised over objects.

`measure_field(images, nuclei, cells, channels, **options)` gives one row per cell with features
of the Nuclei, Cells and Cytoplasm compartments named as CellProfiler names them
(``Nuclei_AreaShape_Area``, ``Cells_Intensity_MeanIntensity_Actin``,
``Cytoplasm_Texture_Contrast_Tubulin_3_00``, ``Cells_Correlation_Correlation_DNA_Actin``).
`measure_crops(images, masks, channels)` measures the cell of each single-cell crop (cells.zarr rows).
See ``cellkit/features/README.md`` for definitions and how they compare to CellProfiler.
"""

from .crops import measure_crops
from .measure import COMPARTMENTS, GROUPS, compartment_labels, default_options, measure_field, undefined_report
from .table import to_anndata, to_pycytominer

__all__ = ["COMPARTMENTS", "GROUPS", "compartment_labels", "default_options", "measure_crops", "measure_field",
           "to_anndata", "to_pycytominer", "undefined_report"]
