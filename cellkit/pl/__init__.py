"""Plots, scanpy style: each function draws with matplotlib and returns its Figure.

Importing ``cellkit.pl`` leaves the matplotlib backend as the user set it: ``show=True`` calls
``plt.show()`` (a window, or inline in Jupyter); ``save=PATH`` writes the figure
(any matplotlib format, by suffix). Figures are left open for the caller; close them with
``plt.close(fig)``.

- profiles (`umap`, `moa_distribution`, `compound_counts`, `concentration_histogram`,
  `confusion_matrix`, `channel_comparison`);
- cells (`example_cells`, `cell_montage`, `montage_rgb`);
- robustness (`robustness`, `embedding_similarity`, `robustness_umap`, `robustness_pairs` (t-SNE or UMAP,
  clean-perturbed pairs joined)), `similarity_heatmap` (cosine similarity of any representation);
- images (`qc_plate_map`, `illumination`).
"""

from ._cells import CHANNEL_COLORS, cell_montage, example_cells, montage_rgb
from ._images import illumination, qc_plate_map
from ._profiles import (
    channel_comparison, compound_counts, concentration_histogram, confusion_matrix, moa_distribution, umap,
)
from ._robustness import embedding_similarity, robustness, robustness_pairs, robustness_umap, similarity_heatmap

__all__ = ["CHANNEL_COLORS", "cell_montage", "channel_comparison", "compound_counts", "concentration_histogram",
           "confusion_matrix", "embedding_similarity", "example_cells", "illumination", "moa_distribution",
           "montage_rgb", "qc_plate_map", "robustness", "robustness_pairs", "robustness_umap", "similarity_heatmap",
           "umap"]
