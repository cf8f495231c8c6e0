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
GUARD_TEST20_AP50 = 0.69  # measured 0.711 (AP@0.75 0.431), epoch 2200, auto from the foreground diameter, 2026-11-30
GUARD_STARDIST_AP50 = 0.83  # measured 0.853 (AP@0.75 0.757)


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


# The size estimate is classical.foreground_diameter (held-out figures in models/README.md).
@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_auto_diameter_finds_the_diameter_of_rescaled_images(scale):
    import cv2
    from cellpose.utils import diameters

    model = load_cellpose(str(_model()), False)
    assert model.cellkit_trained  # its default diameter is auto
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
    with pytest.warns(UserWarning) as caught:
        found, labels = auto_diameter(model, np.zeros((64, 64), np.float32))
    messages = [str(w.message) for w in caught]
    assert any("no foreground" in m for m in messages) and any("no objects found" in m for m in messages)
    assert labels.max() == 0
