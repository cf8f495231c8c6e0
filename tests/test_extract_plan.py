"""The extraction plan reads each field's label summary, not its label images; the cut decodes them once."""

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr

from cellkit.extract import ExtractInputError, cut_crops, extract_cells, plan_field
from cellkit.extract.plan import same_plan
from cellkit.io import read_cells
from cellkit.io.labels import label_centroids, read_field_labels, summarize_labels, write_field_labels


def _blobs(rng, shape=(70, 90), n=12):
    """Nucleus and cell label images: discs (cells r=7, nuclei r=4) at random centres, some at the edge."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    nuclei, cells = np.zeros(shape, np.uint32), np.zeros(shape, np.uint32)
    for k, (cy, cx) in enumerate(zip(rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)), start=1):
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        cells[(d2 <= 49) & (cells == 0)] = k
        nuclei[(d2 <= 16) & (cells == k)] = k
    return nuclei, cells


def _bincount_centroids(nuclei):
    ys, xs = np.nonzero(nuclei)
    labels, ids = np.unique(nuclei[ys, xs], return_inverse=True)
    counts = np.bincount(ids)
    return labels, np.stack([np.bincount(ids, weights=ys), np.bincount(ids, weights=xs)], 1) / counts[:, None]


@pytest.mark.parametrize("dtype", [np.uint32, np.int64, np.uint16])
def test_label_centroids_bit_identical_to_bincount(dtype):
    rng = np.random.default_rng(1)
    nuclei, _ = _blobs(rng, n=30)
    for image in (nuclei, np.where(nuclei > 0, nuclei * 997 + 3, 0)):  # dense and sparse label values
        image = image.astype(dtype)
        labels, centroids = label_centroids(image)
        expected_labels, expected = _bincount_centroids(image)
        np.testing.assert_array_equal(labels, expected_labels)
        assert centroids.dtype == np.float64 and np.array_equal(centroids, expected)  # bit-identical
    huge = np.zeros((5, 6), np.uint32)
    huge[1, 2], huge[3, 4] = 4_000_000_000, 7  # a label value far above the pixel count: sparse path
    labels, centroids = label_centroids(huge)
    assert labels.tolist() == [7, 4_000_000_000] and centroids.tolist() == [[3.0, 4.0], [1.0, 2.0]]
    assert label_centroids(np.zeros((4, 4), np.uint32))[0].size == 0
    with pytest.raises(ValueError, match="negative"):
        label_centroids(np.full((2, 2), -1))


def _padded_cut(images, nuclei, cells, labels, origins, size, mask_neighbors):
    """Reference cut: pad the whole field by ``size``, then index the windows."""
    p = size
    images, nuclei, cells = np.pad(images, ((0, 0), (p, p), (p, p))), np.pad(nuclei, p), np.pad(cells, p)
    crops, masks = [], []
    for label, (y, x) in zip(labels, origins + p):
        crop = images[:, y:y + size, x:x + size].copy()
        own_cell, own_nucleus = cells[y:y + size, x:x + size], nuclei[y:y + size, x:x + size]
        if mask_neighbors:
            crop[:, (own_cell != 0) & (own_cell != label)] = 0
        crops.append(crop)
        masks.append(np.stack([own_nucleus == label, own_cell == label]))
    return np.array(crops), np.array(masks)


@pytest.mark.parametrize("mask_neighbors", [False, True])
def test_cut_crops_windows_leaving_the_field(mask_neighbors):
    rng = np.random.default_rng(2)
    nuclei, cells = _blobs(rng, n=25)
    images = rng.integers(0, 65535, (3,) + nuclei.shape, dtype=np.uint16)
    labels, centroids = label_centroids(nuclei)
    size = 20
    origins = np.floor(centroids + 0.5).astype(np.int64) - size // 2
    assert ((origins < 0) | (origins + size > nuclei.shape)).any(axis=1).sum() >= 3  # several cut at the edge
    crops, masks = cut_crops(images, nuclei, cells, labels, origins, size, mask_neighbors=mask_neighbors)
    expected_crops, expected_masks = _padded_cut(images, nuclei, cells, labels, origins, size, mask_neighbors)
    np.testing.assert_array_equal(crops, expected_crops)
    np.testing.assert_array_equal(masks, expected_masks)


@pytest.fixture
def tiny_plate(tmp_path):
    """Three 70x90 fields (TIFFs) and their labels written by write_field_labels."""
    rng = np.random.default_rng(3)
    rows = []
    for k in range(3):
        nuclei, cells = _blobs(rng)
        field_id = f"P1/A0{k}/1"
        write_field_labels(tmp_path / "labels.zarr", field_id, nuclei, cells)
        row = {"field_id": field_id, "plate": "P1", "well": f"A0{k}", "site": 1}
        for c, channel in enumerate(["DNA", "Actin"]):
            path = tmp_path / f"f{k}_{channel}.tif"
            tifffile.imwrite(path, rng.integers(0, 4000, nuclei.shape, dtype=np.uint16))
            row[f"path_{channel}"] = str(path)
        rows.append(row)
    return pd.DataFrame(rows), tmp_path / "labels.zarr"


@pytest.mark.parametrize("border", ["inside", "drop", "pad"])
def test_plan_from_summary_equals_plan_from_labels(tiny_plate, border):
    index, labels = tiny_plate
    row = index.iloc[0].to_dict()
    group = zarr.open_group(str(labels / row["field_id"]), mode="r+")
    assert group.attrs["objects"] == summarize_labels(*read_field_labels(labels, row["field_id"]))
    from_summary = plan_field(row, str(labels), 16, border)
    summary = group.attrs["objects"]
    del group.attrs["objects"]  # a store written before summaries: the plan decodes the labels
    from_labels = plan_field(row, str(labels), 16, border)
    assert same_plan(from_summary, from_labels) and from_summary.dropped == from_labels.dropped
    assert from_summary.n_cells > 0 and (border == "pad" or from_summary.n_cells < from_summary.n_objects)
    group.attrs["objects"] = summary
    for name in ("nuclei", "cells"):  # the plan never decodes the label images
        for chunk in (labels / row["field_id"] / name / "c").rglob("*"):
            chunk.unlink() if chunk.is_file() else None
    assert same_plan(plan_field(row, str(labels), 16, border), from_summary)


def test_labels_changed_after_summary_refused(tiny_plate, tmp_path):
    index, labels = tiny_plate
    out = tmp_path / "cells.zarr"
    extract_cells(index, labels, out, size=16)
    first = read_cells(out)[2]
    field_id = index.field_id[1]
    group = zarr.open_group(str(labels / field_id), mode="r+")
    nuclei = group["nuclei"][:]
    group["nuclei"][:] = np.roll(nuclei, 3, axis=1)  # edited behind the label store's back: summary stale
    with pytest.raises(ExtractInputError, match=f"{field_id}: its labels .* changed after planning"):
        extract_cells(index, labels, tmp_path / "again.zarr", size=16)
    write_field_labels(labels, field_id, np.roll(nuclei, 3, axis=1), group["cells"][:])  # rewritten properly
    again = read_cells(extract_cells(index, labels, tmp_path / "again.zarr", size=16, overwrite=True).store)[2]
    moved = again.field_id == field_id
    assert len(again) == len(first)
    np.testing.assert_allclose(again.centroid_x[moved].to_numpy(), first.centroid_x[moved].to_numpy() + 3)


def test_write_error_leaves_store_incomplete_then_rerun_completes(tiny_plate, tmp_path, monkeypatch):
    import cellkit.extract.run as pipeline
    from cellkit.io import IncompleteStoreError

    index, labels = tiny_plate
    options = dict(size=16, chunk_cells=4, block_cells=8, workers=1)
    reference = extract_cells(index, labels, tmp_path / "ref.zarr", **options).store
    original = pipeline._write_block

    def failing(out, block, start, stop, pieces):
        if block == 1:
            raise OSError("disk full")
        return original(out, block, start, stop, pieces)

    monkeypatch.setattr(pipeline, "_write_block", failing)
    out = tmp_path / "cells.zarr"
    with pytest.raises(OSError, match="disk full"):
        extract_cells(index, labels, out, **options)
    with pytest.raises(IncompleteStoreError):
        read_cells(out)
    kept = int(zarr.open_group(str(out), mode="r")["progress/done"][:].sum())
    monkeypatch.setattr(pipeline, "_write_block", original)
    result = extract_cells(index, labels, out, **options)
    assert result.blocks_total >= 2 and result.blocks_written == result.blocks_total - kept  # resumed
    for a, b in zip(read_cells(reference)[:2], read_cells(out)[:2]):
        np.testing.assert_array_equal(a.compute(), b.compute())
    assert read_cells(out)[2].equals(read_cells(reference)[2])


def test_field_attributes_reads_the_group_document_as_zarr_does(tmp_path):
    from cellkit.io.labels import field_attributes, field_group

    nuclei, cells = _blobs(np.random.default_rng(4))
    path = tmp_path / "labels.zarr"
    write_field_labels(path, "P/A01/1", nuclei, cells, attrs={"model": "m"})
    assert field_attributes(path, "P/A01/1") == dict(field_group(path, "P/A01/1").attrs)
    assert field_attributes(path, "P/A01/1")["objects"] == summarize_labels(nuclei, cells)  # floats exact
    assert field_attributes(path, "P/A02/1") is None  # missing
    zarr.open_group(str(path / "P/A01/1"), mode="r+").attrs["complete"] = False  # a writer killed half-way
    assert field_attributes(path, "P/A01/1") is None and field_group(path, "P/A01/1") is None
    assert field_attributes(path, "P/A01/1/nuclei") is None  # an array, not a field group
