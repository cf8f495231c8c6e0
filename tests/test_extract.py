import os
import signal
import subprocess
import sys
import textwrap
import time
import threading
import weakref

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from typer.testing import CliRunner

from cellkit.cli import app
from cellkit.datasets import synthetic_index, write_ground_truth_labels
from cellkit.extract import ExtractInputError, extract_cells, write_cells_adata
from cellkit.io import IncompleteStoreError, read_cells, read_field
from cellkit.io.cells import open_cells, read_features
from cellkit.io.labels import read_field_labels, write_field_labels

from .extract_helpers import OPTIONS, assert_same_store, measure_area_intensity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def plate(small_plate, tmp_path_factory):
    """(index, labels.zarr) of the small plate, from its ground truth."""
    labels = tmp_path_factory.mktemp("labels") / "labels.zarr"
    write_ground_truth_labels(small_plate, labels)
    return synthetic_index(small_plate), labels


@pytest.fixture(scope="module")
def reference(plate, tmp_path_factory):
    """An uninterrupted one-worker extraction with features."""
    index, labels = plate
    out = tmp_path_factory.mktemp("ref") / "cells.zarr"
    extract_cells(index, labels, out, measure=measure_area_intensity, workers=1, **OPTIONS)
    return out


def expected_cells(index, labels, size, border):
    """Independent count: per field, nuclei whose centred window (border='drop') stays inside."""
    rows = []
    for field_id in index.field_id:
        nuclei, _ = read_field_labels(labels, field_id)
        ids = np.unique(nuclei)[1:]
        for label, (cy, cx) in zip(ids, ndi.center_of_mass(np.ones(nuclei.shape), nuclei, ids)):
            y0, x0 = int(np.floor(cy + 0.5)) - size // 2, int(np.floor(cx + 0.5)) - size // 2
            inside = y0 >= 0 and x0 >= 0 and y0 + size <= nuclei.shape[0] and x0 + size <= nuclei.shape[1]
            if inside or border == "pad":
                rows.append((field_id, int(label), y0, x0, not inside))
    return pd.DataFrame(rows, columns=["field_id", "label", "y0", "x0", "border"])


def test_counts_crops_masks_obs(plate, tmp_path):
    index, labels = plate
    out = tmp_path / "cells.zarr"
    result = extract_cells(index, labels, out, size=32, border="drop", chunk_cells=8, block_cells=32)
    expected = expected_cells(index, labels, 32, "drop")
    images, masks, obs = read_cells(out)
    assert result.n_cells == len(expected) == len(obs) == images.shape[0] > 50
    assert images.shape[1:] == (3, 32, 32) and images.dtype == np.uint16 and masks.shape[1:] == (2, 32, 32)
    np.testing.assert_array_equal(obs.field_id, expected.field_id)
    np.testing.assert_array_equal(obs.label, expected.label)
    assert not obs.crop_padded.any() and not obs.cell_id.duplicated().any()
    assert list(obs.index) == [f"{f}/{lab}" for f, lab in zip(expected.field_id, expected.label)]
    np.testing.assert_array_equal(obs.crop_index, np.arange(len(obs)))
    meta = index.set_index("field_id").loc[obs.field_id]
    for col in ["plate", "well", "site", "batch", "compound", "concentration"]:
        np.testing.assert_array_equal(obs[col].to_numpy(), meta[col].to_numpy())
    # crops are the field pixels at the centred window; masks the centre cell's labels
    images, masks = images.compute(), masks.compute()
    for k in np.random.default_rng(0).choice(len(obs), 12, replace=False):
        e = expected.iloc[k]
        field = read_field(index.set_index("field_id").loc[e.field_id].to_dict() | {"field_id": e.field_id},
                           ["DNA", "Tubulin", "Actin"])
        nuclei, cells = read_field_labels(labels, e.field_id)
        window = (slice(e.y0, e.y0 + 32), slice(e.x0, e.x0 + 32))
        np.testing.assert_array_equal(images[k], field[(slice(None),) + window])
        np.testing.assert_array_equal(masks[k, 0], nuclei[window] == e.label)
        np.testing.assert_array_equal(masks[k, 1], cells[window] == e.label)
        assert masks[k, 0, 16, 16] or masks[k, 0].sum() > 0


def test_pad_border_and_mask_neighbors(plate, tmp_path):
    index, labels = plate
    extract_cells(index, labels, tmp_path / "a.zarr", size=48, border="pad", mask_neighbors=True)
    images, masks, obs = read_cells(tmp_path / "a.zarr")
    expected = expected_cells(index, labels, 48, "pad")
    assert len(obs) == len(expected) and 0 < expected.border.sum() < len(expected)
    np.testing.assert_array_equal(obs.crop_padded, expected.border)
    images, masks = images.compute(), masks.compute()
    paths = index.set_index("field_id")
    with_neighbours = 0
    for k in [*np.flatnonzero(expected.border)[:3], *np.flatnonzero(~expected.border)[:3]]:
        e = expected.iloc[k]
        field = read_field(paths.loc[e.field_id].to_dict() | {"field_id": e.field_id}, ["DNA", "Tubulin", "Actin"])
        _, cells = read_field_labels(labels, e.field_id)
        window = (slice(e.y0 + 48, e.y0 + 96), slice(e.x0 + 48, e.x0 + 96))
        crop_cells = np.pad(cells, 48)[window]
        crop_field = np.pad(field, ((0, 0), (48, 48), (48, 48)))[(slice(None),) + window]
        keep = (crop_cells == 0) | (crop_cells == e.label)  # background, own cell, and outside the field
        np.testing.assert_array_equal(images[k][:, keep], crop_field[:, keep])
        assert (images[k][:, ~keep] == 0).all()
        np.testing.assert_array_equal(masks[k, 1], crop_cells == e.label)
        with_neighbours += int((~keep).any())
        if e.border:  # outside the field: zeros
            inside = np.pad(np.ones(cells.shape, bool), 48)[window]
            assert (~inside).any() and (images[k][:, ~inside] == 0).all()
    assert with_neighbours >= 2


def test_features_and_adata(plate, reference, tmp_path):
    index, labels = plate
    root = open_cells(reference)
    obs = pd.DataFrame({"field_id": root["obs/field_id"][:], "label": root["obs/label"][:]})
    features = read_features(root)
    adata = ad.read_h5ad(reference.with_suffix(".h5ad"))
    assert adata.n_obs == len(obs) and adata.X.dtype == np.float32
    assert list(adata.var_names) == ["Nuclei_AreaShape_Area"] + [f"Cells_Intensity_MeanIntensity_{c}"
                                                                  for c in ("DNA", "Tubulin", "Actin")]
    assert list(adata.obs_names) == list(features.index) and adata.obs_names[0].count("/") == 3
    for col in ["plate", "well", "site", "batch", "compound", "concentration", "moa", "field_id", "label",
                "centroid_y", "centroid_x", "crop_index", "crop_padded"]:
        assert col in adata.obs
    # rows are the measure function's rows of the same cells, in store order
    for field_id in index.field_id[:5]:
        row = index.set_index("field_id").loc[field_id].to_dict() | {"field_id": field_id}
        nuclei, cells = read_field_labels(labels, field_id)
        table = measure_area_intensity(read_field(row), nuclei, cells, ["DNA", "Tubulin", "Actin"])
        mine = obs.field_id == field_id
        np.testing.assert_array_equal(adata.X[mine.to_numpy()], table.loc[obs.label[mine]].to_numpy())
    info = adata.uns["cellkit"]
    assert info["parameters"]["size"] == 48 and info["parameters"]["measure"].endswith("measure_area_intensity")
    assert info["version"] and info["inputs"]["labels"].endswith("labels.zarr")
    # the same AnnData as zarr
    write_cells_adata(root, tmp_path / "cells_adata.zarr")
    as_zarr = ad.read_zarr(tmp_path / "cells_adata.zarr")
    np.testing.assert_array_equal(as_zarr.X, adata.X)
    assert list(as_zarr.obs_names) == list(adata.obs_names)


@pytest.mark.parametrize("how", [dict(workers=2), dict(workers=4), dict(workers=2, processes=True)])
def test_identical_for_any_worker_count(plate, reference, tmp_path, how):
    index, labels = plate
    out = tmp_path / "cells.zarr"
    extract_cells(index, labels, out, measure=measure_area_intensity, **how, **OPTIONS)
    assert_same_store(reference, out)
    a, b = ad.read_h5ad(reference.with_suffix(".h5ad")), ad.read_h5ad(out.with_suffix(".h5ad"))
    np.testing.assert_array_equal(a.X, b.X)
    pd.testing.assert_frame_equal(a.obs, b.obs)


def test_sharded_store_holds_the_same_cells(plate, reference, tmp_path):
    """Sharded blocks are written through Zarr (not the direct chunk writer): the same cells."""
    index, labels = plate
    out = tmp_path / "cells.zarr"
    extract_cells(index, labels, out, sharded=True, **OPTIONS)
    assert open_cells(out)["images"].shards is not None
    for got, want in zip(read_cells(out)[:2], read_cells(reference)[:2]):
        np.testing.assert_array_equal(got.compute(), want.compute())


def test_distributed_scheduler(plate, reference, tmp_path):
    from distributed import LocalCluster

    index, labels = plate
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        extract_cells(index, labels, tmp_path / "cells.zarr", measure=measure_area_intensity,
                      scheduler=cluster.scheduler_address, **OPTIONS)
    assert_same_store(reference, tmp_path / "cells.zarr")


RUN_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
from cellkit.datasets import synthetic_index
from cellkit.extract import extract_cells
from tests.extract_helpers import OPTIONS, measure_area_intensity

def slow_measure(*args):
    time.sleep(0.1)
    return measure_area_intensity(*args)
slow_measure.__qualname__ = "measure_area_intensity"
slow_measure.__module__ = measure_area_intensity.__module__

import logging
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)  # cellkit's log, line by line
extract_cells(synthetic_index({plate!r}), {labels!r}, {out!r}, measure=slow_measure, workers={workers},
              **(OPTIONS | dict(block_cells=16, chunk_cells=8)))
print("DONE")
"""


def test_resume_after_sigkill(plate, small_plate, tmp_path):
    index, labels = plate
    reference = tmp_path / "ref.zarr"
    extract_cells(index, labels, reference, measure=measure_area_intensity,
                  **(OPTIONS | dict(block_cells=16, chunk_cells=8)))
    out = tmp_path / "cells.zarr"
    scripts = {}
    for workers in (1, 2):  # kills of 1- and 2-worker runs alternate; the finishing run has 1 worker
        scripts[workers] = tmp_path / f"run{workers}.py"
        scripts[workers].write_text(textwrap.dedent(RUN_SCRIPT.format(
            root=ROOT, plate=str(small_plate), labels=str(labels), out=str(out), workers=workers)))
    rng = np.random.default_rng(4)
    killed_incomplete = 0
    for k, delay in enumerate(rng.uniform(0.0, 0.8, size=3)):
        # kill at a random time after the plan, while blocks are being written (or finished)
        proc = subprocess.Popen([sys.executable, str(scripts[1 + k % 2])], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        for line in proc.stdout:
            if b"blocks to write" in line:
                break
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        stdout, _ = proc.communicate()
        if b"DONE" in stdout:
            break
        if open_cells(out, require_complete=False).attrs["complete"] is not True:
            killed_incomplete += 1
            with pytest.raises(IncompleteStoreError, match="incomplete"):
                read_cells(out)
    assert killed_incomplete >= 2  # kills landed mid-write
    done = subprocess.run([sys.executable, str(scripts[1])], capture_output=True, timeout=300)
    assert done.returncode == 0 and b"DONE" in done.stdout, done.stderr.decode()[-2000:]
    assert_same_store(reference, out)
    a, b = ad.read_h5ad(reference.with_suffix(".h5ad")), ad.read_h5ad(out.with_suffix(".h5ad"))
    np.testing.assert_array_equal(a.X, b.X)
    pd.testing.assert_frame_equal(a.obs, b.obs)


def _copy_fields(index, labels, out_labels, times):
    """An index of ``times`` copies of the plate (new field ids, same images) and its labels."""
    copies = []
    for t in range(times):
        copy = index.copy()
        copy["plate"] = copy["plate"] + f"-{t}"
        copy["field_id"] = copy["plate"] + "/" + copy["well"] + "/" + copy["site"].astype(str)
        for old, new in zip(index.field_id, copy.field_id):
            write_field_labels(out_labels, new, *read_field_labels(labels, old))
        copies.append(copy)
    return pd.concat(copies, ignore_index=True)


def test_memory_bounded_by_fields_in_flight(plate, tmp_path, monkeypatch):
    """Field cuts (the bulk of memory) are released once their blocks are written: the number
    alive at once stays a few, however many fields there are (peak RSS: benchmarks/extract.py)."""
    import cellkit.extract.run as pipeline

    index, labels = plate
    big = _copy_fields(index, labels, tmp_path / "labels.zarr", 3)  # 60 fields, ~600 cells
    alive, peak, lock = [0], [0], threading.Lock()
    original = pipeline._cut_field

    def counting_cut(*args, **kwargs):
        part = original(*args, **kwargs)
        with lock:
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])
        weakref.finalize(part, lambda: alive.__setitem__(0, alive[0] - 1))
        return part

    monkeypatch.setattr(pipeline, "_cut_field", counting_cut)
    result = extract_cells(big, tmp_path / "labels.zarr", tmp_path / "c.zarr", workers=2,
                           **(OPTIONS | dict(size=32)))
    assert result.n_cells > 300 and alive[0] == 0
    # a block of 32 cells spans ~4 fields of ~10 cells; a few blocks run at once
    assert peak[0] <= 16, peak[0]  # of 60 fields


def test_bad_inputs(plate, tmp_path):
    index, labels = plate
    # labels missing for a field
    partial = tmp_path / "partial.zarr"
    for field_id in index.field_id[1:]:
        write_field_labels(partial, field_id, *read_field_labels(labels, field_id))
    with pytest.raises(ExtractInputError, match=f"{index.field_id[0]}: labels are missing"):
        extract_cells(index, partial, tmp_path / "a.zarr")
    assert not (tmp_path / "a.zarr").exists()
    # labels of another shape than the images
    write_field_labels(partial, index.field_id[0], np.zeros((10, 10), np.uint32), np.zeros((10, 10), np.uint32))
    with pytest.raises(ExtractInputError, match=r"image is \(256, 320\) but its labels are \(10, 10\)"):
        extract_cells(index, partial, tmp_path / "a.zarr")
    assert not (tmp_path / "a.zarr").exists()
    # a field without cells: a complete store without it, and the field reported
    write_field_labels(partial, index.field_id[0], np.zeros((256, 320), np.uint32), np.zeros((256, 320), np.uint32))
    result = extract_cells(index, partial, tmp_path / "a.zarr", size=32, border="drop")
    expected = expected_cells(index.iloc[1:], labels, 32, "drop")
    # the emptied field, and any other whose cells all leave the field at 32 px
    assert result.empty_fields == [f for f in index.field_id if f not in set(expected.field_id)]
    assert result.empty_fields[0] == index.field_id[0]
    obs = read_cells(tmp_path / "a.zarr")[2]
    assert index.field_id[0] not in set(obs.field_id)
    assert len(obs) == len(expected)
    # an output that cannot be written
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExtractInputError, match="not writable"):
        extract_cells(index, labels, blocker / "cells.zarr")
    # a store from other parameters is not silently replaced
    with pytest.raises(ExtractInputError, match="other inputs or parameters"):
        extract_cells(index, partial, tmp_path / "a.zarr", size=40)


def test_cli(plate, tmp_path):
    index, labels = plate
    runner = CliRunner()
    index.to_parquet(tmp_path / "index.parquet")
    result = runner.invoke(app, ["extract", str(tmp_path / "index.parquet"), str(labels), "--out",
                                 str(tmp_path / "cells.zarr"), "--size", "32", "--workers", "2"])
    # default: CellProfiler-style features measured in the same pass, written to cells.h5ad; border
    # "inside": every cell whose mask does not touch the field edge
    assert result.exit_code == 0, result.output
    adata = ad.read_h5ad(tmp_path / "cells.h5ad")
    inside = 0
    for field_id in index.field_id:
        _, cells = read_field_labels(labels, field_id)
        edge = np.concatenate([cells[0], cells[-1], cells[:, 0], cells[:, -1]])
        inside += len(np.setdiff1d(np.unique(cells), np.append(edge, 0)))
    assert adata.n_obs == inside > 50
    assert "Nuclei_AreaShape_Area" in adata.var_names and adata.X.dtype == np.float32
    result = runner.invoke(app, ["extract", str(tmp_path / "index.parquet"), str(labels), "--out",
                                 str(tmp_path / "crops.zarr"), "--size", "32", "--workers", "2", "--no-features"])
    assert result.exit_code == 0, result.output
    assert len(read_cells(tmp_path / "crops.zarr")[2]) == adata.n_obs
    result = runner.invoke(app, ["extract", str(tmp_path / "index.parquet"), str(tmp_path / "nolabels.zarr"),
                                 "--out", str(tmp_path / "x.zarr"), "--no-features"])
    assert result.exit_code == 1 and "no label store" in result.output and "Traceback" not in result.output


def test_unreadable_image_leaves_incomplete_store_then_resumes(plate, reference, tmp_path):
    index, labels = plate
    broken = index.copy()
    source = broken.loc[5, "path_Actin"]
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(open(source, "rb").read()[:5000])  # header intact, pixels missing
    broken.loc[5, "path_Actin"] = str(truncated)
    out = tmp_path / "cells.zarr"
    with pytest.raises(OSError, match="truncated.tif"):
        extract_cells(broken, labels, out, measure=measure_area_intensity, **OPTIONS)
    with pytest.raises(IncompleteStoreError):
        read_cells(out)
    # the image is repaired: the same command finishes the store, equal to an uninterrupted run
    truncated.write_bytes(open(source, "rb").read())
    extract_cells(broken, labels, out, measure=measure_area_intensity, **OPTIONS)
    assert_same_store(reference, out, ignore=("zarr.json",))  # root attrs hold the (other) image paths


def test_each_chunk_has_one_writer(plate, tmp_path, monkeypatch):
    import cellkit.extract.run as pipeline

    index, labels = plate
    written, original = [], pipeline._write_block
    monkeypatch.setattr(pipeline, "_write_block", lambda out, block, start, stop, pieces: (
        written.append((start, stop)), original(out, block, start, stop, pieces))[1])
    result = extract_cells(index, labels, tmp_path / "c.zarr", workers=4, **OPTIONS)
    chunk = OPTIONS["chunk_cells"]
    chunks = [set(range(start // chunk, -(-stop // chunk))) for start, stop in written]
    assert sum(len(c) for c in chunks) == len(set().union(*chunks))  # no chunk written twice
    assert sorted(written)[0][0] == 0 and sum(stop - start for start, stop in written) == result.n_cells
    assert all(start % chunk == 0 for start, _ in written)
    with pytest.raises(ValueError, match="multiple of chunk_cells"):
        extract_cells(index, labels, tmp_path / "d.zarr", chunk_cells=8, block_cells=20)
    assert not (tmp_path / "d.zarr").exists()
