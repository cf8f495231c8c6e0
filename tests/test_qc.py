"""Image QC: focus measures, saturation, empty fields, flags, table, figure, exclusion; real BBBC006 defocus."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from cellkit import qc
from cellkit.datasets import synthetic_index
from cellkit.io import from_folder
from cellkit.workflows.qc import write_qc

from .conftest import real_path


def _spectral_noise(alpha, shape=(256, 256), seed=0):
    """Noise with power spectrum ~ f**-alpha."""
    rng = np.random.default_rng(seed)
    fy, fx = np.meshgrid(np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]), indexing="ij")
    f = np.hypot(fy, fx)
    f[0, 0] = 1
    spectrum = np.fft.fft2(rng.standard_normal(shape)) * f ** (-alpha / 2)
    return np.real(np.fft.ifft2(spectrum))


def _cells(seed=0, shape=(256, 256), n=150):
    rng = np.random.default_rng(seed)
    img = np.zeros(shape, np.float32)
    img[rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)] = 1
    img = ndi.gaussian_filter(img, 2.5) * 2e4 + 200
    return (img + rng.normal(0, 10, shape)).clip(0, 65535).astype(np.uint16)


def test_power_log_log_slope_follows_the_spectrum():
    # power ~ f^-a summed over rings of ~2 pi f pixels -> ring power ~ f^(1 - a)
    for alpha in (1.0, 2.0, 3.0):
        slope = qc.power_log_log_slope(_spectral_noise(alpha))
        assert slope == pytest.approx(1 - alpha, abs=0.15)
    assert np.isnan(qc.power_log_log_slope(np.ones((64, 64))))


def test_blur_lowers_focus_and_saturation_and_empty_are_measured():
    sharp = _cells()
    blurred = ndi.gaussian_filter(sharp.astype(np.float32), 3).astype(np.uint16)
    m_sharp, m_blur = qc.measure_image(sharp), qc.measure_image(blurred)
    assert m_blur["power_log_log_slope"] < m_sharp["power_log_log_slope"] - 0.5
    assert m_blur["laplacian_var"] < m_sharp["laplacian_var"] / 5
    sat = sharp.copy()
    sat[:10, :] = 65535
    assert qc.measure_image(sat)["saturated_fraction"] == pytest.approx(10 / 256)
    assert qc.measure_image(sat, saturation=4095)["saturated_fraction"] >= 10 / 256
    noise = (np.random.default_rng(1).normal(300, 10, (256, 256))).astype(np.uint16)
    assert qc.measure_image(noise)["foreground_fraction"] < qc.EMPTY_FOREGROUND < m_sharp["foreground_fraction"]
    with pytest.raises(ValueError, match="2-D"):
        qc.measure_image(np.zeros((2, 8, 8)))


def test_flags_pick_the_defective_fields_only():
    fields = [_cells(seed) for seed in range(10)]
    fields[3] = ndi.gaussian_filter(fields[3].astype(np.float32), 3).astype(np.uint16)
    over = fields[5].astype(np.float64) * (65535 / np.quantile(fields[5], 0.98))  # over-exposed: top 2 % clip
    fields[5] = over.clip(0, 65535).astype(np.uint16)
    fields[7] = np.random.default_rng(2).normal(300, 10, (256, 256)).astype(np.uint16)
    parts = []
    for i, f in enumerate(fields):
        t = qc.measure_field(f[None], ["DNA"])
        t["field_id"], t["plate"], t["well"] = f"P/{i}/1", "P", f"A{i + 1:02d}"
        parts.append(t)
    table = qc.flag_fields(pd.concat(parts, ignore_index=True))
    assert 3 in np.flatnonzero(table["blurry"])
    assert list(np.flatnonzero(table["saturated"])) == [5]
    assert list(np.flatnonzero(table["empty"])) == [7]
    fields_t = qc.field_table(table)
    assert fields_t.loc[fields_t.field_id == "P/5/1", "flagged_channels"].item() == "DNA:saturated"
    assert not fields_t.set_index("field_id").loc["P/5/1", "qc_pass"]


def test_qc_plate_table_figure_and_exclusion(small_plate, tmp_path):
    index = synthetic_index(small_plate).head(8)
    one = qc.qc_plate(index, workers=1)
    two = qc.qc_plate(index, workers=2)
    pd.testing.assert_frame_equal(one, two)
    assert len(one) == 8 * 3 and set(one.channel) == {"DNA", "Tubulin", "Actin"}
    assert one[["blurry", "saturated", "empty"]].sum().sum() == 0  # clean synthetic fields
    paths = write_qc(one, tmp_path / "qc")
    assert paths["figure"].stat().st_size > 5000
    assert len(pd.read_csv(paths["fields"])) == 8
    # exclusion: flag one field by hand, drop its cells, count them
    flagged = one.copy()
    bad = flagged.field_id.iloc[0]
    flagged.loc[flagged.field_id == bad, ["saturated", "qc_pass"]] = [True, False]
    cells = ad.AnnData(np.zeros((6, 2)), obs=pd.DataFrame({"field_id": [bad, bad, *index.field_id.iloc[1:4],
                                                                          "other/A01/1"]}, index=list("abcdef")))
    kept = qc.exclude_flagged(cells, qc.field_table(flagged))
    assert list(kept.obs_names) == list("cdef")
    counts = kept.uns["cellkit"]["qc"]
    assert counts["rows_removed"] == 2 and counts["fields_flagged"] == 1 and counts["rows_unchecked"] == 1
    assert counts["by_flag"]["saturated"] == 1


def test_cli_qc_on_a_folder(tmp_path):
    import tifffile
    from typer.testing import CliRunner

    from cellkit.cli import app

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        tifffile.imwrite(folder / f"x_b{i + 1:02d}_s1.tif", _cells(i))
    result = CliRunner().invoke(app, ["qc", str(folder), "--out", str(tmp_path / "out"),
                                      "--regex", r"_(?P<well>[a-p][0-9]{2})_s(?P<site>[0-9])"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / "qc.csv")
    assert list(table.well) == [f"B{i:02d}" for i in range(1, 7)]
    result = CliRunner().invoke(app, ["qc", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")])
    assert result.exit_code != 0


def test_real_bbbc006_defocus_ranks_planes():
    root = real_path("bbbc006")
    z00 = qc.qc_plate(from_folder(root / "w1_z00", regex=r"_(?P<well>[a-p][0-9]{2})_s(?P<site>[0-9])"),
                      saturation=4095)
    z10 = qc.qc_plate(from_folder(root / "w1_z10", regex=r"__(?P<well>a[0-9]{2})__s(?P<site>[0-9])"),
                      saturation=4095)
    a0 = z00.set_index(["well", "site"]).loc[("A01", 1)]
    a10 = z10.set_index(["well", "site"]).loc[("A01", 1)]
    assert a0.power_log_log_slope < a10.power_log_log_slope  # plane 0 (farther from focus) is blurrier
    assert a0.focus_score < a10.focus_score
    # the two planes separate completely on the slope
    assert z00.power_log_log_slope.max() < z10.power_log_log_slope.min()


def test_cli_profile_leaves_out_flagged_fields(tmp_path):
    from typer.testing import CliRunner

    from cellkit.cli import app

    rng = np.random.default_rng(0)
    fields = [f"P1/{w}/1" for w in ("B02", "B03", "B04", "B05")]
    obs = pd.DataFrame({"plate": "P1", "well": [f.split("/")[1] for f in fields for _ in range(5)],
                        "field_id": [f for f in fields for _ in range(5)], "compound": "DMSO",
                        "concentration": 0.0, "moa": "DMSO"}, index=[f"c{i}" for i in range(20)])
    ad.AnnData(rng.normal(size=(20, 4)).astype(np.float32), obs=obs).write_h5ad(tmp_path / "cells.h5ad")
    pd.DataFrame({"field_id": fields, "qc_pass": [True, False, True, True], "blurry": [False, True, False, False],
                  "saturated": False, "empty": False}).to_csv(tmp_path / "qc_fields.csv", index=False)
    result = CliRunner().invoke(app, ["profile", str(tmp_path / "cells.h5ad"), "--out", str(tmp_path / "wells.h5ad"),
                                      "--preset", "none", "--qc", str(tmp_path / "qc_fields.csv")])
    assert result.exit_code == 0, result.output
    assert "5 cells left out" in result.output
    wells = ad.read_h5ad(tmp_path / "wells.h5ad")
    assert sorted(wells.obs.well) == ["B02", "B04", "B05"] and wells.obs.n_cells.sum() == 15
    assert wells.uns["cellkit"]["qc"]["rows_removed"] == 5
