"""Segmentation: nuclei and cells per field, two backends behind one interface.

- `get_segmenter` (``classical``, ``cellpose``, ``auto``) -> a `Segmenter` with
  ``segment_field(image (C, H, W), channels)`` and ``segment_nuclei([image (H, W), ...])``.
- `segment_plate`: every field of a plate index into ``labels.zarr`` (dask, resumable, QC table).
- `train_segmenter`: train a Cellpose network from image/mask pairs.
- `score_images`, `match_counts`, `iou_matrix`: average precision at IoU thresholds.
"""

from .backends import (BACKENDS, CellposeSegmenter, ClassicalSegmenter, FieldSegmentation, Segmenter,
                       get_segmenter)
from .cellpose_backend import (ModelArchitectureError, WeightsNotFoundError, cellpose_model_dir, resolve_model,
                               weights_available)
from .classical import ClassicalParams, estimate_nucleus_diameter, segment_cells, segment_nuclei, segment_nuclei_local
from .matching import average_precision, iou_matrix, match_counts, overlap_pairs, score_images
from .objects import border_labels, pair_nuclei_cells
from .plate import qc_path, segment_plate

__all__ = [
    "BACKENDS", "CellposeSegmenter", "ClassicalSegmenter", "ClassicalParams", "FieldSegmentation", "Segmenter",
    "ModelArchitectureError", "WeightsNotFoundError", "average_precision", "border_labels", "cellpose_model_dir",
    "estimate_nucleus_diameter", "get_segmenter", "iou_matrix", "match_counts", "overlap_pairs", "pair_nuclei_cells",
    "qc_path", "resolve_model",
    "score_images", "segment_cells", "segment_nuclei", "segment_nuclei_local", "segment_plate", "weights_available",
    "train_segmenter",
]


def __getattr__(name):
    if name in ("train_segmenter", "load_image_mask_pairs"):
        from . import train

        return getattr(train, name)
    raise AttributeError(name)
