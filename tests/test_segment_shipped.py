"""The shipped nucleus model (models/dsb2018_train_nuclei_cellkit.cp): accuracy guard, size estimation.

Trained only on dsb2018_stage1_train_fluo; scored here on the 20 images of dsb2018_stage1_test_fluo and
StarDist's DSB2018 image, which it never saw (figures in models/README.md).
"""

import numpy as np
import pytest
import tifffile

from cellkit.segment import CellposeSegmenter, score_images
from cellkit.segment.cellpose_backend import auto_diameter, load_cellpose, shipped_nucleus_model
from cellkit.segment.train import load_image_mask_pairs

from .conftest import real_path

# measured once (models/README.md), the guard sits a little below
GUARD_TEST20_AP50 = 0.68  # measured 0.700 (AP@0.75 0.436), epoch 2200, 2026-11-29
GUARD_STARDIST_AP50 = 0.81  # measured 0.837 (AP@0.75 0.717)


pytestmark = pytest.mark.usefixtures("cellpose_one_thread")


def _model():
    path = shipped_nucleus_model()
    if path is None:
        pytest.skip("the shipped nucleus model is not in models/")
    return path


def test_shipped_model_scores_its_documented_ap_on_unseen_images():
    path = _model()
    dsb = real_path("dsb2018_stage1_test_fluo")
    names, images, masks = load_image_mask_pairs(dsb / "images", dsb / "masks")
    seg = CellposeSegmenter(model=str(path), cell_model=None, gpu=False)  # default settings: diameter auto
    pooled = score_images(list(zip(masks, seg.segment_nuclei(images))))["pooled"]
    assert pooled["n_images"] == 20 and pooled["ap@0.5"] >= GUARD_TEST20_AP50, pooled
    folder = real_path("stardist_test_nuclei")
    image, truth = tifffile.imread(folder / "img2d.tif"), tifffile.imread(folder / "mask2d.tif")
    pooled = score_images([(truth, seg.segment_nuclei([image])[0])])["pooled"]
    assert pooled["ap@0.5"] >= GUARD_STARDIST_AP50, pooled


# The epoch-2200 size model puts the 0.5x image at 15.3 px against a true 11.8 (+29 %); its masks measure
# 13.1 px, within auto's 20 % tolerance of the estimate, so no second pass corrects it. A tolerance of 10 %
# was measured on the held-out training images and lost AP (0.8848 vs 0.8863), so it was not adopted.
# Strict: this fails once a better size model sizes the image right.
SIZE_MISS = pytest.mark.xfail(strict=True, reason="the size model's +29 % error at 0.5x (models/README.md)")


@pytest.mark.parametrize("scale", [pytest.param(0.5, marks=SIZE_MISS), 2.0])
def test_size_model_finds_the_diameter_of_rescaled_images(scale):
    import cv2
    from cellpose.utils import diameters

    model = load_cellpose(str(_model()), False)
    assert model.cellkit_size is not None and len(model.cellkit_size["A"]) == model.net.nbase[-1]
    folder = real_path("stardist_test_nuclei")
    image, truth = tifffile.imread(folder / "img2d.tif"), tifffile.imread(folder / "mask2d.tif")
    h, w = round(image.shape[0] * scale), round(image.shape[1] * scale)
    image = cv2.resize(image.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    truth = cv2.resize(truth.astype(np.uint16), (w, h), interpolation=cv2.INTER_NEAREST)
    expected = diameters(truth)[0]
    found, labels = auto_diameter(model, image)
    assert abs(found / expected - 1) < 0.2, (found, expected)
    assert labels.max() > 50


def test_auto_diameter_warns_when_nothing_is_found():
    model = load_cellpose(str(_model()), False)
    with pytest.warns(UserWarning, match="no objects found"):
        found, labels = auto_diameter(model, np.zeros((64, 64), np.float32))
    assert labels.max() == 0
