"""A user's own plate, end to end, on real images (README "Your own plate").

Real fields are cropped (kept in their own dtype and file format) so that each test takes
seconds. The commands are the README's: `test_readme_has_the_commands` checks that they appear
there verbatim.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import tifffile
import zarr
from typer.testing import CliRunner

import cellkit as ck
from cellkit.cli import app
from cellkit.io.images import read_image, to_uint16
from cellkit.io.labels import read_field_labels

from .conftest import real_path

README = Path(__file__).resolve().parents[1] / "README.md"

# The README's commands (run from the folder holding plate/).
HUMAN = [
    "cellkit index plate/ --pattern 'AS_09125_{plate}_{well}f{site}d{channel}.tif' "
    "--channel 0=DNA --channel 1=PH3 --channel 2=Cells --out out/index.parquet",
    "cellkit segment out/index.parquet --out out/labels.zarr --nuclei-channel DNA --cell-channels Cells",
    "cellkit extract out/index.parquet out/labels.zarr --out out/cells.zarr --size 48",
    "cellkit profile out/cells.h5ad --out out/wells.h5ad --preset none",
]
NUCLEI_ONLY = [
    "cellkit index plate/ --pattern '{plate}_{well}_s{site}_w{channel}*.tif' --channel 1=DAPI "
    "--metadata metadata.csv --out out/index.parquet",
    "cellkit segment out/index.parquet --out out/labels.zarr --cell-expand 5",
    "cellkit extract out/index.parquet out/labels.zarr --out out/cells.zarr --size 48",
]
METADATA_CSV = "plate,well,compound,concentration\nWeek1,150607_C02,DMSO,0\n"

runner = CliRunner()


def run(command: str) -> str:
    args = shlex.split(command)
    assert args[0] == "cellkit"
    result = runner.invoke(app, args[1:])
    assert result.exit_code == 0, f"{command}\n{result.output}"
    return result.output


def crop_copy(files: list[Path], folder: Path, box=(slice(0, 256), slice(0, 256)), name=None) -> None:
    """Copy image files cropped to ``box``, same dtype and format (TIFF or PNG)."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        image = read_image(str(f))[box]
        target = folder / (name(f) if name else f.name)
        if f.suffix.lower() == ".png":
            import imageio.v3 as iio

            iio.imwrite(target, image)
        else:
            tifffile.imwrite(target, image)


def test_readme_has_the_commands():
    text = README.read_text()
    for command in HUMAN + NUCLEI_ONLY:
        assert command.replace("' --", "' \\\n    --") in text or command in _joined(text), command


def _joined(text: str) -> str:
    return re.sub(r"\\\n\s+", "", text)


@pytest.fixture(scope="module")
def human(tmp_path_factory):
    """ExampleHuman (HT29, uint8, channels DNA/PH3/Cells, no metadata) through index, segment, extract."""
    src = real_path("cellprofiler_examples", "ExampleHuman")
    work = tmp_path_factory.mktemp("human")
    crop_copy(sorted(src.glob("*.tif")), work / "plate")
    import os

    cwd = os.getcwd()
    os.chdir(work)
    try:
        outputs = [run(c) for c in HUMAN]
    finally:
        os.chdir(cwd)
    return work, outputs


def test_human_index_segment(human):
    work, outputs = human
    index = ck.io.read_index(work / "out/index.parquet", check_files=True)
    assert ck.io.channels_of(index) == ["DNA", "PH3", "Cells"] and len(index) == 1
    assert index.compound.isna().all() and index.concentration.isna().all() and index.moa.isna().all()
    attrs = zarr.open_group(str(work / "out/labels.zarr"), mode="r").attrs["segmentation"]
    assert attrs["nuclear_channel"] == "DNA" and attrs["cytoplasm_channels"] == ["Cells"]
    assert attrs["cells_from"] == "propagation over Cells"
    nuclei, cells = read_field_labels(work / "out/labels.zarr", index.field_id[0])
    assert 40 < nuclei.max() < 200  # HT29 nuclei in a quarter of the field
    assert ((nuclei > 0) <= (cells > 0)).all()


def test_human_extract_features_scale(human):
    work, outputs = human
    cells = ad.read_h5ad(work / "out/cells.h5ad")
    obs = cells.obs
    # no metadata: categorical columns with missing values, written and read back
    assert obs.compound.isna().all() and obs.moa.isna().all() and isinstance(obs.moa.dtype, pd.CategoricalDtype)
    # border: cells touching the image edge dropped and counted, the others kept with padded crops
    info = cells.uns["cellkit"]
    assert info["dropped"]["touching_edge"] > 0 and info["dropped"]["crop_outside_field"] == 0
    assert info["objects"] == cells.n_obs + info["dropped"]["touching_edge"]
    assert 0 < obs.crop_padded.sum() < cells.n_obs
    assert "9 touching the image edge" in " ".join(outputs[2].split())
    # uint8 -> crops x 257; intensities on CellProfiler's scale, value / 255
    index = ck.io.read_index(work / "out/index.parquet")
    field = ck.io.read_field(index.iloc[0])
    assert field.dtype == np.uint8
    images, masks, cobs = ck.io.read_cells(work / "out/cells.zarr")
    k = int(np.flatnonzero(~cobs.crop_padded.to_numpy())[0])
    y0, x0 = (np.floor(cobs.iloc[k][["centroid_y", "centroid_x"]].to_numpy(float) + 0.5).astype(int) - 24)
    np.testing.assert_array_equal(images[k].compute(), field[:, y0:y0 + 48, x0:x0 + 48].astype(np.uint16) * 257)
    nuclei, _ = read_field_labels(work / "out/labels.zarr", index.field_id[0])
    label = int(cobs.label.iloc[k])
    expected = field[0][nuclei == label].max() / 255
    assert cells[cobs.index[k]].X[0, list(cells.var_names).index("Nuclei_Intensity_MaxIntensity_DNA")] == \
        pytest.approx(expected, rel=1e-6)
    # profile without compounds: one well
    wells = ad.read_h5ad(work / "out/wells.h5ad")
    assert wells.n_obs == 1 and wells.obs.n_cells.iloc[0] == cells.n_obs


def test_nuclei_only_bbbc021_dapi(tmp_path, monkeypatch):
    """One DAPI channel, uint16, metadata joined from a CSV; cells = nuclei grown by 5 px."""
    src = real_path("bbbc021_images")
    crop_copy(sorted(src.glob("*.tif")), tmp_path / "plate", box=(slice(0, 256), slice(0, 320)),
              name=lambda f: f.name.replace("Week1_150607", "Week1_150607"))
    (tmp_path / "metadata.csv").write_text(METADATA_CSV)
    monkeypatch.chdir(tmp_path)
    for command in NUCLEI_ONLY:
        run(command)
    index = ck.io.read_index("out/index.parquet")
    assert index.compound.tolist() == ["DMSO"] and index.concentration.tolist() == [0.0]
    root = zarr.open_group("out/labels.zarr", mode="r")
    seg = root.attrs["segmentation"]
    assert seg["nuclear_channel"] == "DAPI" and seg["cytoplasm_channels"] == [] and seg["cell_expand"] == 5
    nuclei, cells = read_field_labels("out/labels.zarr", index.field_id[0])
    assert nuclei.max() > 8 and (cells > 0).sum() > 1.5 * (nuclei > 0).sum()
    adata = ad.read_h5ad("out/cells.h5ad")
    assert adata.uns["cellkit"]["segmentation"]["cells_from"] == "nuclei expanded by 5 px"
    cyto = [v for v in adata.var_names if v.startswith("Cytoplasm_Intensity_MeanIntensity")]
    assert cyto and np.isfinite(adata[:, cyto].X).mean() > 0.95
    assert set(adata.obs.compound) == {"DMSO"}


def test_nuclei_only_bbbc006_png(tmp_path):
    """16-bit PNG Hoechst fields (12-bit data), one channel named as the user likes; cells = nuclei."""
    src = real_path("bbbc006", "w1_z10")
    crop_copy(sorted(src.glob("*.png"))[:2], tmp_path / "plate", box=(slice(None), slice(None)))  # whole fields
    out = tmp_path / "out"
    run(f"cellkit index {tmp_path / 'plate'} --pattern 'BBBC006_z_aligned__{{well}}__s{{site}}__w{{channel}}_10.png' "
        f"--channel 1=Hoechst --out {out / 'index.parquet'}")
    run(f"cellkit segment {out / 'index.parquet'} --out {out / 'labels.zarr'}")
    run(f"cellkit extract {out / 'index.parquet'} {out / 'labels.zarr'} --out {out / 'cells.zarr'} --no-features")
    index = ck.io.read_index(out / "index.parquet")
    assert index.plate.tolist() == ["plate", "plate"]  # no {plate} in the pattern: the folder's name
    for field_id in index.field_id:
        nuclei, cells = read_field_labels(out / "labels.zarr", field_id)
        assert nuclei.max() >= 3 and (nuclei == cells).all()
    images, masks, obs = ck.io.read_cells(out / "cells.zarr")
    assert len(obs) > 5 and int(images.max().compute()) < 4096  # 12-bit counts kept as they are


def test_moved_output_folder(tmp_path, monkeypatch):
    """Images inside the output folder: the folder moves and is read from another directory."""
    src = real_path("cellprofiler_examples", "ExampleHuman")
    crop_copy(sorted(src.glob("*.tif")), tmp_path / "run" / "images", box=(slice(0, 160), slice(0, 160)))
    monkeypatch.chdir(tmp_path / "run")
    run("cellkit index images --pattern 'AS_09125_{plate}_{well}f{site}d{channel}.tif' --channel 0=DNA "
        "--channel 2=Cells --out index.parquet")
    run("cellkit segment index.parquet --out labels.zarr")
    run("cellkit extract index.parquet labels.zarr --out cells.zarr --size 32")
    stored = pq.read_table("index.parquet").column("path_DNA").to_pylist()
    assert stored == ["images/AS_09125_050116030001_D03f00d0.tif"]
    shutil.move(str(tmp_path / "run"), str(tmp_path / "moved"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    index = ck.io.read_index(tmp_path / "moved" / "index.parquet", check_files=True)
    assert Path(index.path_DNA[0]).is_file()
    run(f"cellkit extract {tmp_path / 'moved/index.parquet'} {tmp_path / 'moved/labels.zarr'} "
        f"--out {tmp_path / 'moved/crops.zarr'} --no-features --size 32")
    assert len(ck.io.read_cells(tmp_path / "moved/crops.zarr")[2]) > 5
    # the moved cells.h5ad / cells.zarr open and profile from here
    run("cellkit profile ../moved/cells.h5ad --out wells.h5ad --preset none")
    assert len(ck.io.read_cells("../moved/cells.zarr")[2]) == ad.read_h5ad("../moved/cells.h5ad").n_obs


def test_index_metadata_optional_and_joined(tmp_path):
    """A generic CSV without concentration (used to crash), a metadata join by plate/well, bad joins."""
    images = tmp_path / "img"
    images.mkdir()
    for well in ("A01", "A02"):
        tifffile.imwrite(images / f"{well}.tif", np.zeros((32, 32), np.uint16))
    pd.DataFrame({"plate": ["0042", "0042"], "well": ["A01", "A02"],
                  "file": ["A01.tif", "A02.tif"]}).to_csv(tmp_path / "fields.csv", index=False)
    index = ck.io.from_csv(tmp_path / "fields.csv", root=images, channels={"Hoechst": "file"})
    assert index.concentration.isna().all() and index.compound.isna().all()
    (tmp_path / "meta.csv").write_text("plate,well,compound,concentration,moa\n0042,A01,taxol,0.3,MT\n")
    out = tmp_path / "index.parquet"
    run(f"cellkit index {tmp_path / 'fields.csv'} --root {images} --channel Hoechst=file "
        f"--metadata {tmp_path / 'meta.csv'} --out {out}")
    index = ck.io.read_index(out)
    assert index.plate.tolist() == ["0042", "0042"]  # leading zeros kept
    assert index.compound.tolist() == ["taxol", None] and index.concentration.iloc[0] == 0.3
    assert index.moa.tolist() == ["MT", None]
    (tmp_path / "bad.csv").write_text("plate,well,compound\n0042,A01,x\n0042,A01,y\n")
    result = runner.invoke(app, ["index", str(tmp_path / "fields.csv"), "--root", str(images), "--channel",
                                 "Hoechst=file", "--metadata", str(tmp_path / "bad.csv"), "--out", str(out)])
    assert result.exit_code == 1 and "more than once" in result.output


def test_channel_roles_errors(tmp_path):
    from cellkit.segment.backends import resolve_roles

    assert resolve_roles(["w1"]) == ("w1", ())
    assert resolve_roles(["DNA", "Tubulin", "Actin"]) == ("DNA", ("Actin", "Tubulin"))
    assert resolve_roles(["Hoechst", "ER", "Mito"]) == ("Hoechst", ())
    assert resolve_roles(["a", "b"], "a", ["b"]) == ("a", ("b",))
    with pytest.raises(ValueError, match="--nuclei-channel"):
        resolve_roles(["ch1", "ch2"])
    with pytest.raises(ValueError, match="not among"):
        resolve_roles(["DNA", "x"], "DNA", ["Actin"])
    seg = ck.segment.get_segmenter("classical", cell_expand=3)
    with pytest.raises(ValueError, match="cell_expand"):
        seg.with_roles(["DNA", "Actin"])


def test_to_uint16_rule():
    counts, scale = to_uint16(np.array([[0, 255]], np.uint8))
    assert counts.dtype == np.uint16 and counts.tolist() == [[0, 65535]] and scale == 257
    assert to_uint16(np.array([[0.0, 0.5, 1.0]], np.float32))[0].tolist() == [[0, 32768, 65535]]
    assert to_uint16(np.array([[0.0, 4095.0]]))[0].tolist() == [[0, 4095]]  # float counts
    assert to_uint16(np.array([[7, 4095]], np.uint16))[1] == 1.0  # 12-bit kept
    for bad, message in [(np.array([[np.nan, 1.0]]), "NaN"), (np.array([[-1.0, 2.0]]), "rescale"),
                         (np.array([[0, 70000]], np.int32), "rescale"), (np.ones((2, 2), bool), "unsupported")]:
        with pytest.raises(ValueError, match=message):
            to_uint16(bad)
    from cellkit.features._objects import cellprofiler_scale

    assert cellprofiler_scale(np.array([255], np.uint8))[0] == 1.0
    assert cellprofiler_scale(np.array([0.25], np.float32))[0] == 0.25
    assert cellprofiler_scale(np.array([65535], np.uint16))[0] == 1.0


def test_dim_cells_keep_their_cytoplasm():
    """Per-cell thresholds (default) give a dim cell its cytoplasm; one field threshold ('global') does not."""
    from dataclasses import replace

    from cellkit.segment import ClassicalParams
    from cellkit.segment.classical import segment_cells

    yy, xx = np.mgrid[:160, :200]
    nuclei = np.zeros((160, 200), np.uint32)
    cyto = np.random.default_rng(0).normal(100, 3, (160, 200))
    for label, (cy, cx, level) in enumerate([(50, 50, 4000), (110, 150, 400)], start=1):
        d = np.hypot(yy - cy, xx - cx)
        nuclei[d < 8] = label
        cyto[d < 22] += level  # cell of radius 22 px around a nucleus of radius 8
    areas = {}
    for method in ("local", "global"):
        cells = segment_cells(nuclei, [cyto], replace(ClassicalParams(), propagation=method))
        areas[method] = np.bincount(cells.ravel(), minlength=3)[1:]
    true = np.pi * 22 ** 2
    assert abs(areas["local"][1] - true) < 0.15 * true and abs(areas["local"][0] - true) < 0.15 * true
    assert areas["global"][1] < 1.2 * np.pi * 8 ** 2 + 60  # the dim cell shrinks to about its nucleus


def test_progress_and_pipeline_roles(tmp_path, monkeypatch):
    """progress= callable / 'tqdm' in the API; channel roles as pipeline YAML keys."""
    from cellkit.workflows.pipeline import run_pipeline

    src = real_path("cellprofiler_examples", "ExampleHuman")
    crop_copy(sorted(src.glob("*.tif")), tmp_path / "images", box=(slice(0, 160), slice(0, 160)))
    index = ck.io.from_pattern(tmp_path / "images", "AS_09125_{plate}_{well}f{site}d{channel}.tif",
                               channels={"0": "Hoechst", "2": "Body"})
    ck.io.write_index(index, tmp_path / "index.parquet")
    calls = []
    seg = ck.segment.get_segmenter("classical", nuclear_channel="Hoechst", cytoplasm_channels=("Body",))
    ck.segment.segment_plate(index, tmp_path / "l.zarr", seg, progress=lambda n, t: calls.append((n, t)))
    assert calls[0] == (0, 1) and calls[-1] == (1, 1)
    ck.extract.extract_cells(index, tmp_path / "l.zarr", tmp_path / "c.zarr", size=32, progress="tqdm")
    spec = {"input": {"index": {"path": str(tmp_path / "index.parquet")}}, "output": str(tmp_path / "run"),
            "stages": [{"segment": {"nuclei_channel": "Hoechst", "cell_channels": "none", "cell_expand": 4}},
                       {"extract": {"size": 32, "features": False}}]}
    run_pipeline(spec)
    attrs = zarr.open_group(str(tmp_path / "run" / "labels.zarr"), mode="r").attrs["segmentation"]
    assert attrs["nuclear_channel"] == "Hoechst" and attrs["cells_from"] == "nuclei expanded by 4 px"
    assert len(ck.io.read_cells(tmp_path / "run" / "cells.zarr")[2]) > 5


def test_evaluate_without_labels_says_what_is_missing(human):
    work, _ = human
    result = runner.invoke(app, ["evaluate", str(work / "out/wells.h5ad"), "--out-dir", str(work / "ev")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert "'moa'" in text and "--metadata" in text


def test_pipeline_warnings_go_to_the_log(tmp_path):
    import warnings

    from cellkit.workflows.pipeline import run_pipeline
    from cellkit.workflows.stages import register_stage

    @register_stage("warn_test", outputs=["warned.txt"])
    def _warn(ctx):
        for k in range(5):
            warnings.warn(f"feature {k} has zero spread", RuntimeWarning)
        warnings.warn("a library detail", UserWarning)
        (ctx.out / "warned.txt").write_text("ok")

    src = real_path("cellprofiler_examples", "ExampleHuman")
    crop_copy(sorted(src.glob("*d0.tif")), tmp_path / "images", box=(slice(0, 64), slice(0, 64)))
    index = ck.io.from_pattern(tmp_path / "images", "AS_09125_{plate}_{well}f{site}d{channel}.tif", channels={"0": "DNA"})
    ck.io.write_index(index, tmp_path / "index.parquet")
    import logging

    screen = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: screen.append(record.getMessage())
    logger = logging.getLogger("cellkit")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        run_pipeline({"input": {"index": {"path": str(tmp_path / "index.parquet")}}, "output": str(tmp_path / "run"),
                      "stages": ["warn_test"]})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    said = [m for m in screen if "warning(s)" in m]
    assert said == ["warn_test: 6 warning(s) (5 RuntimeWarning, 1 UserWarning) written to pipeline.log"]
    log = (tmp_path / "run" / "pipeline.log").read_text()
    assert log.count("warn_test: warning RuntimeWarning: feature") == 5 and "a library detail" in log
