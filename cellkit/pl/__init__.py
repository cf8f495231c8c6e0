"""Plots, scanpy style: each function draws on matplotlib (Agg backend) and returns its Figure.

``show=True`` calls ``plt.show()`` (a no-op under Agg); ``save=PATH`` writes the figure
(any matplotlib format, by suffix). Figures are left open for the caller; close them with
``plt.close(fig)``.

- profiles (`umap`, `moa_distribution`, `compound_counts`, `concentration_histogram`,
  `confusion_matrix`, `channel_comparison`);
- cells (`example_cells`, `cell_montage`, `montage_rgb`);
- robustness (`robustness`, `embedding_similarity`, `robustness_umap`).
"""

import matplotlib

if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "module://matplotlib_inline.backend_inline"):
    matplotlib.use("Agg")

from ._cells import CHANNEL_COLORS, cell_montage, example_cells, montage_rgb  # noqa: E402
from ._profiles import (  # noqa: E402
    channel_comparison, compound_counts, concentration_histogram, confusion_matrix, moa_distribution, umap,
)
from ._robustness import embedding_similarity, robustness, robustness_umap  # noqa: E402

__all__ = ["CHANNEL_COLORS", "cell_montage", "channel_comparison", "compound_counts", "concentration_histogram",
           "confusion_matrix", "embedding_similarity", "example_cells", "moa_distribution", "montage_rgb",
           "robustness", "robustness_umap", "umap"]
