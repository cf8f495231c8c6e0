import numpy as np
import pytest

from cellkit.segment import average_precision, iou_matrix, match_counts, pair_nuclei_cells, score_images


def _square(shape, y, x, h, w, label=1, out=None):
    out = np.zeros(shape, np.uint16) if out is None else out
    out[y:y + h, x:x + w] = label
    return out


def test_iou_of_shifted_square():
    true = _square((30, 30), 5, 5, 10, 10)
    pred = _square((30, 30), 5, 7, 10, 10)  # overlap 10x8 = 80, union 120
    assert iou_matrix(true, pred)[0, 0] == pytest.approx(80 / 120)
    counts = match_counts(true, pred)
    assert counts[0.5] == (1, 0, 0) and counts[0.75] == (0, 1, 1)


def test_split_object_is_not_matched_at_exactly_half():
    true = _square((20, 40), 0, 0, 10, 20)
    pred = _square((20, 40), 0, 0, 10, 10, label=1)
    _square((20, 40), 0, 10, 10, 10, label=2, out=pred)  # each half: IoU exactly 0.5
    assert match_counts(true, pred)[0.5] == (0, 2, 1)
    assert score_images([(true, pred)])["pooled"]["ap@0.5"] == 0.0


def test_empty_images_and_arbitrary_labels():
    empty = np.zeros((10, 10), np.uint8)
    one = _square((10, 10), 2, 2, 4, 4, label=200)
    assert match_counts(empty, empty)[0.5] == (0, 0, 0) and average_precision(0, 0, 0) == 1.0
    assert match_counts(one, empty)[0.5] == (0, 0, 1)
    assert match_counts(empty, one)[0.5] == (0, 1, 0)
    relabelled = np.where(one > 0, 7, 0)
    assert match_counts(one, relabelled)[0.75] == (1, 0, 0)
    with pytest.raises(ValueError, match="shape"):
        iou_matrix(one, one[:5])
    with pytest.raises(ValueError, match="0.5"):
        match_counts(one, one, thresholds=(0.3,))


def test_iou_matrix_matches_brute_force():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 6, (40, 50))
    pred = rng.integers(0, 5, (40, 50)) * 3  # labels 0, 3, 6, 9, 12
    brute = np.array([[((true == a) & (pred == b)).sum() / ((true == a) | (pred == b)).sum()
                       for b in range(3, 13, 3)] for a in range(1, 6)])
    np.testing.assert_allclose(iou_matrix(true, pred), brute)


def test_pooled_scores_sum_counts():
    a_true = _square((20, 20), 0, 0, 5, 5)
    a_pred = a_true.copy()
    b_true = _square((20, 20), 0, 0, 5, 5)
    b_pred = _square((20, 20), 10, 10, 5, 5)
    result = score_images([(a_true, a_pred), (b_true, b_pred)], names=["a", "b"])
    assert [r["ap@0.5"] for r in result["per_image"]] == [1.0, 0.0]
    pooled = result["pooled"]
    assert (pooled["tp@0.5"], pooled["fp@0.5"], pooled["fn@0.5"]) == (1, 1, 1)
    assert pooled["ap@0.5"] == pytest.approx(1 / 3)


def test_pair_nuclei_cells_one_to_one():
    cells = np.zeros((20, 30), np.uint32)
    cells[:, :10], cells[:, 10:20], cells[:, 20:] = 1, 2, 3
    nuclei = np.zeros_like(cells)
    nuclei[2:6, 2:6] = 1      # cell 1: a large and a small nucleus
    nuclei[10:12, 2:4] = 2
    nuclei[5:10, 8:14] = 3    # straddles cells 1 and 2, mostly in cell 2 (2 vs 4 columns)
    # cell 3 has no nucleus
    new_nuclei, new_cells = pair_nuclei_cells(nuclei, cells)
    assert set(np.unique(new_cells)) == {0, 1, 2} and set(np.unique(new_nuclei)) == {0, 1, 2}
    assert (new_cells[:, 20:] == 0).all()                       # the cell without nucleus is dropped
    assert (new_nuclei[10:12, 2:4] == 0).all()                   # the smaller second nucleus is dropped
    assert (new_nuclei[5:10, 8:10] == 0).all()                   # the straddling nucleus is clipped to its cell
    for k in (1, 2):
        assert (new_cells[new_nuclei == k] == k).all()
