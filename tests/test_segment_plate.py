import numpy as np
import pandas as pd
import tifffile
import zarr
from typer.testing import CliRunner

from cellkit.cli import app
from cellkit.datasets import synthetic_index
from cellkit.datasets.synthetic import ground_truth_paths
from cellkit.io import write_index
from cellkit.io.labels import field_complete, read_field_labels
from cellkit.segment import get_segmenter, qc_path, score_images, segment_plate

runner = CliRunner()


def _subset(small_plate, n=5):
    return synthetic_index(small_plate).head(n).reset_index(drop=True)


def test_plate_run_accuracy_resume_and_workers(small_plate, tmp_path):
    index = _subset(small_plate)
    seg = get_segmenter("classical")
    out = tmp_path / "labels.zarr"
    qc = segment_plate(index, out, seg)
    assert (qc.status == "ok").all() and (qc.n_cells > 0).all() and (qc.n_nuclei == qc.n_cells).all()
    assert qc_path(out).exists() and len(pd.read_csv(qc_path(out))) == len(index)
    root = zarr.open_group(str(out), mode="r")
    assert root.attrs["segmentation"]["backend"] == "classical" and "versions" in root.attrs
    pairs_n, pairs_c = [], []
    for row in index.itertuples():
        nuclei, cells = read_field_labels(out, row.field_id)
        gt = ground_truth_paths(small_plate, row.plate, row.well, row.site)
        pairs_n.append((tifffile.imread(gt["nuclei"]), nuclei))
        pairs_c.append((tifffile.imread(gt["cells"]), cells))
        attrs = zarr.open_group(str(out / row.field_id), mode="r").attrs
        assert attrs["n_cells"] == qc.set_index("field_id").loc[row.field_id, "n_cells"]
        assert "border_labels" in attrs
    assert score_images(pairs_n)["pooled"]["ap@0.5"] >= 0.93
    assert score_images(pairs_c)["pooled"]["ap@0.5"] >= 0.88

    # resume: a half-written field is redone, complete ones are skipped
    half = index.field_id[2]
    zarr.open_group(str(out / half), mode="r+").attrs["complete"] = False
    before = read_field_labels(out, index.field_id[0])[1]
    qc2 = segment_plate(index, out, seg)
    redone = qc2.set_index("field_id")
    assert redone.loc[half, "notes"].find("done earlier") < 0 and redone.loc[half, "seconds"] > 0
    assert all("done earlier" in redone.loc[f, "notes"] for f in index.field_id if f != half)
    assert field_complete(out, half)
    np.testing.assert_array_equal(read_field_labels(out, index.field_id[0])[1], before)

    # same labels with two dask workers
    out2 = tmp_path / "labels2.zarr"
    qc3 = segment_plate(index, out2, seg, workers=2)
    assert list(qc3.field_id) == list(index.field_id)
    for f in index.field_id:
        for a, b in zip(read_field_labels(out, f), read_field_labels(out2, f)):
            np.testing.assert_array_equal(a, b)


def test_cli_segment_reports_corrupt_field(small_plate, tmp_path):
    index = _subset(small_plate, 3)
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(b"II*\x00 this is not a TIFF")
    index.loc[1, "path_Actin"] = str(bad)
    write_index(index, tmp_path / "index.parquet")
    out = tmp_path / "labels.zarr"
    result = runner.invoke(app, ["segment", str(tmp_path / "index.parquet"), "--out", str(out), "--backend", "classical"])
    assert result.exit_code == 1, result.output
    assert "1 of 3 fields failed" in result.output and "Traceback" not in result.output
    qc = pd.read_csv(qc_path(out)).set_index("field_id")
    assert qc.loc[index.field_id[1], "status"] == "failed"
    assert qc.loc[index.field_id[1], "error"].startswith("ImageReadError") and "corrupt.tif" in qc.loc[index.field_id[1], "error"]
    assert field_complete(out, index.field_id[0]) and field_complete(out, index.field_id[2])
    assert not field_complete(out, index.field_id[1])
    # the cellpose backend without weights: a clear error naming the way out
    result = runner.invoke(app, ["segment", str(tmp_path / "index.parquet"), "--out", str(tmp_path / "l.zarr"),
                                 "--backend", "cellpose"], env={"CELLPOSE_LOCAL_MODELS_PATH": str(tmp_path / "none")})
    assert result.exit_code == 1 and "--backend classical" in result.output.replace("\n", " ")


def test_batched_tasks_isolate_a_bad_field(small_plate, tmp_path):
    index = _subset(small_plate, 4)
    bool_tif = tmp_path / "complex.tif"
    tifffile.imwrite(bool_tif, np.ones((256, 320), np.complex64))  # wrong dtype for an image
    index.loc[0, "path_DNA"] = str(bool_tif)
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(open(index.loc[3, "path_Tubulin"], "rb").read()[:2000])
    index.loc[3, "path_Tubulin"] = str(truncated)
    qc = segment_plate(index, tmp_path / "labels.zarr", get_segmenter("classical"), fields_per_task=4)
    qc = qc.set_index("field_id")
    assert list(qc.status) == ["failed", "ok", "ok", "failed"]
    assert "dtype complex64" in qc.error.iloc[0] and qc.error.iloc[3].startswith("ImageReadError")
    assert (qc.n_cells.iloc[1:3] > 0).all()
