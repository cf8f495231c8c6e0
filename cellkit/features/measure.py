"""`measure_field`: every handcrafted feature of every cell of one field, CellProfiler names."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from ._objects import Objects, cellprofiler_scale, present_labels
from .correlation import correlation_features
from .costes import costes_features
from .granularity import granularity_features, granularity_spectrum
from .granularity import image_granularity as image_granularity_of
from .intensity import intensity_features
from .neighbors import neighbor_features
from .radial import radial_features, radial_zernike_features
from .shape import shape_features
from .texture import texture_features

COMPARTMENTS = ("Nuclei", "Cells", "Cytoplasm")
GROUPS = ("AreaShape", "Intensity", "Texture", "Granularity", "RadialDistribution", "RadialZernikes", "Correlation",
          "Neighbors")
OPTIONAL_GROUPS = ("Costes",)  # measured only when asked for (groups=GROUPS + ("Costes",))


def compartment_labels(nuclei: np.ndarray, cells: np.ndarray) -> dict[str, np.ndarray]:
    """Label images of the three compartments; Cytoplasm k = cell k minus nucleus k."""
    return {"Nuclei": nuclei, "Cells": cells, "Cytoplasm": np.where(nuclei == cells, 0, cells)}


def _check(images, nuclei, cells, channels):
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must be (C, H, W), got shape {images.shape}")
    if len(channels) != images.shape[0]:
        raise ValueError(f"{len(channels)} channel names for {images.shape[0]} channels")
    if len(set(channels)) != len(channels) or any(not isinstance(c, str) or not c for c in channels):
        raise ValueError(f"channel names must be distinct non-empty strings: {channels}")
    for name, lab in (("nuclei", nuclei), ("cells", cells)):
        if np.shape(lab) != images.shape[1:]:
            raise ValueError(f"{name} has shape {np.shape(lab)}, images have {images.shape[1:]}")
        if not np.issubdtype(np.asarray(lab).dtype, np.integer):
            raise ValueError(f"{name} must be an integer label image, got {np.asarray(lab).dtype}")
        if np.asarray(lab).min(initial=0) < 0:
            raise ValueError(f"{name} has negative labels")
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise ValueError(f"images must be integer (uint16) or float, got {images.dtype}")
    return images, np.asarray(nuclei).astype(np.int64), np.asarray(cells).astype(np.int64)


def measure_field(images: np.ndarray, nuclei: np.ndarray, cells: np.ndarray, channels: list[str], *,
                  compartments: tuple[str, ...] = COMPARTMENTS, groups: tuple[str, ...] = GROUPS,
                  texture_scale: int = 3, texture_levels: int = 256, radial_bins: int = 4,
                  zernike_degree: int = 9, moments: bool = True, manders_threshold: float = 0.15,
                  neighbor_distance: float | None = None, granularity_length: int = 16,
                  granularity_subsample: float = 0.25, granularity_background_sample: float = 0.25,
                  granularity_element_size: int = 10, radial_zernike_degree: int = 9,
                  radial_zernike_phase: bool = True, image_granularity: bool = False) -> pd.DataFrame:
    """Handcrafted morphology of every cell of one field.

    Parameters
    ----------
    images
        (C, H, W) uint16 counts, uint8, or float (NaN pixels are left out of intensity features).
        Intensities are reported on CellProfiler's 0-1 scale per dtype: uint16 / 65535, uint8 / 255,
        float in [0, 1] as is, other float / 65535 (`cellkit.features._objects.cellprofiler_scale`).
    nuclei, cells
        (H, W) integer label images; nucleus k lies inside cell k (same label).
    channels
        C channel names, used in the feature names (``Cells_Intensity_MeanIntensity_Actin``).
    compartments
        Subset of ``("Nuclei", "Cells", "Cytoplasm")``; Cytoplasm = cell minus its nucleus.
    groups
        Subset of ``("AreaShape", "Intensity", "Texture", "Granularity", "RadialDistribution",
        "RadialZernikes", "Correlation", "Neighbors")``, optionally with ``"Costes"`` (Costes-thresholded
        colocalization, `cellkit.features.costes`; not in the default: it costs more than the other groups).
        Neighbors is measured on Cells (and Nuclei with ``neighbor_distance``).
    texture_scale, texture_levels
        Haralick co-occurrence distance (pixels) and gray levels.
    radial_bins
        Number of rings of the radial distribution.
    zernike_degree
        Highest Zernike order (-1: none). ``moments``: central, normalised and Hu moments.
    manders_threshold
        Fraction of the per-object maximum used by Manders / overlap.
    neighbor_distance
        Also count nuclei whose centres lie within this many pixels (``Nuclei_Neighbors_...``).
    granularity_length, granularity_subsample, granularity_background_sample, granularity_element_size
        CellProfiler MeasureGranularity's spectrum length, subsampling factor, background
        subsampling factor and background element radius (its defaults). The spectrum is computed
        once per channel and image, and averaged over the objects of each compartment.
    radial_zernike_degree, radial_zernike_phase
        RadialZernikes (``RadialDistribution_ZernikeMagnitude_<Channel>_<n>_<m>``, intensity
        Zernikes of MeasureObjectIntensityDistribution): highest order, and whether the phases
        (``..._ZernikePhase_...``) are reported too.
    image_granularity
        With Granularity: also CellProfiler's per-image spectrum, ``Image_Granularity_<k>_<Channel>``
        (the field's value on every row; `cellkit.features.granularity.image_granularity`). Off by
        default (one value per field repeated per cell).

    Returns
    -------
    DataFrame, one row per label present in ``cells`` (index ``label``, int64, ascending), float32
    columns named ``<Compartment>_<Group>_<Feature>[_<Channel>][_<suffix>]``. Undefined values
    (absent nucleus, empty cytoplasm, one-pixel objects, flat or empty channels) are NaN; see
    `undefined_report`.
    """
    images, nuclei, cells = _check(images, nuclei, cells, channels)
    unknown = (set(compartments) - set(COMPARTMENTS)) | (set(groups) - set(GROUPS + OPTIONAL_GROUPS))
    if unknown:
        raise ValueError(f"unknown compartments/groups: {sorted(unknown)}")
    index = present_labels(cells)
    scaled = [cellprofiler_scale(im) for im in images]
    columns: dict[str, np.ndarray] = {}
    labels = compartment_labels(nuclei, cells)
    spectra: dict[int, np.ndarray | None] = {}  # granularity: one image-level spectrum per channel
    image_level: dict[str, float] = {}
    for comp in compartments:
        objects = Objects(labels[comp], index)

        def add(features, **names):
            for key, value in features.items():
                for placeholder, name in names.items():
                    key = key.replace("{" + placeholder + "}", name)
                if f"{comp}_{key}" in columns:
                    raise ValueError(f"feature name {comp}_{key} arises twice; rename the channels {channels}")
                columns[f"{comp}_{key}"] = value

        if "AreaShape" in groups:
            add(shape_features(objects, zernike_degree=zernike_degree, moments=moments))
        for c, channel in enumerate(channels):
            if "Intensity" in groups:
                add(intensity_features(objects, scaled[c]), c=channel)
            if "Texture" in groups:
                add(texture_features(objects, scaled[c], scale=texture_scale, levels=texture_levels), c=channel)
            if "Granularity" in groups:
                if c not in spectra:
                    spectra[c], pixels = granularity_spectrum(scaled[c], subsample=granularity_subsample,
                                                              image_sample=granularity_background_sample,
                                                              element_size=granularity_element_size,
                                                              length=granularity_length, return_pixels=True)
                    if image_granularity:
                        steps = image_granularity_of(spectra[c], pixels)
                        for k in range(granularity_length):
                            image_level[f"Image_Granularity_{k + 1}_{channel}"] = steps[k] if len(steps) else np.nan
                add(granularity_features(objects, scaled[c], spectra[c], length=granularity_length), c=channel)
            if "RadialDistribution" in groups:
                add(radial_features(objects, scaled[c], bins=radial_bins), c=channel)
        if "RadialZernikes" in groups:
            per_channel = radial_zernike_features(objects, scaled, degree=radial_zernike_degree,
                                                  phase=radial_zernike_phase)
            for channel, feats in zip(channels, per_channel):
                add(feats, c=channel)
        if "Correlation" in groups:
            for a, b in combinations(range(len(channels)), 2):
                add(correlation_features(objects, scaled[a], scaled[b], threshold=manders_threshold),
                    a=channels[a], b=channels[b])
        if "Costes" in groups:
            grid = 255 if images.dtype == np.uint8 else 65535  # the acquisition grid of the threshold search
            for a, b in combinations(range(len(channels)), 2):
                add(costes_features(objects, scaled[a], scaled[b], scale=grid), a=channels[a], b=channels[b])
        if "Neighbors" in groups and comp == "Cells":
            add(neighbor_features(objects))
        if "Neighbors" in groups and comp == "Nuclei" and neighbor_distance is not None:
            add({k: v for k, v in neighbor_features(objects, distance=neighbor_distance).items()
                 if k.startswith(f"Neighbors_NumberOfNeighbors_{neighbor_distance:g}")})
    columns.update({name: np.full(len(index), value) for name, value in image_level.items()})
    frame = pd.DataFrame({k: np.asarray(v, dtype=np.float32) for k, v in columns.items()},
                         index=pd.Index(index, name="label"))
    return frame


def default_options() -> dict:
    """The keyword options of `measure_field` and their defaults (to record as provenance)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in measure_field.__kwdefaults__.items()}


def undefined_report(features: pd.DataFrame) -> pd.DataFrame:
    """Where features are undefined (NaN).

    Returns a DataFrame indexed by feature name, for features with at least one NaN: ``n_nan``
    (cells), ``fraction``; sorted by ``n_nan`` descending. ``features.isna().any(axis=1)`` gives the
    cells concerned.
    """
    n_nan = features.isna().sum()
    n_nan = n_nan[n_nan > 0].sort_values(ascending=False)
    return pd.DataFrame({"n_nan": n_nan.astype(np.int64),
                         "fraction": (n_nan / max(len(features), 1)).astype(np.float64)},
                        index=n_nan.index.rename("feature"))
