"""Object size from the network's style vector (Cellpose's ``SizeModel``, fitted by cellkit).

A ridge regression from the CPnet style vector of an image (run at the model's own scale) to the
log of its objects' median diameter, fitted on the training images at random scales (0.5x-2x), so
the diameter is estimated before any segmentation pass. Stored in the model's ``<model>.json`` as
``size_model``: ``A`` (weights), ``smean`` (mean style), ``ymean`` (mean log size ratio),
``diam_mean``, ``n_styles``, ``train_correlation``.
"""

from __future__ import annotations

import copy

import numpy as np


def image_style(model, image: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Style vector (first ``nbase[-1]`` entries) of an (H, W) image at the model's own scale,
    from the encoder alone when the network allows it (cellkit-built CPnets: ``style_only``)."""
    if hasattr(model.net, "style_only"):
        model = copy.copy(model)
        model.net = copy.copy(model.net)  # shares the weights; the flag stays off the cached model
        model.net.style_only = True
    styles = model.eval(np.asarray(image, np.float32), channels=[0, 0], diameter=float(model.diam_mean),
                        compute_masks=False, batch_size=batch_size)[-1]
    return np.asarray(styles, np.float64).reshape(-1)[: int(model.net.nbase[-1])]


def fit_size_model(model, data, *, n_images: int = 200, scales_per_image: int = 2, seed: int = 0,
                   l2: float = 1.0) -> dict:
    """Fit the style -> log diameter regression on ``data`` (`train_data.TrainingSet`).

    Each of ``n_images`` seeded images is resized by ``scales_per_image`` log-uniform factors in
    [0.5, 2]; the target is log(diameter x factor / diam_mean).
    """
    import cv2

    rng = np.random.default_rng(seed)
    pick = rng.choice(len(data.images), size=min(n_images, len(data.images)), replace=False)
    styles, targets = [], []
    for i in pick:
        for s in np.exp(rng.uniform(np.log(0.5), np.log(2.0), scales_per_image)):
            im = data.images[i][0]
            h, w = max(16, round(im.shape[0] * s)), max(16, round(im.shape[1] * s))
            styles.append(image_style(model, cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR)))
            targets.append(np.log(data.diameters[i] * w / im.shape[1]) - np.log(model.diam_mean))
    X, y = np.asarray(styles), np.asarray(targets)
    smean, ymean = X.mean(0), y.mean()
    Xc = (X - smean).T
    A = np.linalg.solve(Xc @ Xc.T + l2 * np.eye(Xc.shape[0]), Xc @ (y - ymean))
    corr = float(np.corrcoef(y - ymean, A @ Xc)[0, 1])
    return {"A": A.tolist(), "smean": smean.tolist(), "ymean": float(ymean), "diam_mean": float(model.diam_mean),
            "n_styles": len(y), "l2": l2, "train_correlation": corr}


def style_diameter(model, image: np.ndarray, size: dict) -> float:
    """Diameter (px) of the objects in ``image`` predicted from its style; NaN when it cannot."""
    style = image_style(model, image)
    if not np.isfinite(style).all() or not np.any(style):
        return float("nan")
    log_d = np.asarray(size["A"]) @ (style - np.asarray(size["smean"])) + np.log(size["diam_mean"]) + size["ymean"]
    return float(max(5.0, np.exp(log_d)))
