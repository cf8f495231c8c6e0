import numpy as np
import pytest

from cellkit.datasets import render_field
from cellkit.datasets.phenotypes import phenotype
from cellkit.datasets.render import illumination_field
from cellkit.segment import ClassicalParams, border_labels, get_segmenter, score_images

CHANNELS = ["DNA", "Tubulin", "Actin"]


@pytest.fixture(scope="module")
def field():
    rng = np.random.default_rng(11)
    shape = (256, 320)
    illumination = illumination_field(shape, rng, strength=0.5)  # strong vignetting
    return render_field(phenotype(), shape, rng=rng, illumination=illumination)


def _check_pairs(result):
    nuclei, cells = result.nuclei, result.cells
    assert nuclei.dtype == np.uint32 and cells.dtype == np.uint32
    ids = np.unique(cells)[1:]
    np.testing.assert_array_equal(np.unique(nuclei)[1:], ids)       # every cell one nucleus, and vice versa
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # labels 1..N
    assert (cells[nuclei > 0] == nuclei[nuclei > 0]).all()           # nucleus k inside cell k


def test_classical_accuracy_on_synthetic_field(field):
    images, true_nuclei, true_cells = field
    result = get_segmenter("classical").segment_field(images, CHANNELS)
    _check_pairs(result)
    scores = score_images([(true_nuclei, result.nuclei)])["pooled"]
    assert scores["ap@0.5"] >= 0.9, scores
    scores = score_images([(true_cells, result.cells)])["pooled"]
    assert scores["ap@0.5"] >= 0.85, scores
    np.testing.assert_array_equal(result.border, border_labels(result.cells))
    edge = np.concatenate([result.cells[0], result.cells[-1], result.cells[:, 0], result.cells[:, -1]])
    assert set(result.border) == set(np.unique(edge)) - {0} and len(result.border) > 0


@pytest.mark.parametrize("method", ["li", "log_otsu", "local"])
def test_other_thresholds_find_the_nuclei(field, method):
    images, true_nuclei, _ = field
    seg = get_segmenter("classical", params=ClassicalParams(threshold_method=method))
    scores = score_images([(true_nuclei, seg.segment_field(images, CHANNELS).nuclei)])["pooled"]
    assert scores["ap@0.5"] >= 0.8, scores


def test_channel_order_and_size_filter(field):
    images, _, _ = field
    seg = get_segmenter("classical")
    a = seg.segment_field(images, CHANNELS)
    b = seg.segment_field(images[[2, 0, 1]], ["Actin", "DNA", "Tubulin"])
    np.testing.assert_array_equal(a.cells, b.cells)
    strict = get_segmenter("classical", params=ClassicalParams(min_nucleus_area=400)).segment_field(images, CHANNELS)
    areas = np.bincount(strict.nuclei.ravel())[1:]
    assert 0 < strict.n_objects < a.n_objects and areas.min() >= 1  # nuclei clipped to cells may shrink a little
    assert np.bincount(a.nuclei.ravel())[1:].min() >= ClassicalParams().min_nucleus_area


def test_bad_inputs(field):
    images, _, _ = field
    seg = get_segmenter("classical")
    empty = seg.segment_field(np.zeros_like(images), CHANNELS)
    assert empty.n_objects == 0 and "no nuclei found" in empty.notes
    assert any("DNA is empty" in n for n in empty.notes)
    no_actin = images.copy()
    no_actin[2] = 0
    result = seg.segment_field(no_actin, CHANNELS)
    _check_pairs(result)
    assert result.n_objects > 0 and any("Actin is empty" in n for n in result.notes)
    with pytest.raises(TypeError, match="dtype"):
        seg.segment_field(images.astype(bool), CHANNELS)
    with pytest.raises(TypeError, match="dtype"):
        seg.segment_field(images.astype(np.complex64), CHANNELS)
    with pytest.raises(ValueError, match="shape"):
        seg.segment_field(images[0], CHANNELS)
    with pytest.raises(ValueError, match="nuclear channel"):
        seg.segment_field(images, ["A", "B", "C"])
    nan = images.astype(np.float32)
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        seg.segment_field(nan, CHANNELS)
    with pytest.raises(ValueError, match="unknown threshold method"):
        get_segmenter("classical", params=ClassicalParams(threshold_method="mean")).segment_field(images, CHANNELS)
    with pytest.raises(ValueError, match="unknown backend"):
        get_segmenter("stardist")
