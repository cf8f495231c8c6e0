"""Illumination correction: flat-field estimate against a known field, correction, files, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from cellkit import illumination as il
from cellkit.datasets import synthetic_index
from cellkit.datasets.render import illumination_field


def _plate(n=30, shape=(128, 160), seed=0):
    """Fields of random blobs on a background, all under one known vignetting."""
    rng = np.random.default_rng(seed)
    truth = illumination_field(shape, rng, strength=0.35)
    fields = []
    for _ in range(n):
        spots = np.zeros(shape, np.float32)
        spots[rng.integers(0, shape[0], 40), rng.integers(0, shape[1], 40)] = 1
        signal = (ndi.gaussian_filter(spots, 3) * 3e4 + 300) * truth
        fields.append(rng.poisson(signal)[None].astype(np.uint16))
    return fields, truth


@pytest.mark.parametrize("aggregate,smoothing", [("mean", "gaussian"), ("median", "median"), ("median", "gaussian")])
def test_flatfield_recovers_known_illumination(aggregate, smoothing):
    fields, truth = _plate()
    flat = il.estimate_plate(fields, ["DNA"], aggregate=aggregate, smoothing=smoothing)
    assert flat.shape == (1,) + truth.shape and flat.dtype == np.float32
    assert flat.mean() == pytest.approx(1, abs=1e-3)
    err = il.relative_error(flat[0], truth)
    assert err < 0.05 < il.relative_error(np.ones_like(truth), truth)
    # dividing it out flattens the background: corner vs centre ratio close to 1
    corrected = il.correct(fields[0], flat, dtype=np.uint16)
    assert corrected.dtype == np.uint16
    mean_corr = np.mean([il.correct(f, flat)[0] for f in fields], axis=0)
    mean_raw = np.mean([f[0] for f in fields], axis=0)
    spread = lambda m: np.percentile(ndi.gaussian_filter(m, 8), 95) / np.percentile(ndi.gaussian_filter(m, 8), 5)  # noqa: E731
    assert spread(mean_corr) < 1 + 0.5 * (spread(mean_raw) - 1)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="smoothing"):
        il.smooth_flatfield(np.ones((8, 8)), smoothing="poly")
    with pytest.raises(ValueError, match="positive"):
        il.smooth_flatfield(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="no fields"):
        il.mean_image([], ["DNA"])
    with pytest.raises(ValueError, match="aggregate"):
        il.mean_image([np.ones((1, 4, 4))], ["DNA"], aggregate="max")


def test_plate_estimate_save_and_apply(small_plate, tmp_path):
    index = synthetic_index(small_plate)
    fields = il.estimate_illumination(index, workers=2)
    assert set(fields) == set(index.plate)
    one = il.estimate_illumination(index, workers=1)
    for p in fields:
        np.testing.assert_allclose(fields[p], one[p], rtol=1e-6)
    il.save_illumination(fields, ["DNA", "Tubulin", "Actin"], tmp_path / "illum")
    back, channels = il.load_illumination(tmp_path / "illum")
    assert channels == ["DNA", "Tubulin", "Actin"] and (tmp_path / "illum" / "illumination.png").stat().st_size > 5000
    np.testing.assert_array_equal(back[index.plate[0]], fields[index.plate[0]])
    small = index.head(3)
    corrected = il.correct_index(small, fields, tmp_path / "corr")
    assert (corrected.drop(columns=[c for c in corrected if c.startswith("path_")])
            .equals(small.drop(columns=[c for c in small if c.startswith("path_")])))
    from cellkit.io import read_field

    raw, new = read_field(small.iloc[0]), read_field(corrected.iloc[0])
    expected = il.correct(raw, fields[small.plate.iloc[0]], dtype=np.uint16)
    np.testing.assert_array_equal(new, expected)
    with pytest.raises(KeyError, match="no illumination field"):
        il.correct_index(small.assign(plate="other"), fields, tmp_path / "c2")


def test_cli_illumination(small_plate, tmp_path):
    from typer.testing import CliRunner

    from cellkit.cli import app
    from cellkit.io import write_index

    index = synthetic_index(small_plate)
    write_index(index, tmp_path / "index.parquet")
    result = CliRunner().invoke(app, ["illumination", str(tmp_path / "index.parquet"), "--out", str(tmp_path / "il"),
                                      "--apply", str(tmp_path / "corr"), "--index-out", str(tmp_path / "c.parquet")])
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(tmp_path / "c.parquet")) == len(index)
    result = CliRunner().invoke(app, ["illumination", str(tmp_path / "index.parquet"), "--out", str(tmp_path / "x"),
                                      "--apply", str(tmp_path / "corr")])
    assert result.exit_code != 0
