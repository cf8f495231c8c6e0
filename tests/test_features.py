"""cellkit.features: the measure_field contract, agreement with cp_measure, undefined values."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
import pytest

from cellkit.datasets import CHANNELS, phenotype, render_field
from cellkit.features import compartment_labels, default_options, measure_field, undefined_report

cp_bulk = pytest.importorskip("cp_measure.bulk", reason="cp_measure (dev extra) is needed for the agreement checks")


@pytest.fixture(scope="module")
def field():
    return render_field(phenotype(), (192, 256), rng=np.random.default_rng(11))


@pytest.fixture(scope="module")
def features(field):
    return measure_field(*field, CHANNELS)


def test_contract(field, features):
    images, nuclei, cells = field
    labels = np.unique(cells)
    labels = labels[labels > 0]
    assert features.index.dtype == np.int64 and features.index.name == "label"
    assert features.index.tolist() == labels.tolist()
    assert set(features.dtypes) == {np.dtype(np.float32)}
    for name in ["Nuclei_AreaShape_Area", "Cells_Intensity_MeanIntensity_Actin",
                 "Cytoplasm_Texture_Contrast_Tubulin_3_00", "Cells_Correlation_Correlation_DNA_Actin",
                 "Cells_Correlation_Manders_Actin_DNA", "Nuclei_AreaShape_Zernike_9_9", "Cells_AreaShape_HuMoment_6",
                 "Cells_RadialDistribution_FracAtD_DNA_1of4", "Cytoplasm_RadialDistribution_MeanFrac_Actin_4of4",
                 "Cells_Intensity_MassDisplacement_DNA", "Cells_Neighbors_NumberOfNeighbors_Adjacent"]:
        assert name in features.columns, name
    assert not features.columns.duplicated().any()
    # nucleus k lies in cell k: areas add up, and the ring fractions sum to one
    area = features[["Nuclei_AreaShape_Area", "Cytoplasm_AreaShape_Area", "Cells_AreaShape_Area"]]
    ok = area.notna().all(axis=1)
    np.testing.assert_allclose(area[ok].iloc[:, 0] + area[ok].iloc[:, 1], area[ok].iloc[:, 2])
    rings = features[[f"Cells_RadialDistribution_FracAtD_DNA_{k}of4" for k in range(1, 5)]].sum(axis=1)
    np.testing.assert_allclose(rings, 1, atol=1e-5)
    # options: fewer groups and compartments, another texture scale
    small = measure_field(images, nuclei, cells, CHANNELS, compartments=("Cells",), groups=("Texture",),
                          texture_scale=5)
    assert all(c.startswith("Cells_Texture_") and c.endswith(("_5_00", "_5_01", "_5_02", "_5_03"))
               for c in small.columns)
    assert small.shape == (len(labels), 13 * 4 * 3)
    assert default_options()["texture_scale"] == 3 and default_options()["radial_bins"] == 4


def _max_rel(mine, theirs):
    mine, theirs = np.asarray(mine, float), np.asarray(theirs, float)
    assert np.array_equal(np.isnan(mine), np.isnan(theirs))
    scale = np.maximum(np.abs(theirs), 1e-3 * np.nanmax(np.abs(theirs)) + 1e-9)  # floor: round-off of zeros
    return np.nanmax(np.abs(mine - theirs) / scale)


def test_agrees_with_cp_measure(field, features):
    """Shape and intensity within 1e-3 of cp_measure (CellProfiler); texture, radial distribution and
    correlations too."""
    images, nuclei, cells = field
    core = cp_bulk.get_core_measurements(legacy=True)
    corr = cp_bulk.get_correlation_measurements()
    pixels = [im.astype(np.float64) / 65535 for im in images]
    checked = 0
    for comp, lab in compartment_labels(nuclei, cells).items():
        present = np.unique(lab)
        present = present[present > 0]
        ours = features.loc[present]
        lab = lab.astype(np.int32)
        ref = {}
        for fn in ("sizeshape", "zernike", "feret"):
            ref.update(core[fn](lab, None))
        for key, values in ref.items():
            col = f"{comp}_AreaShape_{key}"
            if col not in ours or key in ("CentralMoment_0_1", "CentralMoment_1_0"):
                continue  # first central moments are 0 by definition (cp_measure: round-off ~1e-11)
            if key.startswith("Zernike"):  # pixels exactly on the enclosing circle: see README
                radius = ours[f"{comp}_AreaShape_MaxFeretDiameter"].to_numpy() / 2
                assert np.all(np.abs(ours[col] - np.asarray(values)) <= 4 / (np.pi * radius ** 2) + 1e-6), col
            else:
                assert _max_rel(ours[col], values) <= 1e-3, col
            checked += 1
        for c, channel in enumerate(CHANNELS):
            for key, values in core["intensity"](lab, pixels[c]).items():
                col = f"{comp}_{key}_{channel}"
                if col in ours:
                    assert _max_rel(ours[col], values) <= 1e-3, col
                    checked += 1
            for key, values in core["texture"](lab, pixels[c]).items():
                feature, scale, direction, _levels = key.split("_")
                col = f"{comp}_Texture_{feature}_{channel}_{scale}_{direction}"
                assert _max_rel(ours[col], values) <= 1e-4, col
                checked += 1
            for key, values in core["radial_distribution"](lab, pixels[c]).items():
                _, feature, ring = key.split("_")
                mine, theirs = ours[f"{comp}_RadialDistribution_{feature}_{channel}_{ring}"].to_numpy(), np.asarray(values)
                if feature == "RadialCV":  # an empty ring: NaN here, 0 in CellProfiler
                    assert np.all(theirs[np.isnan(mine)] == 0), key
                    mine, theirs = mine[~np.isnan(mine)], theirs[~np.isnan(mine)]
                assert _max_rel(mine, theirs) <= 1e-4, (comp, key, channel)
                checked += 1
        for a, b in combinations(range(3), 2):
            pear = corr["pearson"](pixels[a], pixels[b], lab)
            name = f"{comp}_Correlation_Correlation_{CHANNELS[a]}_{CHANNELS[b]}"
            assert _max_rel(ours[name], pear["Correlation_Pearson"]) <= 1e-4, name
            manders = corr["manders_fold"](pixels[a], pixels[b], lab)
            name = f"{comp}_Correlation_Manders_{CHANNELS[a]}_{CHANNELS[b]}"
            assert _max_rel(ours[name], manders["Correlation_Manders_1"]) <= 1e-4, name
            checked += 2
    assert checked > 3 * (60 + 3 * 15)


def _toy():
    """Four cells: 1 normal, 2 = one pixel, 3 = nucleus fills the cell (no cytoplasm), 4 no nucleus."""
    cells = np.zeros((40, 40), np.uint32)
    nuclei = np.zeros_like(cells)
    yy, xx = np.mgrid[:40, :40]
    cells[(yy - 12) ** 2 + (xx - 12) ** 2 < 81] = 1
    nuclei[(yy - 12) ** 2 + (xx - 12) ** 2 < 16] = 1
    cells[30, 5] = nuclei[30, 5] = 2
    cells[25:34, 20:29] = 3
    nuclei[25:34, 20:29] = 3
    cells[2:9, 28:38] = 4
    rng = np.random.default_rng(0)
    images = rng.integers(500, 5000, size=(3, 40, 40)).astype(np.uint16)
    return images, nuclei, cells


def test_undefined_values_are_nan_not_zero():
    images, nuclei, cells = _toy()
    images[1] = 65535  # saturated channel
    images[2] = 0      # all-zero channel
    df = measure_field(images, nuclei, cells, ["DNA", "Sat", "Zero"])
    assert df.index.tolist() == [1, 2, 3, 4]
    # cell 1 is fully defined in its own features except those of the flat channels
    assert np.isfinite(df.loc[1, [c for c in df if "Sat" not in c and "Zero" not in c]]).all()
    # one-pixel object: area 1, perimeter 0 -> form factor, eccentricity, Zernike and texture undefined
    assert df.loc[2, "Cells_AreaShape_Area"] == 1
    for col in ["Cells_AreaShape_FormFactor", "Cells_AreaShape_Eccentricity", "Cells_AreaShape_Zernike_0_0",
                "Cells_Texture_Contrast_DNA_3_00", "Cells_Correlation_Correlation_DNA_Sat"]:
        assert np.isnan(df.loc[2, col]), col
    assert df.loc[2, "Cells_Intensity_MeanIntensity_DNA"] == pytest.approx(images[0, 30, 5] / 65535, rel=1e-6)
    # empty cytoplasm: every Cytoplasm feature NaN; its nucleus and cell are measured
    cyto = [c for c in df if c.startswith("Cytoplasm_")]
    assert df.loc[3, cyto].isna().all()
    assert df.loc[3, "Nuclei_AreaShape_Area"] == 81 and df.loc[3, "Cells_AreaShape_Area"] == 81
    # no nucleus: Nuclei features NaN, Cytoplasm = the whole cell
    assert df.loc[4, [c for c in df if c.startswith("Nuclei_")]].isna().all()
    assert df.loc[4, "Cytoplasm_AreaShape_Area"] == df.loc[4, "Cells_AreaShape_Area"] == 70
    # saturated channel: constant -> defined mean, zero std, undefined Pearson
    assert df.loc[1, "Cells_Intensity_MeanIntensity_Sat"] == 1.0
    assert df.loc[1, "Cells_Intensity_StdIntensity_Sat"] == 0.0
    assert np.isnan(df.loc[1, "Cells_Correlation_Correlation_DNA_Sat"])
    # all-zero channel: integrated 0 is a value; fractions and displacement are undefined
    assert df.loc[1, "Cells_Intensity_IntegratedIntensity_Zero"] == 0.0
    for col in ["Cells_Intensity_MassDisplacement_Zero", "Cells_RadialDistribution_FracAtD_Zero_1of4",
                "Cells_Texture_Contrast_Zero_3_00", "Cells_Correlation_Manders_Zero_DNA"]:
        assert np.isnan(df.loc[1, col]), col
    report = undefined_report(df)
    assert report.loc["Nuclei_AreaShape_Area", "n_nan"] == 1
    assert report.loc["Cytoplasm_AreaShape_Area", "n_nan"] == 2  # cells 2 and 3: nucleus fills the cell
    assert "Cells_AreaShape_Area" not in report.index
    assert report["fraction"].between(0, 1).all()


def test_sparse_huge_labels_give_the_same_features():
    images, nuclei, cells = _toy()
    ref = measure_field(images, nuclei, cells, CHANNELS)
    big = np.array([0, 7, 4_000_000_000, 4_000_000_001, 4_000_000_002], np.uint32)
    df = measure_field(images, big[nuclei], big[cells], CHANNELS)
    assert df.index.tolist() == big[1:].tolist()
    pd.testing.assert_frame_equal(df.reset_index(drop=True), ref.reset_index(drop=True))


def test_nan_pixels_are_left_out():
    images, nuclei, cells = _toy()
    floats = images.astype(np.float64)
    floats[0, 12, 12] = np.nan  # inside nucleus 1 and cell 1
    df = measure_field(floats, nuclei, cells, CHANNELS, groups=("Intensity", "Correlation", "RadialDistribution"))
    ref = measure_field(images, nuclei, cells, CHANNELS, groups=("Intensity",))
    inside = (cells == 1) & ~((np.arange(40)[:, None] == 12) & (np.arange(40)[None, :] == 12))
    expected = images[0][inside].astype(np.float64).mean() / 65535
    assert df.loc[1, "Cells_Intensity_MeanIntensity_DNA"] == pytest.approx(expected, rel=1e-6)
    assert df.loc[1, "Cells_Intensity_MeanIntensity_Actin"] == ref.loc[1, "Cells_Intensity_MeanIntensity_Actin"]
    assert np.isfinite(df.loc[1, "Cells_Correlation_Correlation_DNA_Actin"])
    assert np.isfinite(df.loc[1, "Cells_RadialDistribution_FracAtD_DNA_1of4"])
    # an object whose pixels are all NaN is undefined, not zero
    floats[0][cells == 2] = np.nan
    df = measure_field(floats, nuclei, cells, CHANNELS, groups=("Intensity",))
    assert np.isnan(df.loc[2, "Cells_Intensity_MeanIntensity_DNA"])
    assert np.isnan(df.loc[2, "Cells_Intensity_IntegratedIntensity_DNA"])


def test_neighbors_count_touching_cells():
    cells = np.zeros((20, 30), np.uint32)
    cells[2:8, 2:8], cells[2:8, 8:14], cells[8:14, 2:8] = 1, 2, 3   # 1 touches 2 and 3; 2-3 diagonal
    cells[15:19, 25:29] = 4                                         # alone
    images = np.full((1, 20, 30), 1000, np.uint16)
    df = measure_field(images, cells, cells, ["DNA"], groups=("Neighbors",), neighbor_distance=10)
    assert df["Cells_Neighbors_NumberOfNeighbors_Adjacent"].tolist() == [2, 2, 2, 0]
    assert df.loc[4, "Cells_Neighbors_PercentTouching_Adjacent"] == 0
    assert 0 < df.loc[1, "Cells_Neighbors_PercentTouching_Adjacent"] < 100
    assert df.loc[1, "Cells_Neighbors_FirstClosestDistance_Adjacent"] == pytest.approx(6.0)
    assert df.loc[1, "Nuclei_Neighbors_NumberOfNeighbors_10"] == 2


def test_empty_field_and_bad_input():
    images = np.zeros((3, 16, 16), np.uint16)
    empty = np.zeros((16, 16), np.uint32)
    df = measure_field(images, empty, empty, CHANNELS)
    assert len(df) == 0 and df.index.dtype == np.int64 and "Cells_AreaShape_Area" in df.columns
    with pytest.raises(ValueError, match="channel names"):
        measure_field(images, empty, empty, ["DNA", "Actin"])
    with pytest.raises(ValueError, match="shape"):
        measure_field(images, empty[:8], empty, CHANNELS)
    with pytest.raises(ValueError, match="integer"):
        measure_field(images, empty.astype(float), empty, CHANNELS)
    with pytest.raises(ValueError, match="distinct"):
        measure_field(images, empty, empty, ["DNA", "DNA", "Actin"])
    with pytest.raises(ValueError, match="unknown"):
        measure_field(images, empty, empty, CHANNELS, groups=("Costs",))


def test_agrees_with_cp_measure_on_real_nuclei():
    """Real, irregular masks (StarDist / DSB2018 nuclei; cells = nuclei grown by 6 px)."""
    import tifffile
    from scipy import ndimage as ndi
    from skimage.segmentation import expand_labels

    from .conftest import real_path

    folder = real_path("stardist_test_nuclei")
    image = tifffile.imread(folder / "img2d.tif").astype(np.float64) * 250  # 0-235 -> most of uint16
    nuclei = tifffile.imread(folder / "mask2d.tif").astype(np.uint32)
    cells = expand_labels(nuclei, 6).astype(np.uint32)
    images = np.stack([image, ndi.gaussian_filter(image, 3) + 300]).clip(0, 65535).astype(np.uint16)
    df = measure_field(images, nuclei, cells, ["DNA", "Blur"], groups=("AreaShape", "Intensity"))
    core = cp_bulk.get_core_measurements(legacy=True)
    for comp, lab in compartment_labels(nuclei.astype(np.int64), cells.astype(np.int64)).items():
        present = np.unique(lab)
        present = present[present > 0]
        ours = df.loc[present]
        lab = lab.astype(np.int32)
        ref = core["sizeshape"](lab, None) | core["feret"](lab, None)
        for key in ["Area", "Perimeter", "FormFactor", "Solidity", "Extent", "Eccentricity", "MajorAxisLength",
                    "MinorAxisLength", "Orientation", "MaximumRadius", "MedianRadius", "MinFeretDiameter",
                    "MaxFeretDiameter", "HuMoment_1", "NormalizedMoment_0_2"]:
            assert _max_rel(ours[f"{comp}_AreaShape_{key}"], ref[key]) <= 1e-3, (comp, key)
        for c, channel in enumerate(["DNA", "Blur"]):
            ref = core["intensity"](lab, images[c].astype(np.float64) / 65535)
            for key in ["Intensity_IntegratedIntensity", "Intensity_StdIntensity", "Intensity_LowerQuartileIntensity",
                        "Intensity_MedianIntensity", "Intensity_MADIntensity", "Intensity_MassDisplacement",
                        "Intensity_MeanIntensityEdge", "Intensity_MaxIntensityEdge"]:
                assert _max_rel(ours[f"{comp}_{key}_{channel}"], ref[key]) <= 1e-3, (comp, key, channel)
