"""OME-Zarr HCS in and out: convert a TIFF plate, index and read it back, export labels, read with ome-zarr-py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import zarr
from typer.testing import CliRunner

from cellkit.cli import app
from cellkit.datasets import SyntheticConfig, synthetic_index, write_synthetic_plate
from cellkit.io import PlateIndexError, read_field, read_image, read_index, write_index
from cellkit.io.labels import read_field_labels
from cellkit.io.omezarr import plane_shape
from cellkit.io.omezarr_index import from_omezarr
from cellkit.io.omezarr_write import split_well, write_plate

# 2 plates x 2 wells x 2 sites, 96 x 128 px: small enough for a few seconds per test.
TINY = SyntheticConfig(n_batches=1, plates_per_batch=2, compounds_per_moa=1, n_moas=1, n_concentrations=1,
                       dmso_wells=1, sites=2, height=96, width=128, seed=11)
runner = CliRunner()


def _measure(images, nuclei, cells, channels):
    """Shape and intensity features only: enough to compare two runs, quick to compute."""
    from cellkit.features import measure_field

    return measure_field(images, nuclei, cells, channels, groups=("AreaShape", "Intensity"))


def _meta(index: pd.DataFrame) -> pd.DataFrame:
    return index.drop(columns=[c for c in index.columns if c.startswith("path_")])


@pytest.fixture(scope="module")
def tiff_run(tmp_path_factory):
    """A tiny TIFF plate set, its index, and its classical segmentation (labels.zarr)."""
    from cellkit.segment import get_segmenter, segment_plate

    root = tmp_path_factory.mktemp("omezarr")
    write_synthetic_plate(root / "plates", TINY)
    index = synthetic_index(root / "plates")
    write_index(index, root / "index.parquet")
    segment_plate(index, root / "labels.zarr", get_segmenter("classical"))
    return root, index


@pytest.fixture(scope="module")
def converted(tiff_run):
    root, _ = tiff_run
    result = runner.invoke(app, ["convert", str(root / "index.parquet"), "--out", str(root / "zarr"), "--levels", "1"])
    assert result.exit_code == 0, result.output
    return root / "zarr"


def test_convert_round_trip_pixels_and_metadata(tiff_run, converted):
    _, index = tiff_run
    assert sorted(p.name for p in converted.iterdir()) == ["Week1_10001.ome.zarr", "Week1_10002.ome.zarr"]
    back = from_omezarr(converted)
    pd.testing.assert_frame_equal(_meta(back), _meta(index))
    assert [c for c in back.columns if c.startswith("path_")] == [c for c in index.columns if c.startswith("path_")]
    for tiff_row, zarr_row in zip(index.to_dict("records"), back.to_dict("records")):
        a, b = read_field(tiff_row), read_field(zarr_row)
        assert a.dtype == b.dtype == np.uint16
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(read_field(back.loc[1], ["Actin", "DNA"]), read_field(index.loc[1], ["Actin", "DNA"]))
    np.testing.assert_array_equal(read_image(back.loc[1, "path_Tubulin"]), read_image(index.loc[1, "path_Tubulin"]))
    assert plane_shape(back.loc[0, "path_Actin"]) == (TINY.height, TINY.width)
    # one plate indexes alone; its chunks and pyramid are as asked
    one = from_omezarr(converted / "Week1_10002.ome.zarr")
    assert set(one["plate"]) == {"Week1_10002"} and len(one) == len(index) // 2
    field = zarr.open_group(str(converted / "Week1_10002.ome.zarr" / "B" / "02" / "1"), mode="r")
    assert field["0"].shape == (3, TINY.height, TINY.width) and field["0"].chunks == (1, TINY.height, TINY.width)
    assert field["1"].shape == (3, TINY.height // 2, TINY.width // 2)


def test_ome_zarr_py_reads_converted_plate(converted):
    """ome-zarr-py is napari-ome-zarr's reader; it is not pinned (see README), so checked when present."""
    pytest.importorskip("ome_zarr", reason="ome-zarr-py (napari-ome-zarr's reader) is not installed")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Plate, Reader, Well

    plate = next(iter(Reader(parse_url(str(converted / "Week1_10001.ome.zarr")))()))
    assert plate.load(Plate) is not None
    assert plate.metadata["axes"][0]["name"] == "c"
    assert plate.data[0].shape[0] == 3  # channels of the stitched plate view
    well_path = converted / "Week1_10001.ome.zarr" / "B" / "02"
    well = next(iter(Reader(parse_url(str(well_path)))()))
    assert well.load(Well) is not None
    image = next(iter(Reader(parse_url(str(well_path / "1")))()))
    assert image.load(Multiscales) is not None
    assert image.metadata["channel_names"] == ["DNA", "Tubulin", "Actin"]


def test_converted_plate_segments_to_the_same_labels(tiff_run, converted, tmp_path):
    root, index = tiff_run
    result = runner.invoke(app, ["index", str(converted), "--out", str(tmp_path / "index.parquet")])
    assert result.exit_code == 0, result.output
    zindex = read_index(tmp_path / "index.parquet", check_files=True)
    assert zindex["path_DNA"].str.contains(r"\.ome\.zarr/[A-Z]/\d+/\d+#c=0$").all()
    result = runner.invoke(app, ["segment", str(tmp_path / "index.parquet"), "--out", str(tmp_path / "labels.zarr"),
                                 "--backend", "classical"])  # as the TIFF run (the default is the Cellpose model)
    assert result.exit_code == 0, result.output
    for field_id in index["field_id"]:
        for a, b in zip(read_field_labels(root / "labels.zarr", field_id),
                        read_field_labels(tmp_path / "labels.zarr", field_id)):
            np.testing.assert_array_equal(a, b)
    # ... and extracts to the same cells (crops) and features
    import anndata as ad

    from cellkit.extract import extract_cells
    from cellkit.io import read_cells

    runs = [(root / "index.parquet", root / "labels.zarr", tmp_path / "tiff"),
            (tmp_path / "index.parquet", tmp_path / "labels.zarr", tmp_path / "zarr")]
    for idx, labels, folder in runs:
        extract_cells(read_index(idx), labels, folder / "cells.zarr", size=16, border="pad", measure=_measure)
    a, b = (ad.read_h5ad(folder / "cells.h5ad") for _, _, folder in runs)
    assert a.n_obs > 5 and list(a.obs_names) == list(b.obs_names) and list(a.var_names) == list(b.var_names)
    np.testing.assert_array_equal(a.X, b.X)
    pd.testing.assert_frame_equal(a.obs, b.obs)
    (images_a, masks_a, obs_a), (images_b, masks_b, obs_b) = (read_cells(f / "cells.zarr") for _, _, f in runs)
    np.testing.assert_array_equal(images_a.compute(), images_b.compute())
    np.testing.assert_array_equal(masks_a.compute(), masks_b.compute())
    pd.testing.assert_frame_equal(obs_a, obs_b)


def test_pipeline_reads_an_omezarr_plate(tiff_run, converted, tmp_path):
    from cellkit.workflows.pipeline import run_pipeline

    root, index = tiff_run
    spec = {"name": "omezarr", "output": str(tmp_path / "run"), "input": {"omezarr": {"path": str(converted)}},
            "stages": [{"segment": {"backend": "classical"}}]}
    run_pipeline(spec)
    run_index = read_index(tmp_path / "run" / "index.parquet", check_files=True)
    pd.testing.assert_frame_equal(_meta(run_index), _meta(index))
    for field_id in index["field_id"]:
        for a, b in zip(read_field_labels(root / "labels.zarr", field_id),
                        read_field_labels(tmp_path / "run" / "labels.zarr", field_id)):
            np.testing.assert_array_equal(a, b)


def test_convert_resumes_and_incomplete_plate_is_refused(tiff_run, tmp_path):
    root, index = tiff_run
    out = tmp_path / "zarr"
    write_plate(index, out, levels=0)
    plate = out / "Week1_10001.ome.zarr"
    field = zarr.open_group(str(plate / "B" / "03" / "2"), mode="a")
    field.attrs["cellkit"] = {**field.attrs["cellkit"], "complete": False}  # as if killed while writing
    field["0"][0, :5, :5] = 0
    root_group = zarr.open_group(str(plate), mode="a")
    root_group.attrs["cellkit"] = {**root_group.attrs["cellkit"], "complete": False}
    with pytest.raises(PlateIndexError, match="did not finish"):
        from_omezarr(out)
    summary = write_plate(index, out, levels=0)
    assert summary["written"] == 1  # only the unfinished field
    back = from_omezarr(out)
    row = back[back.field_id == "Week1_10001/B03/2"].iloc[0]
    np.testing.assert_array_equal(read_field(row), read_field(index[index.field_id == row.field_id].iloc[0]))


@pytest.fixture(scope="module")
def exported(tiff_run, tmp_path_factory):
    root, _ = tiff_run
    out = tmp_path_factory.mktemp("export") / "run.zarr"
    args = ["export", str(root / "labels.zarr"), "--format", "ome-zarr", "--index", str(root / "index.parquet"),
            "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    again = runner.invoke(app, args)  # a rerun finds every field complete and writes nothing
    assert again.exit_code == 0 and "0 fields written, 0 with labels" in again.output, again.output
    return out


def _field_path(out, field_id):
    plate, well, site = field_id.split("/")
    row, col = split_well(well)
    return out / f"{plate}.ome.zarr" / row / col / site


def test_export_writes_images_and_ngff_labels(tiff_run, exported):
    import ngio

    root, index = tiff_run
    for row in index.to_dict("records"):
        container = ngio.open_ome_zarr_container(str(_field_path(exported, row["field_id"])), mode="r")
        assert container.channel_labels == ["DNA", "Tubulin", "Actin"]
        np.testing.assert_array_equal(container.get_image().get_as_numpy(), read_field(row))
        assert sorted(container.list_labels()) == ["cells", "nuclei"]
        for name, truth in zip(("nuclei", "cells"), read_field_labels(root / "labels.zarr", row["field_id"])):
            label = container.get_label(name)
            assert label.axes == ("y", "x") and label.dtype == "uint32"
            np.testing.assert_array_equal(label.get_as_numpy(), truth)
    attrs = zarr.open_group(str(_field_path(exported, index.loc[0, "field_id"]) / "labels" / "cells"), mode="r").attrs
    assert "image-label" in attrs["ome"]


def test_ome_zarr_py_reads_export(tiff_run, exported):
    """napari-ome-zarr's reader (ome-zarr-py) finds the images and labels of an exported run."""
    pytest.importorskip("ome_zarr", reason="ome-zarr-py (napari-ome-zarr's reader) is not installed")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Labels, Multiscales, Reader

    root, index = tiff_run
    field_id = index.loc[len(index) - 1, "field_id"]
    image_path = _field_path(exported, field_id)
    nodes = list(Reader(parse_url(str(image_path)))())
    image = nodes[0]  # the image, then the label images it holds
    assert image.load(Multiscales) is not None and image.load(Label) is None
    assert image.metadata["channel_names"] == ["DNA", "Tubulin", "Actin"]
    assert image.data[0].shape == (3, TINY.height, TINY.width)
    np.testing.assert_array_equal(np.asarray(image.data[0]), read_field(index.loc[len(index) - 1]))
    label_nodes = {str(n.zarr.path).rstrip("/").rsplit("/", 1)[-1]: n for n in nodes if n.load(Label) is not None}
    assert sorted(label_nodes) == ["cells", "nuclei"]
    assert next(iter(Reader(parse_url(str(image_path / "labels")))())).load(Labels) is not None
    for name, truth in zip(("nuclei", "cells"), read_field_labels(root / "labels.zarr", field_id)):
        node = label_nodes[name]
        assert node.load(Multiscales) is not None
        assert [a["name"] for a in node.metadata["axes"]] == ["y", "x"]
        assert node.data[0].shape == truth.shape and node.data[0].dtype == np.uint32 and truth.max() > 0
        np.testing.assert_array_equal(np.asarray(node.data[0]), truth)


def test_labels_in_place_into_an_indexed_plate(tiff_run, tmp_path):
    """Segment an OME-Zarr plate read in place, then add the labels to that same plate."""
    import ngio

    from cellkit.segment import get_segmenter, segment_plate

    _, index = tiff_run
    write_plate(index.head(2), tmp_path / "z", levels=0)
    result = runner.invoke(app, ["index", str(tmp_path / "z"), "-o", str(tmp_path / "index.parquet")])
    assert result.exit_code == 0, result.output
    segment_plate(read_index(tmp_path / "index.parquet"), tmp_path / "labels.zarr", get_segmenter("classical"))
    args = ["export", str(tmp_path / "labels.zarr"), "--format", "ome-zarr", "--in-place"]
    for _ in range(2):  # the second run finds every field complete
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    assert "labels written now for 0" in " ".join(result.output.split())
    for field_id, site in zip(index.head(2)["field_id"], ("1", "2")):
        container = ngio.open_ome_zarr_container(str(tmp_path / "z" / "Week1_10001.ome.zarr" / "B" / "02" / site))
        assert sorted(container.list_labels()) == ["cells", "nuclei"]
        np.testing.assert_array_equal(container.get_label("cells").get_as_numpy(),
                                      read_field_labels(tmp_path / "labels.zarr", field_id)[1])
    # a label image cellkit did not write is never replaced
    foreign = tmp_path / "z" / "Week1_10001.ome.zarr" / "B" / "02" / "1" / "labels" / "nuclei"
    attrs = zarr.open_group(str(foreign), mode="a").attrs
    del attrs["cellkit"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "was not written by cellkit" in " ".join(result.output.split())
    result = runner.invoke(app, ["export", str(tmp_path / "labels.zarr"), "--format", "ome-zarr", "--in-place",
                                 "--index", str(tiff_run[0] / "index.parquet")])
    assert result.exit_code == 1 and "only into OME-Zarr plates" in " ".join(result.output.split())


def test_damaged_plate_is_reported(tiff_run, tmp_path):
    from cellkit.io import ImageReadError

    _, index = tiff_run
    write_plate(index.head(2), tmp_path / "z", levels=0)
    back = from_omezarr(tmp_path / "z")
    field = tmp_path / "z" / "Week1_10001.ome.zarr" / "B" / "02"
    chunk = sorted(p for p in (field / "1" / "0").rglob("*") if p.is_file() and p.name != "zarr.json")[0]
    chunk.write_bytes(b"garbage")
    with pytest.raises(ImageReadError, match=r"cannot read image .*B/02/1#c="):
        read_field(back.loc[0])
    import shutil

    shutil.rmtree(field / "2")
    with pytest.raises(PlateIndexError, match="field B/02/2: no OME-Zarr image group"):
        from_omezarr(tmp_path / "z")


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="row letters"):
        split_well("12")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(PlateIndexError, match="no OME-NGFF 'plate' metadata"):
        from_omezarr(tmp_path)
    zarr.open_group(str(tmp_path / "img.zarr"), mode="w", zarr_format=3).attrs["ome"] = {"version": "0.5"}
    result = runner.invoke(app, ["index", str(tmp_path / "img.zarr"), "--out", str(tmp_path / "i.parquet")])
    assert result.exit_code != 0 and "plate" in result.output
