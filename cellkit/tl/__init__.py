"""Tools, scanpy style: aggregate profiles, score them against MOA labels, cluster, search, robustness.

- `aggregate` (``_aggregate``): cells -> wells -> treatments (mean or median), in memory or out of core.
- `moa_accuracy`, `mean_average_precision`, `loco_classification` (``_moa``): 1-NN cosine NSC / NSCB
  (rules in BENCHMARKS.md), copairs' mAP, leave-one-compound-out classification.
- `cluster`, `marker_features` (``_cluster``): scanpy neighbors + Leiden + UMAP; marker features.
- `build_index`, `search` (``_search``): FAISS similarity search.
- `robustness`, `robustness_summary` (``_robustness``, imports torch: loaded on first use).
"""

from ._aggregate import aggregate
from ._cluster import cluster, marker_features
from ._moa import (
    MoaAccuracy, Scores, average_precision_ranks, cosine_similarity, loco_classification, mean_average_precision,
    moa_accuracy, nearest_allowed,
)
from ._search import SimilarityIndex, build_index, build_similarity_index, recall_at_k, search

# names of `_robustness` (torch): imported on first use
_LAZY = {"robustness", "robustness_summary", "RobustnessResult", "HandcraftedEmbedder"}

__all__ = ["HandcraftedEmbedder", "MoaAccuracy", "RobustnessResult", "Scores", "SimilarityIndex", "aggregate",
           "average_precision_ranks", "build_index", "build_similarity_index", "cluster", "cosine_similarity",
           "loco_classification", "marker_features", "mean_average_precision", "moa_accuracy", "nearest_allowed",
           "recall_at_k", "robustness", "robustness_summary", "search"]


def __getattr__(name):
    if name in _LAZY:
        from . import _robustness

        return getattr(_robustness, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
