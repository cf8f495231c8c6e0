"""Image quality control: focus, saturation, intensity and empty-field measures per field and channel.

Measures (one row per field and channel, `measure_image` on one plane):

- ``power_log_log_slope``: CellProfiler's MeasureImageQuality *PowerLogLogSlope*: the slope of
  log(radially summed power spectrum) against log(spatial frequency), over frequencies 2 ..
  min(H, W) / 8 cycles per image (centrosome's ``rps``). Blur removes high frequencies, so the
  slope falls (more negative) as a field goes out of focus. Intensity invariant.
- ``laplacian_var``: variance of the Laplacian of the raw intensities (Pech-Pacheco et al. 2000);
  falls with blur, but scales with brightness squared. ``focus_score`` is the same on the
  plane divided by its mean (so dim and bright fields compare).
- ``saturated_fraction``: fraction of pixels at the saturation value (default: the dtype's
  maximum for integer images, else the plane's own maximum: CellProfiler's *PercentMaximal*).
- ``p01``, ``p50``, ``p99``, ``mean``: intensity percentiles and mean.
- ``noise_sd``: robust SD of the pixel noise, from horizontal pixel differences (1.4826 MAD / sqrt 2).
- ``foreground_fraction``: fraction of pixels more than 5 ``noise_sd`` above a smooth background
  (Gaussian, sigma min(H, W) / 16); near 0 for a field without cells.

Flags (`flag_fields`; thresholds are module constants, set from first principles, not fitted):

- ``blurry``: robust z of ``power_log_log_slope`` within the plate and channel below
  ``-BLUR_Z`` (3): ``z = (x - median) / (1.4826 MAD)``; needs ``MIN_FIELDS_FOR_Z`` fields per
  plate, else no blur flag is raised (NaN z).
- ``saturated``: ``saturated_fraction`` above ``SATURATED_FRACTION`` (0.1 % of the pixels).
- ``empty``: ``foreground_fraction`` below ``EMPTY_FOREGROUND`` (0.1 %: pure noise gives ~3e-7).

A field fails QC when any of its channels is flagged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ._parallel import Runner

BLUR_Z = 3.0
SATURATED_FRACTION = 1e-3
EMPTY_FOREGROUND = 1e-3
MIN_FIELDS_FOR_Z = 5
FLAGS = ("blurry", "saturated", "empty")
MEASURES = ("power_log_log_slope", "laplacian_var", "focus_score", "saturated_fraction", "p01", "p50", "p99",
            "mean", "noise_sd", "foreground_fraction")


def radial_power_spectrum(image: np.ndarray):
    """Radii 2 .. min(H, W)/8 and the power summed over each ring (float64 arrays), as centrosome's ``rps``.

    The plane is divided by its median absolute deviation from the mean (intensity invariance).
    """
    img = np.asarray(image, np.float64)
    h, w = img.shape
    r2 = np.arange(h)[:, None] ** 2 + np.arange(w)[None, :] ** 2
    r2 = np.minimum(r2, np.flipud(r2))
    r2 = np.minimum(r2, np.fliplr(r2))
    if np.ptp(img) > 0:
        img = img / np.median(np.abs(img - img.mean()))
    power = np.abs(np.fft.fft2(img - img.mean())) ** 2
    radii = np.floor(np.sqrt(r2)).astype(np.int64) + 1
    labels = np.arange(2, int(np.floor(min(h, w) / 8.0)))
    if len(labels) == 0:
        return np.array([2.0]), np.array([0.0])
    return labels.astype(np.float64), np.asarray(ndi.sum(power, radii, labels), np.float64)


def power_log_log_slope(image: np.ndarray) -> float:
    """CellProfiler's PowerLogLogSlope of one plane (H, W); NaN for a constant plane."""
    radii, power = radial_power_spectrum(image)
    keep = power > 0
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(radii[keep]), np.log(power[keep]), 1)[0])


def saturation_value(image: np.ndarray) -> float:
    """The dtype's maximum for integer planes, else the plane's maximum."""
    if np.issubdtype(image.dtype, np.integer):
        return float(np.iinfo(image.dtype).max)
    return float(np.max(image))


def measure_image(image: np.ndarray, *, saturation: float | None = None) -> dict:
    """All `MEASURES` of one plane (H, W), any numeric dtype. ``saturation``: the saturated value
    (default `saturation_value`; pass 4095 for 12-bit data stored as uint16)."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"measure_image needs one 2-D plane, got shape {image.shape}")
    sat = saturation_value(image) if saturation is None else float(saturation)
    x = image.astype(np.float32)
    lap = ndi.laplace(x)
    mean = float(x.mean())
    noise = float(1.4826 * np.median(np.abs(np.diff(x, axis=1))) / np.sqrt(2))
    background = ndi.gaussian_filter(x, min(x.shape) / 16.0, mode="reflect")
    p01, p50, p99 = np.percentile(x, [1, 50, 99])
    return {
        "power_log_log_slope": power_log_log_slope(x),
        "laplacian_var": float(lap.var()),
        "focus_score": float(lap.var() / mean**2) if mean > 0 else float("nan"),
        "saturated_fraction": float(np.mean(image >= sat)),
        "p01": float(p01), "p50": float(p50), "p99": float(p99), "mean": mean, "noise_sd": noise,
        "foreground_fraction": float(np.mean(x - background > 5 * max(noise, 1e-6))),
    }


def measure_field(images: np.ndarray, channels, *, saturation: float | None = None) -> pd.DataFrame:
    """`measure_image` on every channel of a field (C, H, W): one row per channel (column ``channel``)."""
    rows = [{"channel": ch, **measure_image(plane, saturation=saturation)} for ch, plane in zip(channels, images)]
    return pd.DataFrame(rows)


def robust_z(values: pd.Series) -> pd.Series:
    """``(x - median) / (1.4826 MAD)``; NaN when the MAD is 0 or there are under `MIN_FIELDS_FOR_Z` values."""
    x = values.astype(float)
    if x.notna().sum() < MIN_FIELDS_FOR_Z:
        return pd.Series(np.nan, index=x.index)
    med = x.median()
    mad = 1.4826 * (x - med).abs().median()
    return (x - med) / mad if mad > 0 else pd.Series(np.nan, index=x.index)


def flag_fields(table: pd.DataFrame, *, blur_z: float = BLUR_Z, saturated: float = SATURATED_FRACTION,
                empty: float = EMPTY_FOREGROUND, by: str = "plate") -> pd.DataFrame:
    """Add robust z-scores within ``by`` and channel (``z_power_log_log_slope``, ``z_focus_score``)
    and the flag columns (`FLAGS`, ``qc_pass``) to a QC table; returns a new table."""
    table = table.copy()
    groups = [by, "channel"] if by in table else ["channel"]
    for m in ("power_log_log_slope", "focus_score"):
        table[f"z_{m}"] = table.groupby(groups, observed=True)[m].transform(robust_z)
    table["blurry"] = table["z_power_log_log_slope"] < -blur_z
    table["saturated"] = table["saturated_fraction"] > saturated
    table["empty"] = table["foreground_fraction"] < empty
    table["qc_pass"] = ~table[list(FLAGS)].any(axis=1)
    return table


def field_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per field from a flagged QC table: metadata, each flag (any channel), ``qc_pass``
    (all channels pass) and ``flagged_channels`` (``"DNA:blurry;Actin:saturated"``)."""
    meta = [c for c in ("field_id", "plate", "well", "site", "batch", "compound", "concentration", "moa")
            if c in table]

    def reasons(group):
        return ";".join(f"{r.channel}:{f}" for r in group.itertuples() for f in FLAGS if getattr(r, f))

    out = table.groupby("field_id", sort=False)[list(FLAGS) + ["qc_pass"]].agg(
        {**{f: "any" for f in FLAGS}, "qc_pass": "all"})
    out["flagged_channels"] = table.groupby("field_id", sort=False)[["channel", *FLAGS]].apply(reasons)
    first = table.drop_duplicates("field_id").set_index("field_id")[[c for c in meta if c != "field_id"]]
    return first.join(out).reset_index()


def qc_plate(index: pd.DataFrame, *, channels=None, saturation: float | None = None, workers: int = 2,
             progress=None, **flag_options) -> pd.DataFrame:
    """Measure and flag every field of a plate index: one row per field and channel.

    Columns: the index metadata, ``channel``, `MEASURES`, robust z-scores, `FLAGS`, ``qc_pass``.
    Fields are read in ``workers`` threads (`cellkit._parallel.Runner`); the result does not depend on it.
    """
    from .io.images import read_field
    from .io.plate_index import METADATA_COLUMNS, channels_of

    channels = list(channels or channels_of(index))
    meta = [c for c in METADATA_COLUMNS if c in index]

    def one(row):
        images = read_field(row, channels)
        t = measure_field(images, channels, saturation=saturation)
        for c in meta:
            t[c] = row[c]
        return t[meta + ["channel", *MEASURES]]

    rows = [r for _, r in index.iterrows()]
    parts = Runner(workers=max(1, int(workers))).map(one, rows, progress=progress)
    if not parts:
        raise ValueError("the plate index has no fields")
    return flag_fields(pd.concat(parts, ignore_index=True), **flag_options)


def exclude_flagged(adata, fields: pd.DataFrame, *, key: str = "field_id", copy: bool = True):
    """Drop the rows of ``adata`` (cells or images, obs column ``key``) whose field failed QC.

    ``fields``: `field_table` (or a per-channel QC table). Records the counts in
    ``uns["cellkit"]["qc"]``: fields flagged, fields and rows removed, per flag. Rows whose field is
    not in the QC table are kept and counted as ``rows_unchecked``.
    """
    if "qc_pass" not in fields:
        raise KeyError("the QC table has no qc_pass column: run cellkit.qc.flag_fields first")
    if key not in adata.obs:
        raise KeyError(f"adata.obs has no {key!r} column to match the QC table's fields")
    per_field = fields.groupby("field_id")[["qc_pass", *FLAGS]].agg(
        {"qc_pass": "all", **{f: "any" for f in FLAGS}})
    failed = set(per_field.index[~per_field.qc_pass])
    obs_field = adata.obs[key].astype(str)
    drop = obs_field.isin(failed).to_numpy()
    counts = {"fields_checked": int(len(per_field)), "fields_flagged": int(len(failed)),
              "fields_removed": int(obs_field[drop].nunique()), "rows_removed": int(drop.sum()),
              "rows_kept": int((~drop).sum()), "rows_unchecked": int((~obs_field.isin(per_field.index)).sum()),
              "by_flag": {f: int(per_field[f].sum()) for f in FLAGS}}
    out = adata[~drop].copy() if copy else adata._inplace_subset_obs(~drop)
    target = out if copy else adata
    target.uns.setdefault("cellkit", {})["qc"] = counts
    return target
