"""Parameters of the classical segmenter (`cellkit.segment.classical`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ClassicalParams:
    """Parameters of the classical segmenter (pixel units).

    nucleus_diameter
        Typical nucleus diameter in px; None estimates it from the thresholded DNA image.
    min_nucleus_area, max_nucleus_area
        Nuclei outside [min, max] pixels are dropped (max None: no upper bound).
    min_cell_area
        Cells under this many pixels are dropped together with their nucleus.
    smoothing
        Gaussian sigma as a fraction of the nucleus diameter (global methods; ``local`` uses 1 px).
    background_radius
        Radius of the background opening (uneven illumination), in nucleus diameters (global
        methods only).
    threshold_method
        Automatic threshold of the nuclei: ``li`` (minimum cross-entropy), ``otsu``, ``log_otsu``, or
        ``local`` (percentile normalisation, local Gaussian-weighted threshold over a window of
        ``local_block`` diameters floored at ``local_floor`` x the Li threshold, and a diameter
        estimated from component areas; see `segment_nuclei_local`). ``local`` suits heterogeneous
        real images (DSB2018) better; the global methods are exact on even, sparse fields.
    threshold_scale
        Multiplies the automatic threshold (``local``: its global floor) (lower: more permissive).
    local_block, local_floor
        ``local`` only: window of the local threshold in nucleus diameters, and its floor as a
        multiple of the Li threshold of the normalised image.
    declump_min_distance
        Minimum distance between seeds of one clump, as a fraction of the nucleus diameter.
    cell_threshold_scale
        Multiplies the automatic threshold of the cytoplasm foreground.
    compactness
        Watershed compactness of the cell propagation (0: pure intensity; larger: closer to Voronoi).
    min_snr
        Foreground evidence a field needs to have nuclei at all, and each nucleus needs at its
        peak, in standard deviations of the field's own (filtered) noise (`cellkit.segment.empty`);
        a field of noise only gives 0 nuclei. 0 disables the check.
    propagation
        Cytoplasm foreground of the cell propagation: ``local`` (per-cell thresholds, see
        `cytoplasm_foreground`; dim cells keep their cytoplasm) or ``global`` (one Otsu threshold
        for the field, as cellkit did before; dim cells shrink to their nucleus).
    cell_reach
        ``local`` only: how far a cell may extend beyond its nucleus for its own threshold, in
        nucleus diameters.
    background_sigmas
        ``local`` only: a per-cell threshold never falls below the background level plus this
        many robust standard deviations of the background.
    """

    nucleus_diameter: float | None = None
    min_nucleus_area: int = 15
    max_nucleus_area: int | None = None
    min_cell_area: int = 50
    smoothing: float = 0.08
    background_radius: float = 1.5
    threshold_method: str = "local"
    threshold_scale: float = 1.0
    declump_min_distance: float = 0.45
    cell_threshold_scale: float = 1.0
    compactness: float = 0.0
    propagation: str = "local"
    cell_reach: float = 1.5
    background_sigmas: float = 3.0
    local_block: float = 3.0
    local_floor: float = 0.8
    min_snr: float = 6.0

    def to_dict(self) -> dict:
        return asdict(self)
