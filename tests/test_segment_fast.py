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
