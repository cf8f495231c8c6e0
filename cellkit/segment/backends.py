"""One interface over the segmentation backends.

A segmenter turns fields, (C, H, W) arrays with named channels, into paired nucleus and cell
labels (nucleus k inside cell k), and single-channel images into nucleus labels.
``get_segmenter("classical" | "cellpose" | "auto", ...)`` builds one.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from . import cellpose_backend as cpb
from .classical import ClassicalParams, segment_cells, segment_nuclei
from .empty import drop_faint, field_is_empty, foreground_evidence, has_foreground
from .objects import border_labels, pair_nuclei_cells

BACKENDS = ("classical", "cellpose", "auto")


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
    """Base class. ``nuclear_channel`` and ``cytoplasm_channels`` map field channels to roles
    (the first cytoplasm channel present is the boundary stain)."""

    nuclear_channel: str = "DNA"
    cytoplasm_channels: tuple[str, ...] = ("Actin", "Tubulin")
    params: ClassicalParams = field(default_factory=ClassicalParams)
    name = "base"

    def describe(self) -> dict:
        """Backend name and parameters, JSON-serialisable (for store attributes)."""
        return {"backend": self.name, **{k: (list(v) if isinstance(v, tuple) else v)
                                          for k, v in asdict(self).items()}}

    def _roles(self, channels: list[str]) -> tuple[int, list[int]]:
        if self.nuclear_channel not in channels:
            raise ValueError(f"nuclear channel {self.nuclear_channel!r} not among the field's channels {channels}")
        cyto = [channels.index(c) for c in self.cytoplasm_channels if c in channels]
        if not cyto:
            raise ValueError(f"none of the cytoplasm channels {list(self.cytoplasm_channels)} among {channels}")
        return channels.index(self.nuclear_channel), cyto

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
            nuclei, cells = pair_nuclei_cells(nuclei, cells)
            empty = False
            if cells.max(initial=0) == 0:
                snr = self.params.min_snr
                empty, peak = field_is_empty(f[nuc], self.params.min_nucleus_area, snr) if snr else (False, 0.0)
                notes.append(f"empty field: no foreground above noise in {channels[nuc]} (peak evidence "
                             f"{peak:.1f} sd, needs {self.params.min_snr:g})" if empty else "no nuclei found")
            out.append(FieldSegmentation(nuclei, cells, border_labels(cells), notes, empty))
        return out

    def segment_field(self, image: np.ndarray, channels: list[str]) -> FieldSegmentation:
        """Segment one (C, H, W) field."""
        return self.segment_fields([image], channels)[0]


@dataclass
class ClassicalSegmenter(Segmenter):
    """CellProfiler-style segmentation (see `cellkit.segment.classical`)."""

    name = "classical"

    def segment_nuclei(self, images):
        return [segment_nuclei(im, self.params) for im in images]

    def _raw_fields(self, fields, nuc, cyto):
        out = []
        for f in fields:
            nuclei = segment_nuclei(f[nuc], self.params)
            out.append((nuclei, segment_cells(nuclei, [f[c] for c in cyto], self.params)))
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
    """

    model: str = "nuclei"
    cell_model: str | None = "cyto3"
    diameter: float | None = None
    cell_diameter: float | None = None
    gpu: bool | None = None
    batch_size: int = 8
    flow_threshold: float = 0.4
    cellprob_threshold: float = 0.0
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
        d.update({"model_path": self.model_path, "cell_model_path": self.cell_model_path})
        return d

    def _use_gpu(self) -> bool:
        return cpb.default_gpu() if self.gpu is None else bool(self.gpu)

    def _run(self, path, images, diameter, channels):
        return cpb.run_cellpose(cpb.load_model(path, self._use_gpu()), images, diameter=diameter, channels=channels,
                                batch_size=self.batch_size, flow_threshold=self.flow_threshold,
                                cellprob_threshold=self.cellprob_threshold)

    def segment_nuclei(self, images):
        """Nucleus labels per image; images without foreground above their noise (``params.min_snr``,
        `cellkit.segment.empty`) are not run through the network and get 0 nuclei; nuclei whose
        evidence stays under ``min_snr`` are dropped."""
        images = [np.asarray(im) for im in images]
        snr, area = self.params.min_snr, self.params.min_nucleus_area
        keep = [not snr or has_foreground(foreground_evidence(im), area, snr) for im in images]
        labels = iter(self._run(self.model_path, [im for im, k in zip(images, keep) if k], self.diameter, (0, 0))
                      if any(keep) else [])
        out = []
        for im, k in zip(images, keep):
            if not k:
                out.append(np.zeros(im.shape, np.uint32))
            else:
                found = next(labels)
                out.append(drop_faint(found, foreground_evidence(im, 10), snr) if snr else found)
        return out

    def _raw_fields(self, fields, nuc, cyto):
        nuclei = self.segment_nuclei([f[nuc] for f in fields])
        if self.cell_model_path is None:
            return [(n, segment_cells(n, [f[c] for c in cyto], self.params)) for f, n in zip(fields, nuclei)]
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


def get_segmenter(backend: str = "classical", *, model: str | None = None, cell_model: str | None = "cyto3",
                  diameter: float | None = None, gpu: bool | None = None, batch_size: int = 8,
                  params: ClassicalParams | None = None, **channel_roles) -> Segmenter:
    """Build a segmenter.

    Parameters
    ----------
    backend
        ``classical``, ``cellpose`` or ``auto`` (Cellpose when its weights are available, else
        classical with a warning).
    model
        Cellpose nucleus model: built-in name or path (default ``nuclei``).
    cell_model
        Cellpose cell model: name or path (default ``cyto3``), or None to grow cells from the nuclei
        with the classical propagation.
    channel_roles
        ``nuclear_channel=``, ``cytoplasm_channels=``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    params = params or ClassicalParams()
    if backend == "auto":
        wanted = [model or "nuclei"] + ([cell_model] if cell_model else [])
        missing = [m for m in wanted if not cpb.weights_available(m)]
        if missing:
            warnings.warn(f"Cellpose weights not available for {missing} (looked in {cpb.cellpose_model_dir()}); "
                          "using the classical backend", UserWarning, stacklevel=2)
            backend = "classical"
        else:
            backend = "cellpose"
    if backend == "classical":
        return ClassicalSegmenter(params=params, **channel_roles)
    return CellposeSegmenter(model=model or "nuclei", cell_model=cell_model, diameter=diameter, gpu=gpu,
                             batch_size=batch_size, params=params, **channel_roles)
