"""Score a segmenter on folders of single-channel images with ground-truth masks."""

from __future__ import annotations

import os
import time

from .backends import Segmenter, check_field
from .matching import score_images
from .train import load_image_mask_pairs


def score_segmenter(segmenter: Segmenter, images: str | os.PathLike, masks: str | os.PathLike,
                    thresholds=(0.5, 0.75)) -> dict:
    """Segment every image of ``images`` as nuclei and score it against ``masks`` (same stems).

    Returns
    -------
    dict: ``per_image``, ``pooled`` (see `score_images`), ``segmenter`` (`Segmenter.describe`),
    ``seconds``.
    """
    names, ims, mks = load_image_mask_pairs(images, masks)
    for name, im in zip(names, ims):
        try:
            check_field(im[None], ["image"])
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name}: {err}") from err
    start = time.perf_counter()
    predictions = segmenter.segment_nuclei(ims)
    seconds = time.perf_counter() - start
    result = score_images(list(zip(mks, predictions)), names=names, thresholds=thresholds)
    return {**result, "segmenter": segmenter.describe(), "images": str(images), "masks": str(masks),
            "seconds": round(seconds, 2)}
