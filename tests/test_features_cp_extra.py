"""Granularity, radial Zernikes and Costes: CellProfiler names, agreement with cp_measure (synthetic and real)."""

from __future__ import annotations

import numpy as np
import pytest

from cellkit.datasets import CHANNELS, phenotype, render_field
from cellkit.features import compartment_labels, measure_field

cp_core = pytest.importorskip("cp_measure.core.measuregranularity", reason="cp_measure (dev extra) is needed")


@pytest.fixture(scope="module")
def field():
    return render_field(phenotype(), (192, 256), rng=np.random.default_rng(5))


def _real_field():
    import tifffile
    from skimage.segmentation import expand_labels

    from .conftest import real_path

    folder = real_path("stardist_test_nuclei")
    image = tifffile.imread(folder / "img2d.tif").astype(np.float64) * 250  # 0-235 -> most of uint16
    nuclei = tifffile.imread(folder / "mask2d.tif").astype(np.uint32)
    cells = expand_labels(nuclei, 6).astype(np.uint32)
    return image.clip(0, 65535).astype(np.uint16)[None], nuclei, cells


def _check_granularity(images, nuclei, cells, channels):
    df = measure_field(images, nuclei, cells, channels, groups=("Granularity",))
    assert df.shape[1] == 3 * len(channels) * 16
    for comp, lab in compartment_labels(nuclei.astype(np.int64), cells.astype(np.int64)).items():
        present = np.unique(lab)
        present = present[present > 0]
        for c, channel in enumerate(channels):
            ref = cp_core.get_granularity(lab.astype(np.int32), images[c].astype(np.float64) / 65535)
            for k in range(1, 17):
                mine = df.loc[present, f"{comp}_Granularity_{k}_{channel}"].to_numpy(np.float64)
                theirs = ref[f"Granularity_{k}"][present - 1]
                # float32 output of percentages (|value| <= 100)
                np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-4, err_msg=f"{comp} {k} {channel}")
    return df


def test_granularity_matches_cp_measure_synthetic(field):
    df = _check_granularity(*field, CHANNELS)
    assert df.notna().all().all()
    # a blank channel has no spectrum to lose: all steps 0
    images = field[0].copy()
    images[2] = 0
    blank = measure_field(images, field[1], field[2], CHANNELS, groups=("Granularity",), compartments=("Cells",))
    assert (blank.filter(like="_Actin") == 0).all().all()
    # too small to subsample: NaN, not 0
    tiny = measure_field(field[0][:, :6, :6], field[1][:6, :6], field[2][:6, :6], CHANNELS, groups=("Granularity",))
    assert tiny.isna().all().all()


def test_granularity_matches_cp_measure_real():
    _check_granularity(*_real_field(), ["DNA"])


def _check_radial_zernikes(images, nuclei, cells, channels):
    """Magnitudes within 4 pixel weights (max intensity / area: one pixel lying on the enclosing
    circle, kept here and kept or dropped by CellProfiler's round-off, see the README); phases
    within arcsin(4 / 20) where the magnitude exceeds 20 pixel weights."""
    from cellkit.features._objects import Objects, cellprofiler_scale
    from cp_measure.core.measureobjectintensitydistribution import get_radial_zernikes

    df = measure_field(images, nuclei, cells, channels, groups=("RadialZernikes",))
    assert df.shape[1] == 3 * len(channels) * 30 * 2
    for comp, lab in compartment_labels(nuclei.astype(np.int64), cells.astype(np.int64)).items():
        present = np.unique(lab)
        present = present[present > 0]
        objects = Objects(lab, present)
        for c, channel in enumerate(channels):
            pixels = cellprofiler_scale(images[c])
            weight = objects.reduce(np.maximum, pixels.ravel()[objects.flat]) / objects.counts
            ref = get_radial_zernikes(lab.astype(np.int32), pixels)
            for key, values in ref.items():
                name = key.replace("Magnitude_", f"Magnitude_{channel}_").replace("Phase_", f"Phase_{channel}_")
                mine = df.loc[present, f"{comp}_{name}"].to_numpy(np.float64)
                theirs = np.asarray(values, np.float64)[present - 1]
                if "Magnitude" in key:
                    assert np.all(np.abs(mine - theirs) <= 4 * weight), (comp, name)
                else:
                    magnitude = df.loc[present, f"{comp}_{name.replace('Phase', 'Magnitude')}"].to_numpy(np.float64)
                    big = magnitude > 20 * weight
                    gap = np.abs(np.angle(np.exp(1j * (mine - theirs))))[big]
                    assert np.all(gap <= np.arcsin(4 / 20)), (comp, name)


def test_radial_zernikes_match_cp_measure_synthetic(field):
    _check_radial_zernikes(*field, CHANNELS)
    small = measure_field(*field, CHANNELS, groups=("RadialZernikes",), radial_zernike_degree=3,
                          radial_zernike_phase=False, compartments=("Nuclei",))
    assert list(small.columns[:3]) == [f"Nuclei_RadialDistribution_ZernikeMagnitude_DNA_{n}_{m}"
                                       for n, m in [(0, 0), (1, 1), (2, 0)]]
    assert small.shape[1] == 6 * 3
    # the 0_0 magnitude is the mean intensity (V_00 = 1 inside the circle)
    mean = measure_field(*field, CHANNELS, groups=("Intensity",), compartments=("Nuclei",))
    np.testing.assert_allclose(small["Nuclei_RadialDistribution_ZernikeMagnitude_DNA_0_0"],
                               mean["Nuclei_Intensity_MeanIntensity_DNA"], rtol=1e-5)


def test_radial_zernikes_match_cp_measure_real():
    _check_radial_zernikes(*_real_field(), ["DNA"])


def test_max_tree_reconstruction_is_exact():
    """The max-tree reconstruction gives exactly skimage's reconstruction (4-connected), with ties."""
    from skimage.morphology import disk, erosion, max_tree, reconstruction

    from cellkit.features.granularity import _reconstruct_from_tree

    rng = np.random.default_rng(0)
    image = np.round(rng.random((40, 50)) * 6) / 6  # many equal levels (plateaus)
    image[10:20, 10:30] = 0.5
    parent, order = max_tree(image, connectivity=1)
    marker = image
    for _ in range(4):
        marker = erosion(marker, footprint=disk(1, dtype=bool))
        out = np.empty(image.size)
        _reconstruct_from_tree(marker.ravel(), image.ravel(), parent.ravel(), order.ravel(), out)
        assert np.array_equal(out.reshape(image.shape), reconstruction(marker, image, footprint=disk(1, dtype=bool)))


def test_euler_number_and_inertia_match_cp_measure(field):
    from cp_measure.bulk import get_core_measurements
    from skimage.measure import regionprops

    from cellkit.features._objects import Objects
    from cellkit.features.shape import euler_number

    df = measure_field(*field, CHANNELS, groups=("AreaShape",))
    sizeshape = get_core_measurements()["sizeshape"]
    for comp, lab in compartment_labels(field[1].astype(np.int64), field[2].astype(np.int64)).items():
        present = np.unique(lab)
        present = present[present > 0]
        ref = np.asarray(sizeshape(lab.astype(np.int32), None)["EulerNumber"])[present - 1]
        np.testing.assert_array_equal(df.loc[present, f"{comp}_AreaShape_EulerNumber"], ref)
        ref = sizeshape(lab.astype(np.int32), None)
        for key in ["InertiaTensor_0_0", "InertiaTensor_0_1", "InertiaTensor_1_0", "InertiaTensor_1_1",
                    "InertiaTensorEigenvalues_0", "InertiaTensorEigenvalues_1"]:
            np.testing.assert_allclose(df.loc[present, f"{comp}_AreaShape_{key}"],
                                       np.asarray(ref[key])[present - 1], rtol=1e-5, atol=1e-6, err_msg=key)
    assert (df["Cytoplasm_AreaShape_EulerNumber"] == 0).any()  # rings: one component, one hole
    # fragmented objects with holes and touching labels (many components per label)
    rng = np.random.default_rng(0)
    noise = (rng.random((60, 70)) > 0.5) * rng.integers(1, 4, (60, 70))
    np.testing.assert_array_equal(euler_number(Objects(noise, np.arange(1, 4))),
                                  [r.euler_number for r in regionprops(noise)])


def _check_costes(images, nuclei, cells, channels):
    """Costes C1 / C2 equal cp_measure's (its default 'Faster' bisection on the image's grid: 255 for uint8,
    65535 for uint16) to float32 round-off, NaN for the same objects."""
    import warnings

    from cp_measure.core.measurecolocalization import get_correlation_costes

    df = measure_field(images, nuclei, cells, channels, groups=("Costes",))
    assert df.shape[1] == 3 * 2 * len(channels) * (len(channels) - 1) // 2
    defined = 0
    for comp, lab in compartment_labels(nuclei.astype(np.int64), cells.astype(np.int64)).items():
        present = np.unique(lab)
        present = present[present > 0]
        for i, a in enumerate(channels):
            for j, b in enumerate(channels[i + 1:], start=i + 1):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # cp_measure warns for each undefined object
                    ref = get_correlation_costes(images[i], images[j], lab.astype(np.int32))  # grid from the dtype
                for key, name in (("Correlation_Costes_1", f"{comp}_Correlation_Costes_{a}_{b}"),
                                  ("Correlation_Costes_2", f"{comp}_Correlation_Costes_{b}_{a}")):
                    theirs = np.asarray(ref[key], np.float64)[present - 1]
                    mine = df.loc[present, name].to_numpy(np.float64)
                    np.testing.assert_array_equal(np.isnan(mine), np.isnan(theirs), err_msg=name)
                    np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-6, err_msg=name)
                    defined += int(np.isfinite(mine).sum())
    return defined


def test_costes_matches_cp_measure_synthetic(field):
    assert _check_costes(*field, CHANNELS) > 20
    assert "Correlation_Costes" not in " ".join(measure_field(*field, CHANNELS).columns)  # not a default group


def test_costes_matches_cp_measure_real():
    import tifffile

    from cellkit.segment import get_segmenter

    from .conftest import real_path

    files = sorted(real_path("cellprofiler_examples", "ExampleHuman").glob("*.tif"))
    images = np.stack([tifffile.imread(f) for f in files[:3]])[:, :200, :240]  # uint8
    result = get_segmenter("classical").segment_field(images, ["DNA", "PH3", "Cells"])
    for counts in (images, images.astype(np.uint16) * np.uint16(257)):  # 8-bit grid; as stored by extract (16-bit)
        assert _check_costes(counts, result.nuclei, result.cells, ["DNA", "PH3", "Cells"]) > 20


def _cellprofiler_image_granularity(image, subsample=0.25, image_sample=0.25, element_size=10, length=16):
    """CellProfiler MeasureGranularity's per-image loop (no mask), transcribed with scipy / skimage."""
    import scipy.ndimage as ndi
    import skimage.morphology as morph

    new = (np.array(image.shape) * subsample).astype(int)
    i, j = np.mgrid[0:new[0], 0:new[1]].astype(float) / subsample
    pixels = ndi.map_coordinates(image, (i, j), order=1)
    back_shape = new * image_sample
    i, j = np.mgrid[0:back_shape[0], 0:back_shape[1]].astype(float) / image_sample
    back = ndi.map_coordinates(pixels, (i, j), order=1)
    disk = morph.disk(element_size, dtype=bool)
    back = morph.dilation(morph.erosion(back, footprint=disk), footprint=disk)
    i, j = np.mgrid[0:new[0], 0:new[1]].astype(float)
    i *= (back_shape[0] - 1) / (new[0] - 1)
    j *= (back_shape[1] - 1) / (new[1] - 1)
    pixels = np.maximum(pixels - ndi.map_coordinates(back, (i, j), order=1), 0)
    current = pixels.mean()
    start, ero, out = max(current, np.finfo(float).eps), pixels.copy(), []
    for _ in range(length):
        previous = current
        ero = morph.erosion(ero, footprint=morph.disk(1, dtype=bool))
        current = morph.reconstruction(ero, pixels, footprint=morph.disk(1, dtype=bool)).mean()
        out.append((previous - current) * 100 / start)
    return np.array(out)


def test_image_granularity_is_cellprofilers_per_image_spectrum(field):
    images, nuclei, cells = field
    df = measure_field(images, nuclei, cells, CHANNELS, groups=("Granularity",), image_granularity=True,
                       compartments=("Cells",))
    assert not any(c.startswith("Image_") for c in measure_field(*field, CHANNELS, groups=("Granularity",)).columns)
    for c, channel in enumerate(CHANNELS):
        expected = _cellprofiler_image_granularity(images[c].astype(np.float64) / 65535)
        mine = df[[f"Image_Granularity_{k}_{channel}" for k in range(1, 17)]].to_numpy(np.float64)
        assert (mine == mine[0]).all()  # one value per field, on every cell's row
        np.testing.assert_allclose(mine[0], expected, rtol=1e-5, atol=1e-5, err_msg=channel)
        assert expected[:3].sum() > 1  # a real spectrum, not zeros
