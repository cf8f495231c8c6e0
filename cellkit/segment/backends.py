"""One interface over the segmentation backends.

A segmenter turns fields, (C, H, W) arrays with named channels, into paired nucleus and cell
labels (nucleus k inside cell k), and single-channel images into nucleus labels.
``get_segmenter("classical" | "cellpose" | "auto", ...)`` builds one.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from skimage import segmentation

from . import cellpose_backend as cpb
from ._fast import one_cv2_thread
from .classical import ClassicalParams, segment_cells, segment_nuclei
from .empty import drop_faint, evidence_maps, field_is_empty, has_foreground
from .objects import border_labels, pair_nuclei_cells

BACKENDS = ("classical", "cellpose", "auto")

# Channel names (case-insensitive) taken as the nuclear stain / cell stains when roles are not given.
NUCLEAR_NAMES = ("dna", "dapi", "hoechst", "h33342", "nuclei", "nucleus", "nuclear")
CELL_NAMES = ("actin", "phalloidin", "tubulin", "cellmask", "membrane", "wga", "cytoplasm", "cellbody", "cells",
              "cell")


def resolve_roles(channels: list[str], nuclear_channel: str | None = None,
                  cytoplasm_channels: tuple[str, ...] | list[str] | None = None) -> tuple[str, tuple[str, ...]]:
    """The nuclear channel and the cell (cytoplasm) channels of a field with ``channels``.

    Given roles are checked against ``channels``. Missing ones are inferred where unambiguous:
    the nuclear channel is the only channel, or the only one named like a DNA stain
    (`NUCLEAR_NAMES`); the cell channels are those named like a cell stain (`CELL_NAMES`, in
    that order: cortical stains first, as the first is the boundary stain), none otherwise
    (a nuclei-only plate). ``cytoplasm_channels=()`` means explicitly none.
    Raises ValueError naming the options to pass.
    """
    channels = list(channels)
    if nuclear_channel is None:
        named = [c for c in channels if c.lower() in NUCLEAR_NAMES]
        if len(channels) == 1:
            nuclear_channel = channels[0]
        elif len(named) == 1:
            nuclear_channel = named[0]
        else:
            raise ValueError(f"cannot tell which of the channels {channels} holds the nuclei; pass it "
                             "(--nuclei-channel NAME, or nuclear_channel=)")
    elif nuclear_channel not in channels:
        raise ValueError(f"nuclei channel {nuclear_channel!r} is not among the field's channels {channels}")
    if cytoplasm_channels is None:
        rank = {name: i for i, name in enumerate(CELL_NAMES)}
        cytoplasm_channels = sorted((c for c in channels if c.lower() in rank and c != nuclear_channel),
                                    key=lambda c: rank[c.lower()])
    else:
        cytoplasm_channels = [cytoplasm_channels] if isinstance(cytoplasm_channels, str) else list(cytoplasm_channels)
        unknown = [c for c in cytoplasm_channels if c not in channels]
        if unknown:
            raise ValueError(f"cell channel(s) {unknown} not among the field's channels {channels}")
        if nuclear_channel in cytoplasm_channels:
            raise ValueError(f"channel {nuclear_channel!r} cannot be both the nuclei and a cell channel")
    return nuclear_channel, tuple(cytoplasm_channels)


@dataclass
class FieldSegmentation:
    """Labels of one field: ``nuclei`` and ``cells`` uint32 (H, W), nucleus k inside cell k;
    ``border`` the labels touching the field border (int64); ``notes`` what was unusual;
    ``empty`` True when the nuclear channel has no foreground above its own noise
    (`cellkit.segment.empty`), so that the field has 0 objects by decision, not by failure."""

    nuclei: np.ndarray
    cells: np.ndarray
    border: np.ndarray
    notes: list[str] = field(default_factory=list)
    empty: bool = False

    @property
    def n_objects(self) -> int:
        return int(self.cells.max(initial=0))


def check_field(image: np.ndarray, channels: list[str]) -> np.ndarray:
    """Validate a field: (C, H, W), integer or float dtype, finite, one name per channel."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] != len(channels):
        raise ValueError(f"expected a (C, H, W) field with C = {len(channels)} channels {channels}, "
                         f"got shape {image.shape}")
    if image.dtype == np.bool_ or not (np.issubdtype(image.dtype, np.integer)
                                       or np.issubdtype(image.dtype, np.floating)):
        raise TypeError(f"unsupported image dtype {image.dtype}; expected integer (uint8/uint16) or float")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise ValueError("the field has NaN or infinite pixel values")
    if min(image.shape[1:]) < 16:
        raise ValueError(f"field of {image.shape[1:]} px is too small to segment")
    return image


@dataclass
class Segmenter:
    """Base class. Channel roles: ``nuclear_channel`` (None: inferred) and ``cytoplasm_channels``
    (None: inferred; ``()``: none; the first is the boundary stain), see `resolve_roles`.
    Without cell channels, cells are the nuclei grown by ``cell_expand`` px (CellProfiler's
    IdentifySecondaryObjects "Distance - N"; 0: the cells are the nuclei)."""

    nuclear_channel: str | None = None
    cytoplasm_channels: tuple[str, ...] | None = None
    cell_expand: int = 0
    params: ClassicalParams = field(default_factory=ClassicalParams)
    name = "base"

    def describe(self) -> dict:
        """Backend name and parameters, JSON-serialisable (for store attributes)."""
        d = {"backend": self.name, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}}
        if self.cytoplasm_channels is not None:
            d["cells_from"] = ("propagation over " + ", ".join(self.cytoplasm_channels) if self.cytoplasm_channels
                               else f"nuclei expanded by {self.cell_expand} px" if self.cell_expand else "nuclei")
        return d

    def with_roles(self, channels: list[str]) -> "Segmenter":
        """A copy with the channel roles resolved for ``channels`` (see `resolve_roles`)."""
        nuclear, cyto = resolve_roles(channels, self.nuclear_channel, self.cytoplasm_channels)
        if self.cell_expand < 0:
            raise ValueError(f"cell_expand must be >= 0 px, got {self.cell_expand}")
        if cyto and self.cell_expand:
            raise ValueError(f"cell_expand ({self.cell_expand} px) applies to plates without cell channels, "
                             f"but cell channels {list(cyto)} are used; pass no cell channels (--cell-channels none) "
                             "to expand the nuclei instead")
        return dataclasses.replace(self, nuclear_channel=nuclear, cytoplasm_channels=cyto)

    def _roles(self, channels: list[str]) -> tuple[int, list[int]]:
        resolved = self.with_roles(channels)
        nuclear, cyto = resolved.nuclear_channel, resolved.cytoplasm_channels
        return channels.index(nuclear), [channels.index(c) for c in cyto]

    def _grow(self, nuclei: np.ndarray, planes: list[np.ndarray], params: ClassicalParams) -> np.ndarray:
        """Cells from nuclei: propagation over ``planes``, or the nuclei grown by ``cell_expand`` px."""
        if planes:
            return segment_cells(nuclei, planes, params)
        if self.cell_expand:
            return segmentation.expand_labels(nuclei, self.cell_expand).astype(np.uint32)
        return np.asarray(nuclei, np.uint32).copy()

    def segment_nuclei(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Nucleus labels (H, W) uint32 for each single-channel (H, W) image."""
        raise NotImplementedError

    def _raw_fields(self, fields: list[np.ndarray], nuc: int, cyto: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        raise NotImplementedError

    def segment_fields(self, fields: list[np.ndarray], channels: list[str]) -> list[FieldSegmentation]:
        """Segment a batch of (C, H, W) fields whose channels are named ``channels``."""
        nuc, cyto = self._roles(list(channels))
        fields = [check_field(f, list(channels)) for f in fields]
        out = []
        for f, (nuclei, cells) in zip(fields, self._raw_fields(fields, nuc, cyto)):
            notes = [f"channel {channels[c]} is empty (constant)" for c in [nuc, *cyto] if f[c].min() == f[c].max()]
            n_found = int(np.count_nonzero(np.bincount(np.asarray(nuclei).ravel())[1:]))
            nuclei, cells = pair_nuclei_cells(nuclei, cells)
            empty = False
            if cells.max(initial=0) == 0:
                snr = self.params.min_snr
                empty, peak = field_is_empty(f[nuc], self.params.min_nucleus_area, snr) if snr else (False, 0.0)
                notes.append(f"empty field: no foreground above noise in {channels[nuc]} (peak evidence "
                             f"{peak:.1f} sd, needs {self.params.min_snr:g})" if empty else "no nuclei found")
            lost = n_found - int(cells.max(initial=0))
            if lost > 0:
                notes.append(f"{lost} nuclei dropped: no cell of their own (cell under min_cell_area or shared)")
            out.append(FieldSegmentation(nuclei, cells, border_labels(cells), notes, empty))
        return out

    def segment_field(self, image: np.ndarray, channels: list[str]) -> FieldSegmentation:
        """Segment one (C, H, W) field."""
        return self.segment_fields([image], channels)[0]


@dataclass
class ClassicalSegmenter(Segmenter):
    """CellProfiler-style segmentation (see `cellkit.segment.classical`)."""

    name = "classical"

    @one_cv2_thread  # once for the whole batch: toggling OpenCV's pool per step costs wall time
    def segment_fields(self, fields, channels):
        return Segmenter.segment_fields(self, fields, channels)

    @one_cv2_thread
    def segment_nuclei(self, images):
        return [segment_nuclei(im, self.params) for im in images]

    def _raw_fields(self, fields, nuc, cyto):
        out = []
        for f in fields:
            nuclei = segment_nuclei(f[nuc], self.params)
            out.append((nuclei, self._grow(nuclei, [f[c] for c in cyto], self.params)))
        return out


@dataclass
class CellposeSegmenter(Segmenter):
    """Cellpose 3: nuclei with ``model`` on the nuclear channel; cells with ``cell_model`` on the
    cytoplasm (mean of the normalized cytoplasm channels) with the nuclear channel as second
    channel, or, with ``cell_model=None``, grown from the Cellpose nuclei by the classical
    propagation. Weights come from Cellpose's local cache or a path, never a download.

    diameter, cell_diameter
        Object diameters in px; None uses the model's own (its training objects' mean diameter
        for a custom model).
    gpu
        None: use a GPU when torch sees one.
    augment
        Cellpose's test-time augmentation (`cellpose_backend.run_cellpose`).
    """

    model: str = "nuclei"
    cell_model: str | None = "cyto3"
    diameter: float | None = None
    cell_diameter: float | None = None
    gpu: bool | None = None
    batch_size: int = 8
    flow_threshold: float = 0.4
    cellprob_threshold: float = 0.0
    augment: bool = False
    params: ClassicalParams = field(default_factory=ClassicalParams)
    name = "cellpose"

    def __post_init__(self):
        # fail now, in the caller, not later in a worker
        self.model_path = str(cpb.resolve_model(self.model))
        try:
            self.cell_model_path = str(cpb.resolve_model(self.cell_model)) if self.cell_model else None
        except cpb.WeightsNotFoundError as err:
            raise cpb.WeightsNotFoundError(f"{err} For Cellpose nuclei with cells grown by the classical "
                                           "propagation, pass cell_model=None (--cell-model classical).") from None

    def describe(self):
        d = super().describe()
        d["min_snr"] = d.pop("params")["min_snr"]
        d.update({"model_path": self.model_path, "cell_model_path": self.cell_model_path,
                  "model_sha256": cpb.model_sha256(self.model_path),
                  "cell_model_sha256": cpb.model_sha256(self.cell_model_path) if self.cell_model_path else None})
        return d

    def _use_gpu(self) -> bool:
        return cpb.default_gpu() if self.gpu is None else bool(self.gpu)

    def _run(self, path, images, diameter, channels):
        return cpb.run_cellpose(cpb.load_cellpose(path, self._use_gpu()), images, diameter=diameter, channels=channels,
                                batch_size=self.batch_size, flow_threshold=self.flow_threshold,
                                cellprob_threshold=self.cellprob_threshold, augment=self.augment)

    def segment_nuclei(self, images):
        """Nucleus labels per image; images without foreground above their noise (``params.min_snr``,
        `cellkit.segment.empty`) are not run through the network and get 0 nuclei; nuclei whose
        evidence stays under ``min_snr`` are dropped."""
        images = [np.asarray(im) for im in images]
        snr, area = self.params.min_snr, self.params.min_nucleus_area
        maps = [evidence_maps(im) if snr else None for im in images]
        keep = [not snr or has_foreground(m[0], area, snr) for m in maps]
        labels = iter(self._run(self.model_path, [im for im, k in zip(images, keep) if k], self.diameter, (0, 0))
                      if any(keep) else [])
        out = []
        for im, k, m in zip(images, keep, maps):
            if not k:
                out.append(np.zeros(im.shape, np.uint32))
            else:
                found = next(labels)
                out.append(drop_faint(found, m[1], snr) if snr else found)
        return out

    def _raw_fields(self, fields, nuc, cyto):
        nuclei = self.segment_nuclei([f[nuc] for f in fields])
        if self.cell_model_path is None or not cyto:
            return [(n, self._grow(n, [f[c] for c in cyto], self.params)) for f, n in zip(fields, nuclei)]
        stacks = [np.stack([_cytoplasm_plane(f, cyto), f[nuc].astype(np.float32)]) for f in fields]
        cells = self._run(self.cell_model_path, stacks, self.cell_diameter, (1, 2))
        return list(zip(nuclei, cells))


def _cytoplasm_plane(field: np.ndarray, cyto: list[int]) -> np.ndarray:
    """Mean of the cytoplasm channels, each scaled to its 1st-99th percentile range, float32."""
    planes = []
    for c in cyto:
        lo, hi = np.percentile(field[c], [1, 99])
        planes.append((field[c].astype(np.float32) - lo) / max(hi - lo, 1e-6))
    return np.mean(planes, axis=0)


def get_segmenter(backend: str = "auto", *, model: str | None = None, cell_model: str | None = "cyto3",
                  diameter: float | None = None, gpu: bool | None = None, batch_size: int = 8,
                  params: ClassicalParams | None = None, **channel_roles) -> Segmenter:
    """Build a segmenter.

    Parameters
    ----------
    backend
        ``classical``, ``cellpose`` or ``auto`` (the default): nuclei with ``model`` when given,
        else Cellpose's ``nuclei`` weights when they are cached, else cellkit's shipped nucleus
        model (`cellpose_backend.shipped_nucleus_model`, trained on DSB2018: models/README.md);
        cells with ``cell_model`` when its weights are cached, else grown from the nuclei by the
        classical propagation. The classical backend, with a warning, only when neither nucleus
        model is there.
    model
        Cellpose nucleus model: built-in name or path (default: see ``backend``).
    cell_model
        Cellpose cell model: name or path (default ``cyto3``), or None to grow cells from the nuclei
        with the classical propagation.
    channel_roles
        ``nuclear_channel=``, ``cytoplasm_channels=``, ``cell_expand=`` (see `Segmenter`).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    params = params or ClassicalParams()
    if backend == "auto":
        backend, model, cell_model = _auto_models(model, cell_model)
    if backend == "classical":
        return ClassicalSegmenter(params=params, **channel_roles)
    return CellposeSegmenter(model=model or "nuclei", cell_model=cell_model, diameter=diameter, gpu=gpu,
                             batch_size=batch_size, params=params, **channel_roles)


def _auto_models(model: str | None, cell_model: str | None) -> tuple[str, str | None, str | None]:
    """(backend, nucleus model, cell model) that ``backend="auto"`` resolves to (see `get_segmenter`).
    A nucleus model named by the caller is used as given (a missing one fails, never a fallback)."""
    if model is None:
        shipped = cpb.shipped_nucleus_model()
        model = "nuclei" if cpb.weights_available("nuclei") or shipped is None else str(shipped)
        if not cpb.weights_available(model):
            warnings.warn(f"no cached Cellpose nucleus model (the cache is {cpb.cellpose_model_dir()}) and no shipped "
                          f"cellkit model (in {cpb.shipped_models_dir()}): using the classical backend",
                          UserWarning, stacklevel=3)
            return "classical", None, None
    if cell_model and not cpb.weights_available(cell_model):
        cell_model = None  # cells grown from the nuclei (the classical propagation), as --cell-model classical
    return "cellpose", model, cell_model
