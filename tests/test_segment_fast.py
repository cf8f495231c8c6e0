"""The classical segmenter's faster filters give exactly scipy.ndimage's results."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from cellkit.segment._fast import fill_holes, label_maximum, median3


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (2, 3), (5, 9), (64, 81)])
def test_same_as_scipy(shape):
    rng = np.random.default_rng(sum(shape))
    for values in (rng.integers(0, 4, shape).astype(np.float32), rng.normal(size=shape)):  # ties; float64
        np.testing.assert_array_equal(median3(values), ndi.median_filter(values, size=3, mode="reflect"))
        assert median3(values).dtype == values.dtype
    for fraction in (0.3, 0.55, 0.8):  # sparse to nearly full masks: holes of every size, open and closed
        mask = rng.random(shape) < fraction
        np.testing.assert_array_equal(fill_holes(mask), ndi.binary_fill_holes(mask))
        labels, n = ndi.label(rng.random(shape) < fraction)
        values = rng.normal(size=shape).astype(np.float32) - 5  # all negative: absent labels give 0, as scipy
        labels[labels == 1] = 0  # label 1 absent
        if n:
            np.testing.assert_array_equal(label_maximum(values, labels, n),
                                          ndi.maximum(values, labels=labels, index=np.arange(1, n + 1)))


def test_median3_falls_back_for_non_finite_and_integer_images():
    image = np.arange(20, dtype=np.float32).reshape(4, 5)
    image[1, 2] = np.nan
    np.testing.assert_array_equal(median3(image), ndi.median_filter(image, size=3, mode="reflect"))
    counts = np.arange(20, dtype=np.uint16).reshape(4, 5)
    np.testing.assert_array_equal(median3(counts), ndi.median_filter(counts, size=3, mode="reflect"))


@pytest.mark.parametrize("shape", [(3, 3), (5, 9), (64, 81)])
def test_opencv_filters_match_scipy(shape):
    from skimage import filters, morphology

    from cellkit.segment._fast import binary_open, box5, edt, gaussian, remove_small, sobel, zoom_corners, zoom_grid

    rng = np.random.default_rng(sum(shape))
    image = ndi.gaussian_filter(rng.random(shape).astype(np.float32), 2) * 10
    for fraction in (0.3, 0.6, 0.9):
        mask = rng.random(shape) < fraction
        np.testing.assert_array_equal(binary_open(mask), ndi.binary_opening(mask, morphology.disk(1)))  # exact
        labels, _ = ndi.label(mask)
        np.testing.assert_array_equal(remove_small(mask, 4), (np.bincount(labels.ravel()) >= 4)[labels] & mask)
        np.testing.assert_allclose(edt(mask), ndi.distance_transform_edt(mask), atol=1e-5)
    for sigma in (1.0, 1.5, 8.3):
        np.testing.assert_allclose(gaussian(image, sigma), ndi.gaussian_filter(image, sigma), atol=1e-5)
    np.testing.assert_allclose(sobel(image), filters.sobel(image), atol=1e-5)
    np.testing.assert_allclose(box5(image), ndi.uniform_filter(image, 5, mode="reflect"), atol=1e-5)
    grid = rng.random((4, 6))
    np.testing.assert_allclose(zoom_grid(grid, 16), ndi.zoom(grid, 16, order=1, mode="nearest", grid_mode=True),
                               atol=1e-6)
    np.testing.assert_allclose(zoom_corners(grid, shape), ndi.zoom(grid, (shape[0] / 4, shape[1] / 6), order=1),
                               atol=1e-6)


def test_percentile_is_numpys():
    from cellkit.segment._fast import percentile

    rng = np.random.default_rng(0)
    for values in (rng.normal(size=50_001).astype(np.float32), rng.integers(0, 4, 1000).astype(np.float32),
                   rng.normal(size=7), np.array([3.0])):
        for q in ([1, 99.8], [25, 50, 75], [0, 100], 99):
            np.testing.assert_allclose(percentile(values, q), np.percentile(values, q), rtol=0, atol=1e-6)


def test_li_otsu_relabel_and_expand_match_the_libraries():
    from skimage import filters
    from skimage.segmentation import expand_labels as skimage_expand

    from cellkit.segment._fast import expand_labels
    from cellkit.segment._kernels import label_otsu
    from cellkit.segment.objects import relabel_raster
    from cellkit.segment.thresholds import li

    rng = np.random.default_rng(3)
    image = ndi.gaussian_filter(rng.random((120, 150)).astype(np.float32), 2)
    assert li(image) == pytest.approx(filters.threshold_li(image), abs=1e-6)
    labels, n = ndi.label(ndi.gaussian_filter(rng.random((120, 150)), 3) > 0.52)
    otsu = label_otsu(image.ravel(), labels.ravel(), n, 20)
    for k in range(1, n + 1):
        pixels = image[labels == k]
        if pixels.size >= 20 and pixels.min() < pixels.max():
            assert otsu[k] == pytest.approx(filters.threshold_otsu(pixels), abs=1e-6)
        else:
            assert np.isnan(otsu[k])
    shuffled = np.concatenate([[0], rng.permutation(n) + 1])[labels]  # numbered out of raster order
    np.testing.assert_array_equal(relabel_raster(shuffled), ndi.label(labels > 0)[0])
    # nearest labels by OpenCV's chamfer propagation: the reach is exact, near-ties may go either way
    for reach in (2, 9):
        ours, theirs = expand_labels(labels, reach), skimage_expand(labels, reach)
        np.testing.assert_array_equal(ours > 0, theirs > 0)
        assert (ours != theirs).mean() < 0.005


def test_convex_areas_are_regionprops_and_robust_std_is_numpys():
    import cv2
    from skimage import measure

    from cellkit.segment._fast import gaussian, gaussian_wide
    from cellkit.segment._convex import convex_areas
    from cellkit.segment._kernels import robust_std

    rng = np.random.default_rng(5)
    mask = (ndi.gaussian_filter(rng.random((150, 170)), 2.5) > 0.52) | (rng.random((150, 170)) < 0.01)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    ours = convex_areas(labels, stats, np.arange(1, stats.shape[0]))
    for p in measure.regionprops(measure.label(mask)):
        assert ours[labels[tuple(p.coords[0])] - 1] == p.area_convex

    def numpy_robust_std(values):  # the reference: interquartile start, three rounds of 4-sigma clipping
        centre = np.median(values)
        q1, q3 = np.percentile(values, [25, 75])
        scale = (q3 - q1) / 1.349 or values.std()
        for _ in range(3):
            kept = values[np.abs(values - centre) <= 4 * scale]
            if kept.size < 2:
                break
            centre, scale = np.median(kept), kept.std()
        return scale

    for values in (rng.standard_t(3, 20_000), rng.integers(0, 3, 500).astype(float), np.array([1.0, 1, 1, 5])):
        assert robust_std(values) == pytest.approx(numpy_robust_std(values), rel=1e-9, abs=1e-12)
    image = ndi.gaussian_filter(rng.random((201, 250)).astype(np.float32), 6)  # smooth, odd-sized
    for sigma in (2.0, 5.5, 11.0):  # narrow: the full-resolution Gaussian; wide: close to it
        assert np.abs(gaussian_wide(image, sigma) - gaussian(image, sigma)).max() < 2e-3 * np.ptp(image)


def test_object_peaks_are_peak_local_max_with_labels():
    from skimage import measure
    from skimage.feature import peak_local_max

    from cellkit.segment._peaks import object_peaks

    rng = np.random.default_rng(7)
    for trial in range(6):
        mask = ndi.gaussian_filter(rng.random((120, 140)), 2 + trial % 3) > 0.52
        mask |= rng.random(mask.shape) < 0.01  # single pixels: the plateau rule
        relief = ndi.distance_transform_edt(mask).astype(np.float32)  # plateaus and ties
        if trial % 2:
            relief = ndi.gaussian_filter(relief, 1.5)
        for d in (2, 5):
            theirs = peak_local_max(relief, min_distance=d, labels=measure.label(mask), exclude_border=False)
            ours = object_peaks(relief, mask, d)
            assert sorted(map(tuple, ours.tolist())) == sorted(map(tuple, theirs.tolist()))


def test_opencv_runs_single_threaded_inside_and_is_restored():
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    from cellkit.segment._fast import one_cv2_thread

    seen = []

    @one_cv2_thread
    def inside(_):
        seen.append(cv2.getNumThreads())
        return one_cv2_thread(lambda: cv2.getNumThreads())()  # nested calls keep it at 1

    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(3)
        with ThreadPoolExecutor(4) as pool:
            assert set(pool.map(inside, range(16))) == {1}
        assert set(seen) == {1} and cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(before)
