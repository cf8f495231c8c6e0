import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from cellkit.io import CellDataset, IncompleteStoreError, read_cells  # noqa: E402
from cellkit.io.cells import create_cells_store, write_cells, write_obs  # noqa: E402
from cellkit.pl import cell_montage, montage_rgb  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A complete store of 70 random cells in 3 groups (chunks of 8, blocks of 32)."""
    rng = np.random.default_rng(0)
    n = 70
    images = rng.integers(0, 4000, (n, 3, 16, 16), dtype=np.uint16)
    masks = rng.random((n, 2, 16, 16)) > 0.5
    obs = pd.DataFrame({"cell_id": [f"P/A01/1/{k + 1}" for k in range(n)],
                        "moa": np.array(["a", "b", "c"])[np.arange(n) % 3], "label": np.arange(1, n + 1)})
    path = tmp_path_factory.mktemp("store") / "cells.zarr"
    write_cells(path, images, masks, obs, channels=["DNA", "Tubulin", "Actin"], chunk_cells=8, block_cells=32)
    return path, images, masks, obs


def test_read_cells_lazy(store):
    path, images, masks, obs = store
    lazy_images, lazy_masks, read = read_cells(path)
    assert lazy_images.chunks[0] == (32, 32, 6)  # one dask chunk per write block
    np.testing.assert_array_equal(lazy_images[[3, 40, 69]].compute(), images[[3, 40, 69]])
    np.testing.assert_array_equal(lazy_masks.compute(), masks)
    assert list(read.index) == list(obs.cell_id) and list(read.moa) == list(obs.moa)


def test_sharded_store_reads_the_same(store, tmp_path):
    path, images, masks, obs = store
    write_cells(tmp_path / "s.zarr", images, masks, obs, channels=["DNA", "Tubulin", "Actin"], chunk_cells=8,
                block_cells=32, sharded=True)
    lazy_images, _, _ = read_cells(tmp_path / "s.zarr")
    np.testing.assert_array_equal(lazy_images.compute(), images)
    assert CellDataset(tmp_path / "s.zarr").__getitems__([69, 0])[0]["index"] == 69


def _chunk_files(array_folder):
    return sorted(str(p.relative_to(array_folder)) for p in array_folder.rglob("*") if p.is_file() and p.name != "zarr.json")


def test_store_layout_flat_chunk_files_and_empty_chunks_written(store, tmp_path):
    """Format 3: chunk files c.<i>.0.0.0 beside zarr.json (no nested folders), all-zero chunks stored too."""
    path, images, masks, obs = store
    zeros = images.copy()
    zeros[8:16] = 0  # chunk 1 all zero
    write_cells(tmp_path / "z.zarr", zeros, masks, obs, channels=["DNA", "Tubulin", "Actin"], chunk_cells=8,
                block_cells=32)
    import zarr

    root = zarr.open_group(str(tmp_path / "z.zarr"), mode="r")
    assert root.attrs["format_version"] == 3
    assert _chunk_files(tmp_path / "z.zarr" / "images") == sorted(f"c.{i}.0.0.0" for i in range(9))
    assert not any(p.is_dir() for p in (tmp_path / "z.zarr" / "images").iterdir())
    assert _chunk_files(tmp_path / "z.zarr" / "obs" / "moa") == ["c.0"]
    np.testing.assert_array_equal(read_cells(tmp_path / "z.zarr")[0].compute(), zeros)


def test_version2_store_with_nested_chunk_folders_reads_the_same(store, tmp_path, monkeypatch):
    """Stores written before format 3 (nested c/<i>/0/0/0 chunk folders, all-zero chunks left out) still read."""
    import zarr

    from cellkit.io import cells

    path, images, masks, obs = store
    zeros = images.copy()
    zeros[8:16] = 0
    monkeypatch.setattr(cells, "CHUNK_KEYS", {"name": "default", "separator": "/"})
    monkeypatch.setattr(cells, "WRITE_CONFIG", {"write_empty_chunks": False})
    monkeypatch.setattr(cells, "FORMAT_VERSION", 2)
    write_cells(tmp_path / "v2.zarr", zeros, masks, obs, channels=["DNA", "Tubulin", "Actin"], chunk_cells=8,
                block_cells=32)
    monkeypatch.undo()
    assert zarr.open_group(str(tmp_path / "v2.zarr"), mode="r").attrs["format_version"] == 2
    files = _chunk_files(tmp_path / "v2.zarr" / "images")
    assert "c/0/0/0/0" in files and "c/1/0/0/0" not in files and len(files) == 8  # the all-zero chunk is absent
    lazy_images, lazy_masks, read = read_cells(tmp_path / "v2.zarr")
    np.testing.assert_array_equal(lazy_images.compute(), zeros)
    np.testing.assert_array_equal(lazy_masks.compute(), masks)
    assert list(read.index) == list(obs.cell_id) and list(read.moa) == list(obs.moa)
    item = CellDataset(tmp_path / "v2.zarr", target="moa", masks=True).__getitems__([9, 69])
    np.testing.assert_array_equal(item[0]["image"].numpy(), np.zeros((3, 16, 16), np.float32))
    assert item[1]["index"] == 69


@pytest.mark.parametrize("separator", [".", "/"])
def test_chunk_writer_writes_the_files_zarr_writes(store, tmp_path, separator):
    """`_chunk_files.chunk_writer` (extraction's block writes) stores byte-identical files to Zarr's setitem: uint16
    blosc images, bool masks, an all-zero chunk, the partial last chunk (padded), a zstd flag array, nested keys."""
    import zarr

    from cellkit.io import cells
    from cellkit.io._chunk_files import chunk_writer

    path, images, masks, obs = store
    zeros = images.copy()
    zeros[8:16] = 0
    keys = {"name": "default", "separator": separator}
    roots = {}
    for how in ("zarr", "direct"):
        root = create_cells_store(tmp_path / f"{how}.zarr", len(images), ["DNA", "Tubulin", "Actin"], 16,
                                  chunk_cells=8, block_cells=32)
        for name in ("images", "masks"):  # the layout of format 3 (or of format 2 with "/")
            assert root[name].metadata.chunk_key_encoding.separator == "."
        roots[how] = root
        root.create_array("done", shape=(3,), chunks=(1,), dtype=bool, fill_value=False, chunk_key_encoding=keys)
        if separator == "/":
            for name, data in (("images", zeros), ("masks", masks)):
                old = root[name]
                root.create_array(name, shape=old.shape, dtype=old.dtype, chunks=old.chunks,
                                  compressors=old.compressors, fill_value=old.fill_value, chunk_key_encoding=keys,
                                  overwrite=True)
        for start, stop in cells.block_bounds(len(images), 32):
            for name, data in (("images", zeros), ("masks", masks), ("done", None)):
                array = root[name]
                rows, at = (data[start:stop], start) if data is not None else (np.ones(1, bool), start // 32)
                if how == "zarr":
                    array.with_config(cells.WRITE_CONFIG)[at:at + len(rows)] = rows
                else:
                    chunk_writer(array)(at, rows)
    files = {how: sorted(p.relative_to(tmp_path / f"{how}.zarr") for p in (tmp_path / f"{how}.zarr").rglob("*")
                         if p.is_file()) for how in roots}
    assert files["zarr"] == files["direct"] and len(files["zarr"]) > 20
    for name in files["zarr"]:
        assert (tmp_path / "zarr.zarr" / name).read_bytes() == (tmp_path / "direct.zarr" / name).read_bytes(), name
    np.testing.assert_array_equal(roots["direct"]["images"][:], zeros)
    np.testing.assert_array_equal(roots["direct"]["masks"][:], masks)
    writer = chunk_writer(roots["direct"]["images"])
    with pytest.raises(ValueError, match="whole chunks"):
        writer(4, zeros[4:12])
    with pytest.raises(ValueError, match="inside a chunk"):
        writer(0, zeros[:12])


def test_chunk_writer_leaves_sharded_arrays_to_zarr(tmp_path):
    from cellkit.io._chunk_files import chunk_writer

    root = create_cells_store(tmp_path / "s.zarr", 64, ["DNA"], 8, chunk_cells=8, block_cells=32, sharded=True)
    assert chunk_writer(root["images"]) is None
    root = create_cells_store(tmp_path / "p.zarr", 64, ["DNA"], 8, chunk_cells=8, block_cells=32)
    assert chunk_writer(root["images"]) is not None


def test_skeleton_built_in_memory_has_the_files_zarr_writes_on_disk(store, tmp_path):
    """`create_skeleton` builds the store in a MemoryStore and writes its files: the same files, byte for byte, as
    Zarr creating it on disk (arrays, obs with a missing string, progress flags, attributes)."""
    from cellkit.extract.store import create_skeleton
    from cellkit.io import cells

    path, images, masks, obs = store
    obs = obs.assign(compound=[None if k % 7 == 0 else f"c{k % 3}" for k in range(len(obs))],
                     dose=np.linspace(0, 1, len(obs)), edge=np.arange(len(obs)) % 2 == 0)
    attrs = {"extract": {"fingerprint": "abc", "objects": 70}}
    create_skeleton(tmp_path / "memory.zarr", obs, ["DNA", "Tubulin", "Actin"], 16, 8, 32, False, attrs)
    root = cells.create_cells_store(tmp_path / "disk.zarr", len(obs), ["DNA", "Tubulin", "Actin"], 16, chunk_cells=8,
                                    block_cells=32, attrs=attrs)
    cells.write_obs(root, obs)
    root.require_group("progress").create_array("done", shape=(3,), chunks=(1,), dtype=bool, fill_value=False,
                                                chunk_key_encoding=cells.CHUNK_KEYS)
    files = {how: sorted(p.relative_to(tmp_path / how) for p in (tmp_path / how).rglob("*") if p.is_file())
             for how in ("memory.zarr", "disk.zarr")}
    assert files["memory.zarr"] == files["disk.zarr"] and "obs/compound__missing/c.0" in map(str, files["disk.zarr"])
    for name in files["disk.zarr"]:
        assert (tmp_path / "memory.zarr" / name).read_bytes() == (tmp_path / "disk.zarr" / name).read_bytes(), name
    read = cells.read_obs(cells.open_cells(tmp_path / "memory.zarr", require_complete=False))
    assert read.compound.isna().sum() == 10 and list(read.cell_id) == list(obs.cell_id)


def test_incomplete_store_refused(tmp_path):
    root = create_cells_store(tmp_path / "c.zarr", 4, ["DNA"], 8)
    write_obs(root, pd.DataFrame({"cell_id": list("abcd")}))
    with pytest.raises(IncompleteStoreError, match="incomplete.*again"):
        read_cells(tmp_path / "c.zarr")
    with pytest.raises(IncompleteStoreError):
        CellDataset(tmp_path / "c.zarr")


def test_dataset_random_access_and_dataloader(store):
    path, images, masks, obs = store
    dataset = CellDataset(path, target="moa", masks=True)
    assert len(dataset) == 70 and dataset.target_names == ["a", "b", "c"]
    item = dataset[41]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 16, 16)
    np.testing.assert_allclose(item["image"].numpy() * 65535, images[41], atol=0.01)
    assert item["target"] == 41 % 3 and item["index"] == 41
    np.testing.assert_array_equal(item["mask"].numpy(), masks[41])
    # unsorted batched access keeps the order asked for
    batch = dataset.__getitems__([50, 2, 33, 2])
    assert [b["index"] for b in batch] == [50, 2, 33, 2]
    np.testing.assert_allclose(batch[0]["image"].numpy() * 65535, images[50], atol=0.01)
    subset = CellDataset(path, indices=np.arange(10, 70))
    loader = torch.utils.data.DataLoader(subset, batch_size=8, shuffle=True, num_workers=2,
                                         generator=torch.Generator().manual_seed(0))
    seen = []
    for batch in loader:
        for row, image in zip(batch["index"].tolist(), batch["image"]):
            np.testing.assert_allclose(image.numpy() * 65535, images[row], atol=0.01)
            seen.append(row)
    assert sorted(seen) == list(range(10, 70))


def test_montage(store):
    path, images, _, _ = store
    sheet = montage_rgb(images[:10], ["DNA", "Tubulin", "Actin"], ncols=4, gap=2)
    assert sheet.shape == (3 * 18, 4 * 18, 3) and 0 <= sheet.min() and sheet.max() <= 1 and sheet.max() > 0.5
    fig = cell_montage(path, n=5, groupby="moa", outlines=True)
    image = fig.axes[0].images[0].get_array()
    assert image.shape[:2] == (3 * 18, 5 * 18)  # one row per MOA, 5 cells each
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a", "b", "c"]


def test_write_obs_accepts_categoricals(tmp_path):
    """obs read back from an h5ad has categorical columns; the store keeps their values."""
    obs = pd.DataFrame({"cell_id": ["a", "b"], "moa": pd.Categorical(["x", None]), "dose": pd.Categorical([1.0, 2.0])})
    write_cells(tmp_path / "c.zarr", np.zeros((2, 1, 4, 4), np.uint16), np.zeros((2, 2, 4, 4), bool), obs,
                channels=["DNA"])
    back = read_cells(tmp_path / "c.zarr")[2]
    assert list(back["moa"]) == ["x", None] and list(back["dose"]) == [1.0, 2.0]


def test_example_cells_share_one_scale_per_channel_with_key_and_scale_bar(tmp_path):
    import matplotlib.pyplot as plt

    import cellkit as ck

    # two groups of cells, uniform crops: group "dim" at 1000 counts, "bright" at 4000 (DNA only)
    images = np.zeros((8, 2, 16, 16), np.uint16)
    images[:4, 0], images[4:, 0] = 1000, 4000
    images[:, 1] = np.random.default_rng(0).integers(0, 100, (8, 16, 16))
    obs = pd.DataFrame({"cell_id": [f"c{i}" for i in range(8)], "moa": ["dim"] * 4 + ["bright"] * 4})
    store = write_cells(tmp_path / "cells.zarr", images, np.ones((8, 2, 16, 16), bool), obs, channels=["DNA", "Actin"])
    fig = ck.pl.example_cells(store, groupby="moa", n_per_group=4)
    sheet = fig.axes[0].images[0].get_array()
    rows = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    blue = {name: sheet[k * 18:k * 18 + 16, :, 2].mean() for k, name in enumerate(rows)}
    assert blue["bright"] > 2 * blue["dim"]  # one scale for all cells: the dim cells stay dim
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["DNA (blue)", "Actin (red)"]
    assert any(t.get_text().endswith(" px") for t in fig.axes[0].texts)  # no pixel size known: bar in pixels
    plt.close(fig)
    fig = ck.pl.example_cells(store, groupby="moa", n_per_group=2, pixel_size=0.65)
    assert any(t.get_text().endswith(" µm") for t in fig.axes[0].texts)
    plt.close(fig)


def test_importing_pl_leaves_the_backend_alone():
    import subprocess
    import sys

    code = "import matplotlib; matplotlib.use('ps'); import cellkit.pl; print(matplotlib.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "ps"
