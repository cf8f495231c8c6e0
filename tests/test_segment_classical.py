import numpy as np
import pytest

from cellkit.datasets import render_field
from cellkit.datasets.phenotypes import phenotype
from cellkit.datasets.render import illumination_field
from cellkit.segment import ClassicalParams, border_labels, get_segmenter, score_images

from .conftest import real_path

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
    assert empty.n_objects == 0 and empty.empty and any(n.startswith("empty field") for n in empty.notes)
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
    with pytest.raises(ValueError, match="holds the nuclei"):  # no role given, none inferable
        seg.segment_field(images, ["A", "B", "C"])
    nan = images.astype(np.float32)
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        seg.segment_field(nan, CHANNELS)
    with pytest.raises(ValueError, match="unknown threshold method"):
        get_segmenter("classical", params=ClassicalParams(threshold_method="mean")).segment_field(images, CHANNELS)
    with pytest.raises(ValueError, match="unknown backend"):
        get_segmenter("stardist")


def _disks(shape, centres, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, bool)
    for cy, cx in centres:
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    return mask


def test_diameter_from_mask_ignores_fragments_and_background_blobs():
    from cellkit.segment.classical import diameter_from_mask

    mask = _disks((400, 400), [(40 + 80 * i, 40 + 80 * j) for i in range(3) for j in range(3)], 15)
    assert diameter_from_mask(mask) == pytest.approx(31, abs=1.5)
    fragments = mask.copy()
    for k in range(40):  # many small textured pieces (more than the nuclei) must not shrink the estimate
        fragments[260 + (k // 10) * 8: 264 + (k // 10) * 8, 10 + (k % 10) * 8: 14 + (k % 10) * 8] = True
    assert diameter_from_mask(fragments) == pytest.approx(31, abs=1.5)
    blob = mask.copy()
    blob[250:400, 250:400] = True  # a background blob over 10 % of the field is not a nucleus
    assert diameter_from_mask(blob) == pytest.approx(31, abs=1.5)
    assert diameter_from_mask(np.zeros((50, 50), bool)) == 0.0


def test_local_threshold_keeps_dim_nuclei_beside_bright_ones():
    from cellkit.segment.classical import segment_nuclei_local

    rng = np.random.default_rng(0)
    centres = [(40 + 60 * i, 40 + 60 * j) for i in range(4) for j in range(4)]
    image = rng.normal(10, 2, (260, 260))
    for k, (cy, cx) in enumerate(centres):  # brightness spans 6x: a global Otsu threshold loses the dim half
        image[_disks(image.shape, [(cy, cx)], 12)] += 40 if k % 2 else 240
    truth = np.zeros(image.shape, np.uint32)
    for k, c in enumerate(centres):
        truth[_disks(image.shape, [c], 12)] = k + 1
    local = segment_nuclei_local(image.clip(0, 255).astype(np.uint8))
    otsu = get_segmenter("classical", params=ClassicalParams(threshold_method="otsu")).segment_nuclei(
        [image.clip(0, 255).astype(np.uint8)])[0]
    assert score_images([(truth, local)])["pooled"]["ap@0.75"] == 1.0
    assert score_images([(truth, otsu)])["pooled"]["tp@0.5"] <= 8


def test_local_default_on_real_dsb2018_images():
    """Regression guard on real nuclei: the default must stay well above the global Otsu threshold."""
    from cellkit.segment.train import load_image_mask_pairs

    dsb = real_path("dsb2018_stage1_test_fluo")
    names, images, masks = load_image_mask_pairs(dsb / "images", dsb / "masks")
    pick = [i for i, n in enumerate(names) if n[:8] in ("4f949bd8", "336d3e41", "505bc0a3", "df40099c", "0999dab0")]
    default = get_segmenter("classical").segment_nuclei([images[i] for i in pick])
    otsu = get_segmenter("classical", params=ClassicalParams(threshold_method="otsu")).segment_nuclei(
        [images[i] for i in pick])
    ap_default = score_images([(masks[i], p) for i, p in zip(pick, default)])["pooled"]["ap@0.5"]
    ap_otsu = score_images([(masks[i], p) for i, p in zip(pick, otsu)])["pooled"]["ap@0.5"]
    assert ap_default >= 0.5 and ap_default >= ap_otsu + 0.2, (ap_default, ap_otsu)
    # the dense image whose diameter estimate used to fail is split into many nuclei, not one object
    dense = default[[names[i][:8] for i in pick].index("4f949bd8")]
    assert dense.max() > 50
