"""Object matching and accuracy scoring of instance segmentations.

Average precision at IoU t, as in DSB2018 / StarDist / Cellpose: predicted and true objects are
matched one-to-one by IoU > t (for t >= 0.5 each object has at most one such partner);
AP(t) = TP / (TP + FP + FN).
"""

from __future__ import annotations

import numpy as np


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels renumbered 1..n (0 stays background), as int64, and n."""
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    if ids[0] != 0:
        inverse = inverse + 1
    return inverse.astype(np.int64), int((ids != 0).sum())


def overlap_pairs(true: np.ndarray, pred: np.ndarray):
    """Sparse contingency table of two label images: every overlapping (true, pred) object pair.

    Parameters
    ----------
    true, pred
        Integer label images of one shape (0 = background). Labels need not be consecutive.

    Returns
    -------
    i, j : int64 (n_pairs,), indices 0..n_true-1 and 0..n_pred-1 (objects in ascending label order)
    iou : float64 (n_pairs,), IoU of each pair
    n_true, n_pred : int
    """
    true, pred = np.asarray(true), np.asarray(pred)
    if true.shape != pred.shape:
        raise ValueError(f"label images differ in shape: {true.shape} vs {pred.shape}")
    t, n_true = _relabel(true)
    p, n_pred = _relabel(pred)
    area_true = np.bincount(t.ravel(), minlength=n_true + 1)
    area_pred = np.bincount(p.ravel(), minlength=n_pred + 1)
    both = (t > 0) & (p > 0)
    codes, inter = np.unique(t[both] * (n_pred + 1) + p[both], return_counts=True)
    i, j = codes // (n_pred + 1), codes % (n_pred + 1)
    iou = inter / (area_true[i] + area_pred[j] - inter)
    return i - 1, j - 1, iou, n_true, n_pred


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU between every true and every predicted object, float64 (n_true, n_pred)."""
    i, j, iou, n_true, n_pred = overlap_pairs(true, pred)
    out = np.zeros((n_true, n_pred))
    out[i, j] = iou
    return out


def match_counts(true: np.ndarray, pred: np.ndarray, thresholds=(0.5, 0.75)) -> dict[float, tuple[int, int, int]]:
    """(TP, FP, FN) per IoU threshold; a pair matches when its IoU is strictly above the threshold.

    Thresholds must be >= 0.5, where IoU > t makes the matching one-to-one by construction
    (two objects cannot both overlap a third by more than half of their union).
    """
    _, _, iou, n_true, n_pred = overlap_pairs(true, pred)
    out = {}
    for t in thresholds:
        if t < 0.5:
            raise ValueError("thresholds below 0.5 need an assignment step; use t >= 0.5")
        tp = int((iou > t).sum())
        out[float(t)] = (tp, n_pred - tp, n_true - tp)
    return out


def average_precision(tp: int, fp: int, fn: int) -> float:
    """TP / (TP + FP + FN); 1.0 when both images are empty."""
    total = tp + fp + fn
    return 1.0 if total == 0 else tp / total


def score_images(pairs, names=None, thresholds=(0.5, 0.75)) -> dict:
    """Score several (true, pred) label image pairs.

    Returns
    -------
    dict with ``per_image`` (list of dicts: name, n_true, n_pred and ``ap@t``, ``tp@t``, ``fp@t``,
    ``fn@t`` per threshold) and ``pooled`` (``ap@t`` from the sums of TP, FP, FN, and the sums).
    """
    per_image, sums = [], {float(t): np.zeros(3, np.int64) for t in thresholds}
    for i, (true, pred) in enumerate(pairs):
        counts = match_counts(true, pred, thresholds)
        row = {"name": names[i] if names is not None else str(i)}
        for t, (tp, fp, fn) in counts.items():
            sums[t] += (tp, fp, fn)
            row.update({f"ap@{t:g}": average_precision(tp, fp, fn), f"tp@{t:g}": tp, f"fp@{t:g}": fp,
                        f"fn@{t:g}": fn})
        row["n_true"] = row[f"tp@{thresholds[0]:g}"] + row[f"fn@{thresholds[0]:g}"]
        row["n_pred"] = row[f"tp@{thresholds[0]:g}"] + row[f"fp@{thresholds[0]:g}"]
        per_image.append(row)
    pooled = {"n_images": len(per_image)}
    for t, (tp, fp, fn) in sums.items():
        pooled.update({f"ap@{t:g}": average_precision(int(tp), int(fp), int(fn)), f"tp@{t:g}": int(tp),
                       f"fp@{t:g}": int(fp), f"fn@{t:g}": int(fn)})
    if per_image:
        pooled["mean_image_ap@0.5"] = float(np.mean([r.get("ap@0.5", np.nan) for r in per_image]))
    return {"per_image": per_image, "pooled": pooled}
