"""Plan an extraction from the labels alone: which cells, in which order, at which store rows.

The plan is cheap (it reads each field's small label summary, not its label images) and
deterministic: fields in index order, cells in ascending label order. It fixes every cell's row
in the store before any crop is cut, so writers can own whole write blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from ..io.images import ImageReadError, image_shape
from ..io.labels import SUMMARY_VERSION, field_attributes, field_group, summarize_labels
from ..io.plate_index import PATH_PREFIX
from .crops import crop_origins, touches_border

OBS_METADATA = ["plate", "well", "site", "batch", "compound", "concentration", "moa", "field_id"]
BORDER_POLICIES = ("inside", "drop", "pad")
BORDER_HELP = ("inside: keep every cell whose mask does not touch the image edge, padding its crop with zeros "
               "where the window leaves the field; drop: keep only cells whose whole crop window lies inside "
               "the field; pad: keep every cell, edge-touching ones too")


class ExtractInputError(ValueError):
    """The inputs of an extraction are invalid. ``problems`` lists every problem found."""

    def __init__(self, problems: list[str], *, title: str = "cannot extract cells"):
        self.problems, self.title = list(problems), title
        shown = self.problems[:20]
        text = f"{title}: {len(self.problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in shown)
        if len(self.problems) > len(shown):
            text += f"\n  ... and {len(self.problems) - len(shown)} more"
        super().__init__(text)

    def __reduce__(self):  # keep problems and title when raised in a worker process
        return _rebuild_error, (self.problems, self.title)


def _rebuild_error(problems, title):
    return ExtractInputError(problems, title=title)


@dataclass
class FieldPlan:
    """The kept cells of one field: ``labels`` (n,) int64, ``centroids`` (n, 2), ``origins`` (n, 2)
    crop corners, ``border`` (n,) bool (window reaches outside the field: the crop is padded);
    ``dropped`` counts the objects left out, by reason."""

    field_id: str
    shape: tuple[int, int]
    labels: np.ndarray
    centroids: np.ndarray
    origins: np.ndarray
    border: np.ndarray
    n_objects: int
    dropped: dict | None = None

    @property
    def n_cells(self) -> int:
        return len(self.labels)


def plan_field(row: dict, labels_path: str, size: int, border: str) -> FieldPlan | str:
    """Plan one field (a plate index row as a dict); returns a problem message instead on bad input.

    Reads the field's ``objects`` summary from the label store (`cellkit.io.labels.summarize_labels`)
    without decoding its label images; a store written without summaries has its labels decoded.
    """
    field_id = row["field_id"]
    attrs = field_attributes(labels_path, field_id)  # the group's metadata document only
    if attrs is None:
        return f"{field_id}: labels are missing or incomplete in {labels_path}"
    summary = attrs.get("objects")
    if not isinstance(summary, dict) or summary.get("version") != SUMMARY_VERSION:
        group = field_group(labels_path, field_id)
        if group is None:
            return f"{field_id}: labels are missing or incomplete in {labels_path}"
        nuclei, cells = group["nuclei"], group["cells"]
        if nuclei.shape != cells.shape:
            return f"{field_id}: nuclei {nuclei.shape} and cells {cells.shape} labels differ in shape"
        summary = summarize_labels(nuclei[:], cells[:])
    shape = tuple(summary["shape"])
    paths = {k[len(PATH_PREFIX):]: v for k, v in row.items() if str(k).startswith(PATH_PREFIX)}
    for channel, path in paths.items():
        try:
            image = image_shape(path)
        except Exception as err:  # missing, corrupt, not a TIFF
            return str(ImageReadError(f"{field_id}: cannot read {channel} image {path}: {err}"))
        if tuple(image) != shape:
            return f"{field_id}: {channel} image is {tuple(image)} but its labels are {shape}"
    return plan_from_summary(field_id, summary, size, border)


def plan_from_summary(field_id: str, summary: dict, size: int, border: str) -> FieldPlan:
    """The plan of one field from its label summary (`cellkit.io.labels.summarize_labels`)."""
    centroids = np.stack([np.asarray(summary["centroid_y"], dtype=np.float64),
                          np.asarray(summary["centroid_x"], dtype=np.float64)], axis=1).reshape(-1, 2)
    return plan_from_arrays(field_id, tuple(summary["shape"]), np.asarray(summary["labels"], dtype=np.int64),
                            centroids, np.asarray(summary["edge_cells"], dtype=np.int64), size, border)


def plan_from_arrays(field_id: str, shape: tuple, labels: np.ndarray, centroids: np.ndarray, edge_cells: np.ndarray,
                     size: int, border: str) -> FieldPlan:
    """The plan of one field from its nucleus ``labels`` (n,) int64 ascending, their ``centroids`` (n, 2) float64
    (`cellkit.io.labels.label_centroids`) and the cell labels on the field edge (`cellkit.io.labels.edge_labels`)."""
    shape = tuple(int(n) for n in shape)
    origins = crop_origins(centroids, size)
    at_border = touches_border(origins, size, shape)
    dropped = {"touching_edge": 0, "crop_outside_field": 0}
    if border == "drop":
        keep = ~at_border
        dropped["crop_outside_field"] = int(at_border.sum())
    elif border == "inside":
        keep = ~np.isin(labels, edge_cells)
        dropped["touching_edge"] = int((~keep).sum())
    else:
        keep = np.ones(len(labels), bool)
    return FieldPlan(field_id, shape, labels[keep], centroids[keep], origins[keep], at_border[keep],
                     n_objects=len(labels), dropped=dropped)


def same_plan(a: FieldPlan, b: FieldPlan) -> bool:
    """True when two plans of a field keep the same cells at the same places."""
    return (a.shape == b.shape and np.array_equal(a.labels, b.labels) and np.array_equal(a.centroids, b.centroids)
            and np.array_equal(a.border, b.border) and a.n_objects == b.n_objects)


def plan_obs(index: pd.DataFrame, plans: list[FieldPlan]) -> pd.DataFrame:
    """The obs table of a plan: one row per kept cell, fields in index order, cells in label order.

    Columns: cell_id, plate, well, site, batch, compound, concentration, moa, field_id, label,
    centroid_y, centroid_x, crop_index, crop_padded (the crop window leaves the field: zeros there).
    """
    counts = np.array([p.n_cells for p in plans], dtype=np.int64)
    rows = np.repeat(np.arange(len(plans)), counts)
    meta = index[[c for c in OBS_METADATA if c in index.columns]].iloc[rows].reset_index(drop=True)
    cat = (lambda key: np.concatenate([getattr(p, key) for p in plans]) if plans else np.zeros(0))
    label = cat("labels").astype(np.int64)
    centroids = cat("centroids").reshape(-1, 2).astype(np.float64)
    obs = pd.DataFrame({
        "cell_id": meta["field_id"].astype(str).to_numpy() + "/" + label.astype(str),
        **{c: meta[c].to_numpy() for c in meta.columns},
        "label": label,
        "centroid_y": centroids[:, 0],
        "centroid_x": centroids[:, 1],
        "crop_index": np.arange(len(label), dtype=np.int64),
        "crop_padded": cat("border").astype(bool),
    })
    if obs["cell_id"].duplicated().any():
        dup = obs["cell_id"][obs["cell_id"].duplicated()].iloc[0]
        raise ExtractInputError([f"duplicate cell_id {dup}: field_id must be unique in the index"])
    return obs
